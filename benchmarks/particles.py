"""Particle steering at equal NFE: best-of-N over trajectories, FK steering (each potential), DAS, SVDD and
multi-step ReNO on `mnist-flow`.

Task: steer `mnist-flow` (T stochastic sampler steps) toward each class with the 5-proxy ensemble (mean
log-probability of the class) as the reward; `mnist-judge` is held out and never optimized. By default the
sampler is unconditional (`--condition none`: only the reward asks for the class, so there is room to steer);
`--condition class` also conditions it on the class (without guidance), where the judge is saturated.
A budget K gives every output K·T NFE: K particles for best-of-N, FK and
DAS; M = K candidates per step for SVDD (1 + K·(T − 1) NFE); K evaluations of the T-step ODE sampler
unrolled for ReNO (K − 1 gradient steps).
Usage: python benchmarks/particles.py [--quick] [--tiny]
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
from rewardsteer.flow import FlowSampler, UnrolledSampler
from rewardsteer.nets import Classifier, UNet
from rewardsteer.rewards import ClassifierReward, Ensemble

METHODS = ["best_of_n", "fk_max", "fk_diff", "fk_sum", "fk_current", "das", "svdd", "reno"]


def tiny_setup(steps: int, guidance: float):
    """Random tiny networks in place of the bundled ones (structure only: the numbers mean nothing)."""
    torch.manual_seed(0)
    net = UNet((8, 16), emb_dim=32)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    net.eval().requires_grad_(False)

    def clf(seed):
        torch.manual_seed(seed)
        return Classifier(width=4, feature_dim=16).eval().requires_grad_(False)

    nets, judge = [clf(i) for i in range(2)], clf(9)

    def rewards(target):
        proxies = Ensemble([ClassifierReward(n, f"proxy-{i}", target) for i, n in enumerate(nets)], name="proxies")
        return proxies, ClassifierReward(judge, "mnist-judge", target)

    return (FlowSampler(net, steps, guidance, eta=1.0), UnrolledSampler(FlowSampler(net, steps, guidance, eta=0.0)),
            rewards, judge)


def bundled_setup(steps: int, guidance: float):
    def rewards(target):
        return models.proxy_ensemble(target=target), models.classifier_reward("mnist-judge", target)

    return (models.flow_sampler(steps, guidance, eta=1.0), models.unrolled_flow(steps, guidance), rewards,
            models.classifier("mnist-judge"))


def tasks(condition: str, classes: list[int], per_class: int, rewards) -> list[tuple]:
    """(sampler condition, proxy ensemble, held-out judge reward, labels) per batch of outputs: one batch of all
    classes when the sampler is conditioned on them, else one unconditional batch per class."""
    if condition == "class":
        labels = torch.tensor(classes).repeat_interleave(per_class)
        return [(labels, *rewards(None), labels)]  # rewards read the class from the condition
    return [(None, *rewards(c), torch.full((per_class,), c)) for c in classes]


def run_method(method: str, k: int, sampler, unrolled, proxies, judge, cond, n: int, seed: int, chunk: int) -> rs.Result:
    common = dict(cond=cond, n=n, heldout={"judge": judge}, seed=seed, progress=False)
    if method == "best_of_n":
        return rs.trajectory_best_of_n(sampler, proxies, particles=k, chunk=chunk, **common)
    if method.startswith("fk_"):
        return rs.fk_steering(sampler, proxies, particles=k, potential=method[3:], chunk=chunk, **common)
    if method == "das":
        return rs.das(sampler, proxies, particles=k, chunk=chunk, **common)
    if method == "svdd":
        return rs.svdd(sampler, proxies, particles=k, chunk=chunk, **common)
    if method == "reno":
        return rs.reno(unrolled, proxies, iters=k - 1, **common) if k > 1 else \
            rs.best_of_n(unrolled, proxies, k=common.pop("n"), batch_size=64, **common)
    raise ValueError(method)


def summarize(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def verdict(rows: list[dict], name: str, prefix: str, key: str, label: str) -> str:
    """Plain words: does the best variant of a method beat best-of-N on `key` at each budget?"""
    parts, wins = [], 0
    budgets = sorted({r["budget"] for r in rows})
    for b in budgets:
        at = {r["method"]: r for r in rows if r["budget"] == b}
        base = at["best_of_n"]
        mine = max((r for m, r in at.items() if m.startswith(prefix)), key=lambda r: r[key])
        diff = mine[key] - base[key]
        noise = max(mine[key + "_std"], base[key + "_std"])
        word = "beats" if diff > noise else ("loses to" if diff < -noise else "ties with")
        wins += word == "beats"
        parts.append(f"at {base['nfe_per_output']:.0f} NFE/output {mine['method']} {word} best-of-N "
                     f"({mine[key]:.3g} vs {base[key]:.3g}, seed std ≤ {noise:.2g})")
    return f"**{name} beats best-of-N on the {label} at {wins} of {len(budgets)} budgets**: " + "; ".join(parts) + "."


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "proxy", "proxy ensemble score (optimized)"),
                           (axes[1], "judge_logp", "mnist-judge log p (held out)")):
        for method in METHODS:
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nfe_per_output"])
            if mine:
                ax.errorbar([r["nfe_per_output"] for r in mine], [r[key] for r in mine],
                            yerr=[r[key + "_std"] for r in mine], marker="o", capsize=3, label=method,
                            linestyle="--" if method in ("best_of_n", "reno") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE per output")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7, ncol=2)
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
    p.add_argument("--chunk", type=int, default=256, help="particles per network call")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="one small budget, 4 steps, 2 classes, 1 seed")
    p.add_argument("--tiny", action="store_true", help="random tiny networks instead of the bundled weights")
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.add_argument("--doc", type=Path, default=None, help="markdown report (a PNG plot is written beside it)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only rewrite the report (--doc) from a results file of an earlier run")
    a = p.parse_args(argv)
    if a.render is not None:
        saved = json.loads(a.render.read_text())
        write_doc(saved["rows"], saved["config"], saved["seconds"], a.doc or Path(saved["config"]["doc"]))
        return
    if a.quick:
        a.budgets, a.steps, a.classes, a.per_class, a.seeds = [2], 4, [3, 7], 1, 1
    stem = "particles-quick" if (a.quick or a.tiny) else "particles"
    a.out = a.out or Path(f"benchmarks/results/{stem}.json")
    a.doc = a.doc or (Path("docs/benchmarks/particles.md") if stem == "particles" else Path(f"benchmarks/results/{stem}.md"))
    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    rows = measure(a)
    total = time.perf_counter() - started
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "render"}
    config["command"] = " ".join(["python benchmarks/particles.py", *(sys.argv[1:] if argv is None else argv)])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"config": config, "seconds": total, "rows": rows}, indent=2) + "\n")
    write_doc(rows, config, total, a.doc)


def measure(a) -> list[dict]:
    """One row per (budget, method): means over seeds of the per-seed mean scores, and the cost per output."""
    sampler, unrolled, rewards, judge_net = (tiny_setup if a.tiny else bundled_setup)(a.steps, a.guidance)
    batches = tasks(a.condition, a.classes, a.per_class, rewards)
    rows = []
    for k in a.budgets:
        for method in a.methods:
            acc = {"proxy": [], "judge_logp": [], "judge_acc": [], "nfe": 0, "backward": 0, "seconds": 0.0, "n": 0}
            for seed in range(a.seeds):
                proxy, logp, correct = [], [], []
                for cond, proxies, judge, labels in batches:
                    start = time.perf_counter()
                    r = run_method(method, k, sampler, unrolled, proxies, judge, cond, len(labels), seed, a.chunk)
                    acc["seconds"] += time.perf_counter() - start
                    with torch.no_grad():
                        correct.append(judge_net(r.samples.float()).argmax(1) == labels)
                    proxy.append(r.scores)
                    logp.append(r.heldout_scores["judge"])
                    acc["nfe"] += r.spent["nfe"]
                    acc["backward"] += r.spent["backward"]
                    acc["n"] += r.samples.shape[0]
                acc["proxy"].append(float(torch.cat(proxy).mean()))
                acc["judge_logp"].append(float(torch.cat(logp).mean()))
                acc["judge_acc"].append(float(torch.cat(correct).float().mean()))
            row = {"budget": k, "method": method, "outputs": acc["n"], "nfe_per_output": acc["nfe"] / acc["n"],
                   "backward_per_output": acc["backward"] / acc["n"], "seconds_per_output": acc["seconds"] / acc["n"]}
            for key in ("proxy", "judge_logp", "judge_acc"):
                row[key], row[key + "_std"] = summarize(acc[key])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def write_doc(rows: list[dict], config: dict, seconds: float, doc: Path) -> None:
    """The markdown report (table, verdicts against best-of-N) and its plot beside it."""
    lines = ["| K | method | NFE/output | backward/output | proxy score | judge log p | judge accuracy | s/output |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['budget']} | {r['method']} | {r['nfe_per_output']:.0f} | {r['backward_per_output']:.0f} | "
                     f"{r['proxy']:.3f} ± {r['proxy_std']:.3f} | {r['judge_logp']:.2e} ± {r['judge_logp_std']:.1e} | "
                     f"{r['judge_acc']:.1%} | {r['seconds_per_output']:.2f} |")
    methods = {r["method"] for r in rows}
    verdicts = [verdict(rows, name, prefix, key, label)
                for name, prefix in (("FK", "fk_"), ("DAS", "das"), ("SVDD", "svdd"))
                for key, label in (("judge_logp", "held-out judge"), ("proxy", "proxy reward"))
                if "best_of_n" in methods and any(m.startswith(prefix) for m in methods)]
    doc.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, doc.with_suffix(".png"))
    condition = config.get("condition", "class")  # results written before --condition existed were conditional
    sampler_text = (f"conditioned on the class (classifier-free guidance {config['guidance']})" if condition == "class"
                    else "unconditional (only the reward asks for the class)")
    doc.write_text(DOC.format(table="\n".join(lines), verdicts="\n\n".join(verdicts), steps=config["steps"],
                              sampler=sampler_text, classes=len(config["classes"]), per_class=config["per_class"],
                              seeds=config["seeds"], minutes=seconds / 60, threads=config["threads"],
                              png=doc.with_suffix(".png").name,
                              models="random tiny networks (--tiny): numbers are meaningless" if config["tiny"]
                              else "the bundled `mnist-flow`, proxies and judge",
                              command=config.get("command", "python benchmarks/particles.py")) + "\n")
    print("\n".join(lines))
    print("\n".join(verdicts))


DOC = """# Particle steering at equal NFE ({models})

