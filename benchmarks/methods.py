"""Best-of-N, random search, zero-order search and ReNO at equal NFE per output sample on the bundled task.

Task: steer the unconditional `mnist-onestep` (it draws any digit) toward class c with a proxy reward (`--reward`:
the 5-proxy ensemble's mean log-probability of c, optionally averaged over random transformations or mixed
with pixel-MLP proxies); every held-out judge (`--judges`, default `models.HELDOUT_JUDGES`) watches and is never
optimized. For each NFE budget per output sample, each method produces B outputs per class and seed.
Reported per method and budget, as means over seeds ± the sd of the per-seed means: proxy score (optimized),
each judge's accuracy on the target and log p, the fraction of outputs every judge assigns to the target
(judges agree), backward passes and seconds per output. The compute-efficiency figure: for each method, the
smallest budget whose judges-agree mean reaches best-of-N's at N = `--reference` (256 NFE per output), and its
ratio to the reference. Verdicts "X beats Y" follow the all-judges rule (every judge, beyond the seed spread).
Usage: python benchmarks/methods.py [--quick] [--reward proxies|robust|mixed] [--judges ...] [--threads 2]
    -> benchmarks/results/methods[-REWARD].json, docs/benchmarks/methods[-REWARD].md and .png beside it
    (--quick: benchmarks/results/methods-quick.*; --render JSON rewrites the report from a results file).
Judges whose weights are absent are skipped with a printed note (and named in the report).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import rewardsteer as rs
from rewardsteer import models
from rewardsteer.bench.overopt import available_judges, judge_rewards
from rewardsteer.bench.overopt_report import ALL_JUDGES_RULE, add_result, judge_columns, judges_verdict, mean_sd
from rewardsteer.errors import RewardsteerError

METHODS = ("best_of_n", "random_search", "zero_order_search", "reno")
REWARDS = {"default": "the CLI's default reward `models.default_reward`: the mixed-family proxies (3 CNN + 3 "
                      "pixel-MLP members) averaged over random transformations (EOT, preset `default`)",
           "proxies": "the 5-proxy ensemble `models.proxy_ensemble` (mean log-probability of the class)",
           "robust": "the 5-proxy ensemble averaged over random shifts, rotations, zooms and pixel noise "
                     "(`rewardsteer.robust.robust`, preset `default`: EOT)",
           "mixed": "the mixed-family proxies `models.mixed_proxy_ensemble` (3 CNN + 3 pixel-MLP members)"}


def make_reward(kind: str, target: int):
    """The optimized reward for one class."""
    if kind == "default":
        return models.default_reward(target)
    if kind == "proxies":
        return models.proxy_ensemble(target=target)
    if kind == "mixed":
        return models.mixed_proxy_ensemble(target=target)
    if kind == "robust":
        return rs.robust(models.proxy_ensemble(target=target), seed=target)
    raise RewardsteerError(f"unknown --reward '{kind}'; available: {', '.join(REWARDS)}")


def outputs(method: str, nfe: int, gen, reward, heldout: dict, seed: int, b: int) -> list:
    common = dict(cond=None, heldout=heldout, progress=False)  # unconditional generator
    if method == "best_of_n":  # N = nfe candidates per output, one independent draw per output
        return [rs.best_of_n(gen, reward, n=1, candidates=nfe, seed=seed * 1000 + i, **common) for i in range(b)]
    if method == "random_search":
        rounds = max(1, nfe // 8)
        return [rs.random_search(gen, reward, n=1, iters=rounds, candidates=nfe // rounds, seed=seed * 1000 + i,
                                 **common) for i in range(b)]
    if method == "zero_order_search":
        return [rs.zero_order_search(gen, reward, n=b, iters=max(1, (nfe - 1) // 4), neighbours=4, seed=seed, **common)]
    if method == "reno":
        return [rs.reno(gen, reward, n=b, iters=nfe - 1, seed=seed, **common)]
    raise ValueError(method)


def measure(a, gen, judge_nets: dict) -> list[dict]:
    """One row per (budget, method): per-seed means over classes and outputs, then mean ± sd over seeds."""
    per_class = {c: (make_reward(a.reward, c), judge_rewards(judge_nets, c)) for c in a.classes}
    # warm-up: one-time costs (first stacked ensemble call, allocator) must not land on the first method's clock
    reward, heldout = per_class[a.classes[0]]
    rs.reno(gen, reward, n=a.per_class, iters=1, cond=None, heldout=heldout, progress=False)
    rows = []
    for nfe in a.budgets:
        methods = [m for m in a.methods if m == "best_of_n" or nfe in a.method_budgets]
        for method in methods:
            seeds = {"proxy": [], "judges_agree": [], **{f"{j}/{k}": [] for j in judge_nets for k in ("acc", "logp")}}
            spent = {"nfe": 0, "backward": 0, "seconds": 0.0, "n": 0}
            for seed in range(a.seeds):
                parts = {k: [] for k in seeds}
                for cls in a.classes:
                    reward, heldout = per_class[cls]
                    start = time.perf_counter()
                    results = outputs(method, nfe, gen, reward, heldout, seed, a.per_class)
                    spent["seconds"] += time.perf_counter() - start
                    for r in results:
                        add_result(parts, spent, r, judge_nets)
                for k, v in parts.items():
                    seeds[k].append(float(torch.cat(v).mean()))
            n = spent["n"]
            row = {"nfe_budget": nfe, "method": method, "outputs": n, "nfe_per_output": spent["nfe"] / n,
                   "backward_per_output": spent["backward"] / n, "seconds_per_output": spent["seconds"] / n}
            row["proxy"], row["proxy_sd"] = mean_sd(seeds["proxy"])
            row.update(judge_columns(seeds, judge_nets))
            row["per_seed"] = seeds
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_seed"}), flush=True)
    return rows


def efficiency(rows: list[dict], reference: int) -> tuple[dict | None, list[dict]]:
    """Best-of-N at N = reference, and per method the smallest budget whose judges-agree mean reaches it."""
    ref = next((r for r in rows if r["method"] == "best_of_n" and r["nfe_budget"] == reference), None)
    if ref is None:
        return None, []
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nfe_per_output"])
        hit = next((r for r in mine if r["judges_agree"] >= ref["judges_agree"]), None)
        entry = {"method": method, "reached": hit is not None, "largest_budget_run": mine[-1]["nfe_budget"]}
        if hit is not None:
            entry.update(
                nfe_budget=hit["nfe_budget"], nfe_per_output=hit["nfe_per_output"],
                backward_per_output=hit["backward_per_output"], judges_agree=hit["judges_agree"],
                judges_agree_sd=hit["judges_agree_sd"], ratio=hit["nfe_per_output"] / ref["nfe_per_output"],
                # a backward pass costs about two forward passes: the ratio with that counted
                ratio_with_backward=(hit["nfe_per_output"] + 2 * hit["backward_per_output"]) / ref["nfe_per_output"],
                every_judge_reaches=all(hit["judges"][j]["acc"] >= ref["judges"][j]["acc"] for j in ref["judges"]))
        out.append(entry)
    return ref, out


def plot(rows: list[dict], ref: dict | None, judges: list[str], path: Path) -> None:
    """Judges-agree (and each judge's accuracy) vs NFE per output, log-x, error bars = seed sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("judges_agree", "judges agree (every judge: target)")] + [(j, f"{j} accuracy") for j in judges]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        def value(r, sd=False, key=key):
            if key == "judges_agree":
                return r["judges_agree_sd" if sd else "judges_agree"]
            return r["judges"][key]["acc_sd" if sd else "acc"]

        for method in dict.fromkeys(r["method"] for r in rows):
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nfe_per_output"])
            ax.errorbar([r["nfe_per_output"] for r in mine], [value(r) for r in mine],
                        yerr=[value(r, sd=True) for r in mine], marker="o", capsize=3, label=method,
                        linestyle="--" if method == "best_of_n" else "-")
        if ref is not None:
            ax.axhline(value(ref), color="k", lw=0.8, ls=":", label=f"best-of-N @ {ref['nfe_budget']}")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="NFE per output", ylabel=label, ylim=(-0.02, 1.02))
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict], judges: list[str]) -> str:
    head = ["NFE budget", "method", "NFE/output", "backward/output", "proxy score",
            *(f"{j} acc" for j in judges), *(f"{j} log p" for j in judges), "judges agree", "s/output"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["nfe_budget"]), r["method"], f"{r['nfe_per_output']:.1f}", f"{r['backward_per_output']:.1f}",
                 f"{r['proxy']:.3f} ± {r['proxy_sd']:.3f}",
                 *(f"{r['judges'][j]['acc']:.1%} ± {r['judges'][j]['acc_sd']:.1%}" for j in judges),
                 *(f"{r['judges'][j]['logp']:.2f} ± {r['judges'][j]['logp_sd']:.2f}" for j in judges),
                 f"{r['judges_agree']:.1%} ± {r['judges_agree_sd']:.1%}", f"{r['seconds_per_output']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def efficiency_table(ref: dict | None, entries: list[dict]) -> str:
    if ref is None:
        return "(best-of-N was not run at the reference budget: no efficiency figure)"
    lines = [f"Reference: best-of-N at N = {ref['nfe_budget']} ({ref['nfe_per_output']:.0f} NFE per output), judges "
             f"agree {ref['judges_agree']:.1%} ± {ref['judges_agree_sd']:.1%}.", "",
             "| method | smallest budget reaching the reference | NFE/output | backward/output | judges agree | "
             "NFE ratio to reference | ratio counting a backward as 2 NFE | ≤ 1/8 of the reference | "
             "every judge's accuracy ≥ reference |", "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if not e["reached"]:
            lines.append(f"| {e['method']} | not reached up to {e['largest_budget_run']} | — | — | — | — | — | no | — |")
            continue
        lines.append(f"| {e['method']} | {e['nfe_budget']} | {e['nfe_per_output']:.1f} | {e['backward_per_output']:.1f} | "
                     f"{e['judges_agree']:.1%} ± {e['judges_agree_sd']:.1%} | {e['ratio']:.3f} | "
                     f"{e['ratio_with_backward']:.3f} | {'yes' if e['ratio'] <= 1 / 8 else 'no'} | "
                     f"{'yes' if e['every_judge_reaches'] else 'no'} |")
    return "\n".join(lines)


def verdicts(rows: list[dict], seeds: int) -> list[str]:
    """Every method against best-of-N at each budget, under the all-judges rule."""
    out = []
    for nfe in sorted({r["nfe_budget"] for r in rows}):
        at = {r["method"]: r for r in rows if r["nfe_budget"] == nfe}
        if "best_of_n" not in at:
            continue
        for method, r in at.items():
            if method != "best_of_n":
                out.append(judges_verdict(method, "best_of_n", f"{nfe} NFE/output", r, at["best_of_n"], seeds))
    return out


def write_doc(saved: dict, doc: Path) -> None:
    rows, config = saved["rows"], saved["config"]
    judges = saved["judges"]
    ref, entries = efficiency(rows, config["reference"])
    doc.parent.mkdir(parents=True, exist_ok=True)
    png = doc.with_suffix(".png")
    plot(rows, ref, judges, png)
    lines = verdicts(rows, config["seeds"])
    notes = "".join(f"- {n}\n" for n in saved["notes"]) or "- none: every requested judge was used\n"
    doc.write_text(DOC.format(
        command=config["command"], minutes=saved["seconds"] / 60, threads=config["threads"],
        classes=len(config["classes"]), seeds=config["seeds"], per_class=config["per_class"],
        reward=REWARDS[config["reward"]], judges=", ".join(f"`{j}`" for j in judges), notes=notes,
        rule=ALL_JUDGES_RULE, png=png.name, table=table(rows, judges), reference=config["reference"],
        efficiency=efficiency_table(ref, entries), verdicts="\n".join(lines) or "(no pair measured)") + "\n")
    print(table(rows, judges))
    print(efficiency_table(ref, entries))
    print("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256], help="NFE per output")
    p.add_argument("--reference", type=int, default=256,
                   help="best-of-N's N for the efficiency figure (best-of-N is run there even if not in --budgets)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--per-class", type=int, default=4, help="outputs per class and seed")
    p.add_argument("--reward", choices=list(REWARDS), default="default")
    p.add_argument("--judges", nargs="+", default=list(models.HELDOUT_JUDGES),
                   help="held-out judges (missing ones are skipped with a note)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="budgets 8 16 (reference 16), class 3, 3 seeds, 2 outputs")
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.add_argument("--doc", type=Path, default=None, help="markdown report (a PNG plot is written beside it)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only rewrite the report (--doc) from a results file of an earlier run")
    args = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(args)
    if a.render is not None:
        saved = json.loads(a.render.read_text())
        write_doc(saved, a.doc or Path(saved["config"]["doc"]))
        return
    if a.quick:
        a.budgets, a.reference, a.classes, a.seeds, a.per_class = [8, 16], 16, [3], 3, 2
    a.method_budgets = sorted(set(a.budgets))
    a.budgets = sorted(set(a.budgets) | {a.reference})  # best-of-N only, where the reference is not a budget
    stem = "methods-quick" if a.quick else ("methods" if a.reward == "default" else f"methods-{a.reward}")
    a.out = a.out or Path(f"benchmarks/results/{stem}.json")
    a.doc = a.doc or (Path(f"benchmarks/results/{stem}.md") if a.quick else Path(f"docs/benchmarks/{stem}.md"))
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        judge_nets, notes = available_judges(a.judges)
        make_reward(a.reward, a.classes[0])  # a missing reward kind fails here, before any work
        gen = models.onestep()
        started = time.perf_counter()
        rows = measure(a, gen, judge_nets)
        total = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "render"}
    config["command"] = " ".join(["python benchmarks/methods.py", *args])
    saved = {"config": config, "seconds": total, "judges": list(judge_nets), "notes": notes,
             "rule": ALL_JUDGES_RULE, "rows": rows}
    saved["reference"], saved["efficiency"] = efficiency(rows, a.reference)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(saved, indent=1) + "\n")
    write_doc(saved, a.doc)


DOC = """# Methods at equal NFE (bundled task)

Command: `{command}` ({minutes:.1f} min on {threads} CPU thread(s); results in `benchmarks/results/`).
Task: steer the unconditional `mnist-onestep` (it draws any digit) toward each of {classes} classes with
{reward} as the reward, {seeds} seeds × {per_class} outputs per class. Each output gets the same NFE budget
(generator evaluations); ReNO additionally spends one backward pass per evaluation but the last, which the tables
show, as does wall time (measured on a shared machine: compare by NFE and backward passes).

**Held-out judges** (never optimized): {judges}. Per judge: accuracy (the judge's top class is the target) and
log p(target); judges agree: the fraction of outputs every judge assigns to the target. Values are means over
seeds ± the standard deviation of the per-seed means (each seed's mean over all classes and outputs).
Judges requested but not used:
{notes}
**The all-judges rule.** {rule}

![judges agree vs NFE per output]({png})

{table}

## Compute efficiency

For each method, the smallest NFE budget run whose judges-agree mean reaches that of best-of-N at
N = {reference}, and its NFE per output as a fraction of the reference's (the goal: ≤ 1/8). This compares
means; the last column says whether every judge's accuracy also reaches the reference's.

{efficiency}

## Verdicts

{verdicts}
"""


if __name__ == "__main__":
    try:
        main()
    except RewardsteerError as e:  # bad input or missing weights: one line, not a traceback
        sys.exit(f"error: {e}")
