"""Particle steering at equal NFE: best-of-N over trajectories, FK steering (each potential), DAS, SVDD,
reward-gradient guidance (DPS-style) and multi-step ReNO on `mnist-flow`.

Task: steer `mnist-flow` (T stochastic sampler steps) toward each class with the 5-proxy ensemble (mean
log-probability of the class) as the reward; every held-out judge (`--judges`, default `models.HELDOUT_JUDGES`;
missing ones are skipped with a printed note) watches and is never optimized. By default the
sampler is unconditional (`--condition none`: only the reward asks for the class, so there is room to steer);
`--condition class` also conditions it on the class (without guidance), where the judges are saturated.
A budget K gives every output K·T NFE: K particles for best-of-N, FK and
DAS; K guided trajectories for guidance (K·T backward passes, as DAS); M = K candidates per step for SVDD
(1 + K·(T − 1) NFE); K evaluations of the T-step ODE sampler unrolled for ReNO (K − 1 gradient steps).
Reported per method and K (means over seeds ± sd of the per-seed means): proxy score, each judge's accuracy
and log p, judges agree (every judge assigns the output to the class); verdicts against best-of-N follow the
all-judges rule (every judge's accuracy, beyond the seed spread).
Usage: python benchmarks/particles.py [--quick] [--tiny] [--judges ...] [--render JSON]
    -> benchmarks/results/particles.json, docs/benchmarks/particles.md, docs/benchmarks/particles.png
--tiny swaps in random tiny networks (no weights needed: what the test runs).
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
from rewardsteer.bundled.flow import FlowSampler, UnrolledSampler
from rewardsteer.bundled.nets import Classifier, UNet
from rewardsteer.errors import RewardsteerError
from rewardsteer.rewards.base import ClassifierReward, Ensemble

METHODS = ["best_of_n", "fk_max", "fk_diff", "fk_sum", "fk_current", "das", "svdd", "guidance", "reno"]
GUIDANCE = dict(scale=100.0, step="variance")  # rs.reward_guidance's defaults (see its docstring for the sweep)


def tiny_setup(steps: int, guidance: float, judge_names):
    """Random tiny networks in place of the bundled ones (structure only: the numbers mean nothing); one random
    tiny classifier per judge name."""
    torch.manual_seed(0)
    net = UNet((8, 16), emb_dim=32)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    net.eval().requires_grad_(False)

    def clf(seed):
        torch.manual_seed(seed)
        return Classifier(width=4, feature_dim=16).eval().requires_grad_(False)

    nets, judges = [clf(i) for i in range(2)], {name: clf(9 + i) for i, name in enumerate(judge_names)}

    def rewards(target):
        proxies = Ensemble([ClassifierReward(n, f"proxy-{i}", target) for i, n in enumerate(nets)], name="proxies")
        return proxies, judge_rewards(judges, target)

    return (FlowSampler(net, steps, guidance, eta=1.0), UnrolledSampler(FlowSampler(net, steps, guidance, eta=0.0)),
            rewards, list(judges), [])


def bundled_setup(steps: int, guidance: float, judge_names):
    judges, notes = available_judges(judge_names)

    def rewards(target):
        return models.proxy_ensemble(target=target), judge_rewards(judges, target)

    return (models.flow_sampler(steps, guidance, eta=1.0), models.unrolled_flow(steps, guidance), rewards,
            list(judges), notes)


def tasks(condition: str, classes: list[int], per_class: int, rewards) -> list[tuple]:
    """(sampler condition, proxy ensemble, held-out judge rewards, labels) per batch of outputs: one batch of all
    classes when the sampler is conditioned on them, else one unconditional batch per class."""
    if condition == "class":
        labels = torch.tensor(classes).repeat_interleave(per_class)
        return [(labels, *rewards(None), labels)]  # rewards read the class from the condition
    return [(None, *rewards(c), torch.full((per_class,), c)) for c in classes]


def run_method(method: str, k: int, sampler, unrolled, proxies, heldout: dict, cond, n: int, seed: int,
               chunk: int) -> rs.Result:
    common = dict(cond=cond, n=n, heldout=heldout, seed=seed, progress=False)
    if method == "best_of_n":
        return rs.trajectory_best_of_n(sampler, proxies, particles=k, chunk=chunk, **common)
    if method.startswith("fk_"):
        return rs.fk_steering(sampler, proxies, particles=k, potential=method[3:], chunk=chunk, **common)
    if method == "das":
        return rs.das(sampler, proxies, particles=k, chunk=chunk, **common)
    if method == "svdd":
        return rs.svdd(sampler, proxies, particles=k, chunk=chunk, **common)
    if method == "guidance":
        return rs.reward_guidance(sampler, proxies, particles=k, chunk=chunk, **GUIDANCE, **common)
    if method == "reno":
        return rs.reno(unrolled, proxies, iters=k - 1, **common) if k > 1 else \
            rs.best_of_n(unrolled, proxies, candidates=common["n"], batch_size=64, **common)
    raise ValueError(method)


def upgrade(row: dict) -> dict:
    """A row of a results file written before every judge was reported (`judge_logp`, `judge_acc` of
    `mnist-judge` only, no accuracy spread): the same numbers in today's layout, the unknown spread as NaN."""
    if "judges" in row:
        return row
    acc = {"acc": row["judge_acc"], "acc_sd": float("nan"), "logp": row["judge_logp"], "logp_sd": row["judge_logp_std"]}
    return {**row, "judges": {"mnist-judge": acc}, "judges_agree": row["judge_acc"], "judges_agree_sd": float("nan")}


