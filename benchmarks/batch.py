"""Batch throughput: `rewardsteer batch --workers 2` against sequential single runs in one process.

N small jobs on the bundled models (mnist-onestep, best-of-N over 16 candidates keeping 2, the CNN proxies as the
reward, the three held-out judges and the monitors; 10 classes × N/10 seeds), run three ways, all in one run of
this script and each writing the same files per job (result.json, tensors, grid.png, trace.png):

- `loop (T threads)`: one process calling `rewardsteer run` (rewardsteer.cli.main) once per job, every call
  loading its models as the command does; once with torch's default threads, once with 1 thread;
- `pool`: `rewardsteer batch --workers W` (spawned worker processes, 1 torch thread each, models read once per
  worker), pool start-up included.

The headline ratio is against the faster of the two loops (default threads oversubscribe a busy machine, which
would flatter the pool). Throughput ratios are wall-clock ratios. Every job's samples from the pool are compared
with its single run (the 1-thread loop, so only the process differs): same NFE / backward / reward calls, samples
equal within 1e-5.

Usage: python benchmarks/batch.py [--quick] [--jobs 200] [--workers 2]
       (full: writes benchmarks/results/batch.json and docs/benchmarks/batch.md)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
JOB = {"model": "mnist-onestep", "method": "best_of_n", "candidates": 16, "n": 2, "reward": "proxies", "robust": "none"}


def make_jobs(n: int, candidates: int = JOB["candidates"]) -> list[dict]:
    return [{**JOB, "candidates": candidates, "class": k % 10, "seed": k // 10} for k in range(n)]


def cli_loop(jobs, out: Path, threads: int | None = None) -> float:
    from rewardsteer.cli import main

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        for job in jobs:
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    main(["run", *job.argv(out=out / job.id)])
            except SystemExit as e:
                if e.code not in (0, None):
                    raise RuntimeError(f"rewardsteer run failed for job {job.id} (exit {e.code})") from None
    finally:
        torch.set_num_threads(before)
    return time.perf_counter() - start


def pool(jobs_path: Path, out: Path, workers: int) -> float:
    from rewardsteer.batch import LocalBackend, run_batch

    start = time.perf_counter()
    summary = run_batch(jobs_path, out, LocalBackend(workers, threads=1), progress=False, echo=lambda s: None)
    seconds = time.perf_counter() - start
    if summary.failed or summary.not_run:
        raise RuntimeError(f"pool batch: {len(summary.failed)} failed, {summary.not_run} not run")
    return seconds


def compare(jobs, single: Path, batch: Path) -> dict:
    """Per job: the pool's manifest cost and samples against the single run's."""
    from rewardsteer.batch.manifest import Manifest
    from rewardsteer.safety import load_safetensors

    records = Manifest(batch / "manifest.jsonl").records
    cost_equal = samples_close = 0
    worst = 0.0
    for job in jobs:
        ref = json.loads((single / job.id / "result.json").read_text())["spent"]
        got = records[job.id]["spent"]
        cost_equal += all(ref[k] == got[k] for k in ("nfe", "backward", "reward_calls"))
        a = load_safetensors(single / job.id / "tensors.safetensors")["samples"]
        b = load_safetensors(batch / "jobs" / job.id / "tensors.safetensors")["samples"]
        diff = float((a - b).abs().max())
        worst = max(worst, diff)
        samples_close += diff <= 1e-5
    return {"jobs": len(jobs), "cost_equal": cost_equal, "samples_within_1e-5": samples_close,
            "max_abs_sample_difference": worst}


def run(n_jobs: int, workers: int, work: Path, quick: bool = False) -> dict:
    from rewardsteer.batch import load_jobs

    jobs_path = work / "jobs.jsonl"
    jobs_path.write_text("".join(json.dumps(j) + "\n" for j in make_jobs(n_jobs, 8 if quick else JOB["candidates"])))
    jobs = load_jobs(jobs_path)
    default_threads = torch.get_num_threads()
    seconds = {}
    if not quick:
        seconds["loop_default_threads"] = cli_loop(jobs, work / "loop-default", None)
    seconds["loop_1_thread"] = cli_loop(jobs, work / "loop-1", 1)
    seconds["pool"] = pool(jobs_path, work / "pool", workers)
    match = compare(jobs, work / "loop-1", work / "pool")
    best = min(v for k, v in seconds.items() if k != "pool")
    return {"jobs": n_jobs, "job": JOB, "workers": workers, "threads_default": default_threads,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "jobs_per_second": {k: round(n_jobs / v, 3) for k, v in seconds.items()},
            "ratio_pool_over_fastest_loop": round(best / seconds["pool"], 3),
            "ratios": {k: round(v / seconds["pool"], 3) for k, v in seconds.items() if k != "pool"},
            "match": match, "quick": quick,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                        "torch": torch.__version__, "load_average_at_start": os.getloadavg()}}


def report(result: dict) -> str:
    s, r, m, up = result["seconds"], result["jobs_per_second"], result["match"], result["ratios"]
    rows = [(f"`rewardsteer run` per job, one process, {result['threads_default']} threads (torch's default)",
             "loop_default_threads"),
            ("`rewardsteer run` per job, one process, 1 thread", "loop_1_thread"),
            (f"`rewardsteer batch --workers {result['workers']}` (1 thread each, start-up included)", "pool")]
    table = "\n".join(f"| {how} | {s[key]} | {r[key]} | {f'{up[key]}×' if key in up else '—'} |" for how, key in rows)
    load = ", ".join(f"{x:.2f}" for x in result["machine"]["load_average_at_start"])
    return f"""# Batch throughput

`python benchmarks/batch.py` (one run; {result['machine']['cpus']} CPU cores, load average at start {load}).
{result['jobs']} jobs: `{json.dumps(result['job'])}` over 10 classes × {result['jobs'] // 10} seeds, each writing
result.json, tensors, grid.png and trace.png.

| how | wall seconds | jobs / s | pool's speed-up |
|---|---|---|---|
{table}

**Pool over the faster sequential loop: {result['ratio_pool_over_fastest_loop']}×.**
Pool against the single runs: {m['cost_equal']} of {m['jobs']} jobs with equal NFE, backward passes and reward
calls; {m['samples_within_1e-5']} of {m['jobs']} with samples within 1e-5 (largest difference
{m['max_abs_sample_difference']:.2g}).
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 jobs of 8 candidates, the 1-thread loop only, results to --out only")
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: benchmarks/results/batch.json)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs' folders here (default: a temporary folder)")
    args = ap.parse_args(argv)
    n = 3 if args.quick else args.jobs
    work = args.keep or Path(tempfile.mkdtemp(prefix="rewardsteer-batch-bench-"))
    try:
        result = run(n, args.workers, work, quick=args.quick)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "results" / "batch.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.quick:
        (ROOT / "docs" / "benchmarks" / "batch.md").write_text(report(result))
    print(json.dumps({k: result[k] for k in ("seconds", "ratio_pool_over_fastest_loop", "ratios", "match")}))
    return result


if __name__ == "__main__":
    main()