Command: `{command}` ({minutes:.1f} min on {threads} CPU thread(s); results in `benchmarks/results/`).
Task: steer the {steps}-step stochastic sampler (η = 1), {sampler}, toward each
of {classes} classes with the 5-proxy ensemble (mean log-probability of the class) as the reward;
{per_class} output(s) per class and seed, {seeds} seeds; `mnist-judge` is held out and never optimized.
Values are means over seeds ± the std of the
per-seed means. A budget K gives each output K·T NFE: K particles (best-of-N over trajectories, FK, DAS), K
candidates per step (SVDD: 1 + K·(T − 1) NFE), or K evaluations of the T-step ODE sampler unrolled (ReNO;
K = 1 is a plain sample). DAS and ReNO also spend backward passes (shown). FK and best-of-N return each
output's highest-reward particle; DAS returns one draw from its final weights (a sample of
p(x)·exp(r(x)/α), α = 0.1), as each paper does; SVDD keeps the argmax candidate per step.
s/output is wall time on a shared machine: compare methods by NFE and backward passes, not seconds.

![proxy and judge scores vs NFE]({png})

{table}

{verdicts}

"Beats" means a higher mean (of FK's best potential) than best-of-N by more than the larger of the two
seed standard deviations; "ties" means within it. With K = 2 and ESS threshold 0.5, FK never resamples
(ESS ≥ 1 = 0.5·K always), so it equals best-of-N there by construction. With an unconditional sampler an
unsteered sample is the asked-for digit about one time in ten, so judge accuracy measures how far each
method steers; when the sampler is conditioned on the class (`--condition class`) the judge is saturated
(log p near 0, accuracy near 100%) and cannot separate the methods. The proxy column is the optimized
reward: gains there that the judge does not confirm are the reward hacking the held-out judge is there to expose.
"""


if __name__ == "__main__":
    main()
