"""One leaderboard: every steering method at equal compute on rare targets whose success is judged by gold.

Compute is counted per output in NFE-equivalents: generator (or sampler-step) evaluations plus 2 × backward
passes (a backward through the generator costs about two forwards), as each method's own meter reports them.
A method gets a per-output budget B from `BUDGETS` (16 … 4,096) and returns `outputs` samples per cell; a cell is
(method, task, budget, seed). A sample counts as a success only by the task's gold rule (for images: every
held-out judge names the target class, the analytic attributes are in range, realism is inside the real-data
band), so a hacked sample is a failure. Cells are appended to `cells.jsonl` as they finish: a killed run resumes.

Reported per method: success rate with its spread over seeds, success against measured compute, the compute
it needs to reach best-of-N@4,096's success (log-linear interpolation between budgets; "not reached" when it
does not), and the diversity of its successful outputs relative to real samples that meet the target.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BUDGETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BACKWARD_COST = 2  # NFE-equivalents per backward pass
REFERENCE = "best_of_n"
SAMPLER_ROWS = 4  # network rows per NFE of the emergent sampler (about 4.2 measured at 8 and 20 steps)


@dataclass
class Task:
    """A target ready to steer: its objective (`reward`, what methods optimize: proxies), its gold `success`
    rule (samples -> (N,) bool), and `features` (samples -> (N, D)) with `real_diversity`, the mean pairwise
    feature distance of real samples that meet the target, for the diversity ratio."""

    name: str
    domain: str
    reward: Any
    success: Callable[[torch.Tensor], torch.Tensor]
    features: Callable[[torch.Tensor], torch.Tensor] | None = None
    real_diversity: float = math.nan
    cond: Any = None


@dataclass
class Entry:
    """A method on the board: `run(generator, task, budget, outputs, seed) -> Result` spends about `budget`
    NFE-equivalents per output; `generator` is the domain's one-step generator or sampler (`kind`)."""

    name: str
    kind: str  # "one_step" | "sampler"
    run: Callable
    min_budget: int = 1
    max_budget: int = 1 << 30
    notes: str = ""


def compute_of(result, outputs: int) -> float:
    """Measured NFE-equivalents per output: (NFE + 2 · backward) / outputs."""
    spent = result.spent
    return (spent["nfe"] + BACKWARD_COST * spent["backward"]) / outputs


def pairwise_mean(features: torch.Tensor) -> float:
    """Mean Euclidean distance over distinct pairs (NaN for fewer than two rows)."""
    if len(features) < 2:
        return math.nan
    d = torch.cdist(features.float(), features.float())
    n = len(features)
    return float(d.sum() / (n * (n - 1)))


def run_cell(entry: Entry, generator, task: Task, budget: int, outputs: int, seed: int) -> dict:
    """One (method, task, budget, seed) cell: the gold successes of its outputs and the compute it measured."""
    start, rows = time.perf_counter(), getattr(generator, "rows", None)
    result = entry.run(generator, task, budget, outputs, seed)
    # a sampler that evaluates its network on several rows per step (the emergent sampler's class mixture) says
    # how many: the record keeps that factor, so compute can also be read in network rows
    rows_per_nfe = (generator.rows - rows) / max(result.spent["nfe"], 1) if rows is not None else 1.0
    samples = result.samples
    ok = task.success(samples).bool()
    feats = task.features(samples[ok]).tolist() if task.features is not None and bool(ok.any()) else []
    return {"method": entry.name, "task": task.name, "domain": task.domain, "budget": budget, "seed": seed,
            "outputs": len(samples), "successes": int(ok.sum()), "compute": compute_of(result, max(len(samples), 1)),
            "rows_per_nfe": round(rows_per_nfe, 3),
            "stopped": result.stopped, "seconds": round(time.perf_counter() - start, 2), "features": feats}


def cell_key(record: dict) -> tuple:
    return record["method"], record["task"], record["budget"], record["seed"]