def verdicts(rows: list[dict], seeds: int) -> list[str]:
    """Every method against best-of-N over trajectories at each K, under the all-judges rule."""
    out = []
    for k in sorted({r["budget"] for r in rows}):
        at = {r["method"]: r for r in rows if r["budget"] == k}
        if "best_of_n" not in at:
            continue
        for method, r in at.items():
            if method != "best_of_n":
                where = f"K = {k} ({r['nfe_per_output']:.0f} vs {at['best_of_n']['nfe_per_output']:.0f} NFE/output)"
                out.append(judges_verdict(method, "best_of_n", where, r, at["best_of_n"], seeds))
    return out


def plot(rows: list[dict], judges: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("proxy", "proxy ensemble score (optimized)"), ("judges_agree", "judges agree (held out)"),
              *((j, f"{j} accuracy (held out)") for j in judges)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        def value(r, sd=False, key=key):
            if key == "proxy":
                return r["proxy_std" if sd else "proxy"]
            if key == "judges_agree":
                return r["judges_agree_sd" if sd else "judges_agree"]
            return r["judges"][key]["acc_sd" if sd else "acc"]

        for method in METHODS:
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nfe_per_output"])
            if mine:
                ax.errorbar([r["nfe_per_output"] for r in mine], [value(r) for r in mine],
                            yerr=[value(r, sd=True) for r in mine], marker="o", capsize=3, label=method,
                            linestyle="--" if method in ("best_of_n", "reno", "guidance") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE per output")
        ax.set_ylabel(label)
        if key != "proxy":
            ax.set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8], help="K: particles per output")
    p.add_argument("--steps", type=int, default=20, help="sampler steps T")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--per-class", type=int, default=1, help="outputs per class and seed")
    p.add_argument("--condition", choices=["none", "class"], default="none",
                   help="none: unconditional sampler, only the reward asks for the class; class: conditioned too")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance with --condition class (1: none; half the cost of 2)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--judges", nargs="+", default=list(models.HELDOUT_JUDGES),
                   help="held-out judges (missing ones are skipped with a note; --tiny: random tiny nets)")
    p.add_argument("--chunk", type=int, default=256, help="particles per network call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="one small budget, 4 steps, 2 classes, 2 seeds")
    p.add_argument("--tiny", action="store_true", help="random tiny networks instead of the bundled weights")
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.add_argument("--doc", type=Path, default=None, help="markdown report (a PNG plot is written beside it)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only rewrite the report (--doc) from a results file of an earlier run")
    a = p.parse_args(argv)
    if a.render is not None:
        saved = json.loads(a.render.read_text())
        write_doc(saved, a.doc or Path(saved["config"]["doc"]))
        return
    if a.quick:
        a.budgets, a.steps, a.classes, a.per_class, a.seeds = [2], 4, [3, 7], 1, 2
    stem = "particles-quick" if (a.quick or a.tiny) else "particles"
    a.out = a.out or Path(f"benchmarks/results/{stem}.json")
    a.doc = a.doc or (Path("docs/benchmarks/particles.md") if stem == "particles" else Path(f"benchmarks/results/{stem}.md"))
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        started = time.perf_counter()
        rows, judges, notes = measure(a)
        total = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "render"}
    config["command"] = " ".join(["python benchmarks/particles.py", *(sys.argv[1:] if argv is None else argv)])
    saved = {"config": config, "seconds": total, "judges": judges, "notes": notes, "rule": ALL_JUDGES_RULE,
             "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(saved, indent=2) + "\n")
    write_doc(saved, a.doc)


def measure(a) -> tuple[list[dict], list[str], list[str]]:
    """One row per (budget, method): means over seeds of the per-seed mean scores, and the cost per output."""
    sampler, unrolled, rewards, judges, notes = (tiny_setup if a.tiny else bundled_setup)(a.steps, a.guidance,
                                                                                        a.judges)
    batches = tasks(a.condition, a.classes, a.per_class, rewards)
    rows = []
    for k in a.budgets:
        for method in a.methods:
            seeds = {"proxy": [], "judges_agree": [], **{f"{j}/{m}": [] for j in judges for m in ("acc", "logp")}}
            spent = {"nfe": 0, "backward": 0, "seconds": 0.0, "n": 0}
            for seed in range(a.seeds):
                parts = {key: [] for key in seeds}
                for cond, proxies, heldout, labels in batches:
                    r = run_method(method, k, sampler, unrolled, proxies, heldout, cond, len(labels), seed, a.chunk)
                    spent["seconds"] += r.spent["seconds"]  # the run's own: not the plain samples of its before row
                    add_result(parts, spent, r, judges)
                for key, v in parts.items():
                    seeds[key].append(float(torch.cat(v).mean()))
            n = spent["n"]
            row = {"budget": k, "method": method, "outputs": n, "nfe_per_output": spent["nfe"] / n,
                   "backward_per_output": spent["backward"] / n, "seconds_per_output": spent["seconds"] / n}
            row["proxy"], row["proxy_std"] = mean_sd(seeds["proxy"])
            row.update(judge_columns(seeds, judges))
            row["per_seed"] = seeds
            rows.append(row)
            print(json.dumps({key: v for key, v in row.items() if key != "per_seed"}), flush=True)
    return rows, judges, notes


def write_doc(saved: dict, doc: Path) -> None:
    """The markdown report (table, verdicts against best-of-N under all judges) and its plot beside it."""
    rows, config, seconds = [upgrade(r) for r in saved["rows"]], saved["config"], saved["seconds"]
    judges = saved.get("judges") or list(rows[0]["judges"])
    notes = list(saved.get("notes", []))
    if "judges" not in saved:
        notes.append("results written before every judge was reported: `mnist-judge` only, its accuracy's seed "
                     "spread unknown (NaN), so no verdict can be yes")
    head = ["K", "method", "NFE/output", "backward/output", "proxy score", *(f"{j} acc" for j in judges),
            *(f"{j} log p" for j in judges), "judges agree", "s/output"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["budget"]), r["method"], f"{r['nfe_per_output']:.0f}", f"{r['backward_per_output']:.0f}",
                 f"{r['proxy']:.3f} ± {r['proxy_std']:.3f}",
                 *(f"{r['judges'][j]['acc']:.1%} ± {r['judges'][j]['acc_sd']:.1%}" for j in judges),
                 *(f"{r['judges'][j]['logp']:.2e} ± {r['judges'][j]['logp_sd']:.1e}" for j in judges),
                 f"{r['judges_agree']:.1%} ± {r['judges_agree_sd']:.1%}", f"{r['seconds_per_output']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    found = verdicts(rows, config["seeds"])
    doc.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, judges, doc.with_suffix(".png"))
    condition = config.get("condition", "class")  # results written before --condition existed were conditional
    sampler_text = (f"conditioned on the class (classifier-free guidance {config['guidance']})" if condition == "class"
                    else "unconditional (only the reward asks for the class)")
    doc.write_text(DOC.format(table="\n".join(lines), verdicts="\n".join(found) or "(no pair measured)",
                              steps=config["steps"], sampler=sampler_text, classes=len(config["classes"]),
                              per_class=config["per_class"], seeds=config["seeds"], minutes=seconds / 60,
                              threads=config["threads"], png=doc.with_suffix(".png").name,
                              judges=", ".join(f"`{j}`" for j in judges), rule=ALL_JUDGES_RULE,
                              notes="".join(f"- {n}\n" for n in notes) or "- none: every requested judge was used\n",
                              models="random tiny networks (--tiny): numbers are meaningless" if config["tiny"]
                              else "the bundled `mnist-flow`, proxies and judges",
                              command=config.get("command", "python benchmarks/particles.py")) + "\n")
    print("\n".join(lines))
    print("\n".join(found))