def run_board(entries: list[Entry], generators: dict[str, Any], tasks: list[Task], budgets, seeds, outputs: int,
              out: str | Path, log: Callable[[str], None] = print, compute: bool = True) -> list[dict]:
    """Every cell not yet in `out/cells.jsonl`, appended as it finishes (none with `compute=False`: the report of
    what is there); returns all records."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cells.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    records, done = [], set()
    for r in lines:  # a cell written twice (two runs on one --out) counts once
        if cell_key(r) not in done:
            done.add(cell_key(r))
            records.append(r)
    # cheapest cells first (a sampler's NFE costs about SAMPLER_ROWS network rows): a run stopped early has every
    # method at the smaller budgets and the one-step methods up to the largest (cells.jsonl resumes it)
    cells = [(budget * (SAMPLER_ROWS if e.kind == "sampler" else 1), budget, seed, ti, ei)
             for budget in budgets for seed in seeds for ti, task in enumerate(tasks) for ei, e in enumerate(entries)
             if compute and e.min_budget <= budget <= e.max_budget and (e.name, task.name, budget, seed) not in done]
    for _, budget, seed, ti, ei in sorted(cells):
        entry, task = entries[ei], tasks[ti]
        rec = run_cell(entry, generators[entry.kind], task, budget, outputs, seed)
        with path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        records.append(rec)
        log(f"{task.name} {entry.name} B={budget} seed={seed}: {rec['successes']}/{rec['outputs']} "
            f"at {rec['compute']:.0f} NFE-eq ({rec['seconds']} s)")
    return records


def summarize(records: list[dict], tasks: list[Task]) -> dict:
    """Per method and budget: success rate (over all outputs), its sd over seeds, measured compute; per method
    the compute to reach best-of-N's success at its largest budget, and the diversity ratio of its successes."""
    real = {t.name: t.real_diversity for t in tasks}
    by_method: dict[str, dict] = {}
    for r in records:
        m = by_method.setdefault(r["method"], {"budgets": {}, "features": {}})
        b = m["budgets"].setdefault(str(r["budget"]), {"successes": 0, "outputs": 0, "compute": [], "rows": [],
                                                          "per_seed": {}})
        b["rows"].append(r["compute"] * r.get("rows_per_nfe", 1.0))
        b["successes"] += r["successes"]
        b["outputs"] += r["outputs"]
        b["compute"].append(r["compute"])
        s = b["per_seed"].setdefault(str(r["seed"]), [0, 0])
        s[0] += r["successes"]
        s[1] += r["outputs"]
        if r["features"]:
            m["features"].setdefault(r["task"], []).extend(r["features"])
    for m in by_method.values():
        for b in m["budgets"].values():
            b["rate"] = b["successes"] / max(b["outputs"], 1)
            rates = [s / max(o, 1) for s, o in b["per_seed"].values()]
            b["sd_over_seeds"] = float(torch.tensor(rates).std()) if len(rates) > 1 else 0.0
            b["compute"] = sum(b["compute"]) / len(b["compute"])
            b["compute_in_rows"] = sum(b["rows"]) / len(b["rows"])
            del b["rows"]
            del b["per_seed"]
        ratios = {task: pairwise_mean(torch.tensor(f)) / real[task] for task, f in m.pop("features").items()
                  if len(f) >= 2 and real.get(task, math.nan) > 0}
        m["diversity_ratio"] = ratios
    target = None
    if REFERENCE in by_method and by_method[REFERENCE]["budgets"]:
        top = max(by_method[REFERENCE]["budgets"], key=int)
        target = {"budget": int(top), "rate": by_method[REFERENCE]["budgets"][top]["rate"]}
        for m in by_method.values():
            m["compute_to_reach_reference"] = compute_to_reach(m["budgets"], target["rate"])
            m["rows_to_reach_reference"] = compute_to_reach(m["budgets"], target["rate"], "compute_in_rows")
    return {"reference": target, "methods": by_method}


def compute_to_reach(budgets: dict, rate: float, key: str = "compute") -> float | None:
    """The measured compute at which the success curve first reaches `rate`, interpolated linearly in
    log-compute between the two budgets that bracket it; None when it never does (or `rate` is 0)."""
    points = sorted((b[key], b["rate"]) for b in budgets.values())
    if rate <= 0:
        return None
    prev = None
    for c, r in points:
        if r >= rate:
            if prev is None or prev[1] >= r or r == rate:
                return c
            (c0, r0) = prev
            w = (rate - r0) / (r - r0)
            return math.exp(math.log(c0) + w * (math.log(c) - math.log(c0)))
        prev = (c, r)
    return None


@dataclass
class BoardConfig:
    budgets: tuple = BUDGETS
    seeds: tuple = (0, 1, 2)
    outputs: int = 8
    methods: tuple | None = None  # None: every entry
    tasks: tuple | None = None  # None: every task of the domain
    extra: dict = field(default_factory=dict)