DOC = """# Particle steering at equal NFE ({models})

Command: `{command}` ({minutes:.1f} min on {threads} CPU thread(s); results in `benchmarks/results/`).
Task: steer the {steps}-step stochastic sampler (η = 1), {sampler}, toward each
of {classes} classes with the 5-proxy ensemble (mean log-probability of the class) as the reward;
{per_class} output(s) per class and seed, {seeds} seeds.

**Held-out judges** (never optimized): {judges}. Per judge: accuracy (its top class is the target) and
log p(target); judges agree: the fraction of outputs every judge assigns to the target.
Judges requested but not used:
{notes}
**The all-judges rule.** {rule}

Values are means over seeds ± the std of the per-seed means. A budget K gives each output K·T NFE: K particles
(best-of-N over trajectories, FK, DAS), K guided trajectories (guidance: DPS-style reward-gradient guidance,
λ = 100, the best of K kept), K candidates per step (SVDD: 1 + K·(T − 1) NFE), or K evaluations of the
T-step ODE sampler unrolled (ReNO; K = 1 is a plain sample). DAS, guidance and ReNO also spend backward
passes (shown; DAS and guidance equally). FK, best-of-N and guidance return each output's highest-reward
particle; DAS returns one draw from its final weights (a sample of p(x)·exp(r(x)/α), α = 0.1), as each paper
does; SVDD keeps the argmax candidate per step.
s/output is wall time on a shared machine: compare methods by NFE and backward passes, not seconds.

![proxy score, judges agree and each judge's accuracy vs NFE]({png})

{table}

## Verdicts

{verdicts}

With K = 2 and ESS threshold 0.5, FK never resamples (ESS ≥ 1 = 0.5·K always), so it equals best-of-N there by
construction. With an unconditional sampler an unsteered sample is the asked-for digit about one time in ten,
so the judges' accuracy measures how far each method steers; when the sampler is conditioned on the class
(`--condition class`) the judges are saturated and cannot separate the methods. The proxy column is the
optimized reward: gains there that the judges do not confirm are the reward hacking they are there to expose.
"""


if __name__ == "__main__":
    try:
        main()
    except RewardsteerError as e:  # bad input or missing weights: one line, not a traceback
        sys.exit(f"error: {e}")
