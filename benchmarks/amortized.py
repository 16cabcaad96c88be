"""Amortized alignment against per-sample steering on the bundled task, and over-optimization under fine-tuning.

Part 1, the table users need (`--part table`): `mnist-onestep` asked for any digit (cond=None), steered toward
class 7 by the CLI's default reward (3 CNN + 3 pixel-MLP proxies under EOT). Per training seed: a noise network
and a learned noise distribution (FIND) trained for all ten classes, and a LoRA adapter fine-tuned for 7, each
trained once; then, on fresh noises, each at its own inference cost (1 NFE) and at best-of-N@16's cost (each
output the best of 16 candidates through it), against the base model, best-of-N@16 and ReNO@50. Every output set
is measured the same way: the reward, each held-out judge's accuracy on 7 and how often all three agree, the
realism monitor, batch diversity; plus inference NFE and backward passes per sample, the training cost, and the
break-even count after which training once is cheaper than ReNO@50 per sample, in generator passes (forward +
backward) and in seconds measured in this run.

Part 2 (`--part overopt`): LoRA fine-tuning of the class-conditional generator (cond=7) against k = 5 Bradley-
Terry proxies of bench overopt's gold reward (trained on gold-labelled pairs with 25% of labels flipped),
aggregated as one member, mean, WCO or UWO (Coste et al. 2024), β = 0; gold, proxy and the judges are measured
every few steps against d = √KL to the base model (the smoothed-joint KL of `amortized.lora`), and Gao et al.'s RL
form R(d) = d(α − β log d) is fitted to the seed-mean gold curve.

Usage: python benchmarks/amortized.py [--quick] [--seeds 3] [--threads 1] [--part all|table|overopt]
    -> benchmarks/results/amortized.json, docs/benchmarks/amortized.md, docs/benchmarks/amortized-overopt.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import rewardsteer as rs
from rewardsteer import amortized as am
from rewardsteer import models
from rewardsteer.amortized import TrainConfig
from rewardsteer.bench import overopt
from rewardsteer.bench.overopt_report import gao_fit, mean_sd
from rewardsteer.core import make_rng
from rewardsteer.rewards import aggregates as agg

ROOT = Path(__file__).resolve().parents[1]
TARGET = 7
JUDGES = models.HELDOUT_JUDGES


@dataclass(frozen=True)
class Setup:
    seeds: int = 3
    eval_n: int = 64  # fresh outputs measured per seed and row (ReNO: reno_n)
    bon: int = 16
    reno_n: int = 16
    reno_iters: int = 50
    noise_steps: int = 400
    lora_steps: int = 300
    batch: int = 16
    noise_lr: float = 3e-3  # noise-net; its offsets 10x (amortized.noise)
    find_lr: float = 1e-3  # learned-noise; its means 10x
    lora_lr: float = 1e-2
    noise_reg: float = 0.01
    lora_reg: float = 1e-4
    overopt_steps: int = 200
    overopt_every: int = 20
    overopt_lr: float = 2e-3


QUICK = Setup(seeds=1, eval_n=8, bon=2, reno_n=2, reno_iters=2, noise_steps=3, lora_steps=3, batch=4, overopt_steps=4,
              overopt_every=2)


def measure(x: torch.Tensor, seconds_per_sample: float, nfe: float, backward: float) -> dict:
    """Every output set scored the same way: a fresh default reward (fixed EOT seed), judges, realism, diversity."""
    with torch.no_grad():
        row = {"reward": float(models.default_reward(TARGET)(x).mean())}
        hits = []
        for name, judge in models.judges(TARGET).items():
            _, hit = judge.score_and_hits(x)
            row[f"{name}/acc"] = float(hit.float().mean())
            hits.append(hit)
        row["judges_agree"] = float(torch.stack(hits).all(0).float().mean())
        row["realism"] = float(models.realism_monitor()(x).mean())
        row["diversity"] = float(models.diversity_monitor()(x).mean())
    return {**row, "nfe_per_sample": nfe, "backward_per_sample": backward, "seconds_per_sample": seconds_per_sample}


def best_of(gen, n: int, k: int, seed: int) -> tuple[torch.Tensor, float]:
    """n outputs, each the best of k candidates by the default reward (rs.best_of_n, one call per output)."""
    start, out = time.perf_counter(), []
    reward = models.default_reward(TARGET)
    for i in range(n):
        r = rs.best_of_n(gen, reward, n=1, candidates=k, seed=seed * 10_000 + i, progress=False)
        out.append(r.samples)
    return torch.cat(out), (time.perf_counter() - start) / n


def plain(gen, n: int, seed: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        x = gen(gen.sample_noise(n, make_rng(seed)))
    return x, (time.perf_counter() - start) / n


def train_all(s: Setup, seed: int, log) -> dict:
    """The three amortizers for one training seed: {name: (generator for class 7, training cost)}."""
    out = {}
    for kind, lr in (("noise-net", s.noise_lr), ("learned-noise", s.find_lr)):
        cfg = TrainConfig(steps=s.noise_steps, batch=s.batch, lr=lr, reg=s.noise_reg, seed=seed, eval_every=0)
        t = am.train_noise(models.onestep(), models.default_reward(), kind=kind, conditions=list(range(10)), config=cfg,
                           progress=False, log=log)
        out[kind] = (t.generator(TARGET), t.report.cost())
        log(stage="trained", kind=kind, seed=seed, **t.report.cost())
    cfg = TrainConfig(steps=s.lora_steps, batch=s.batch, lr=s.lora_lr, reg=s.lora_reg, seed=seed, eval_every=0)
    t = am.finetune(models.onestep(), models.default_reward(TARGET), rank=4, target=TARGET, config=cfg, progress=False,
                    log=log)
    out["lora"] = (t.generator(), t.report.cost())
    log(stage="trained", kind="lora", seed=seed, **t.report.cost())
    return out


def table_part(s: Setup, log) -> dict:
    rows: dict[str, list[dict]] = {}
    train_costs: dict[str, list[dict]] = {}

    def add(name, x, sec, nfe, backward):
        rows.setdefault(name, []).append(measure(x, sec, nfe, backward))

    for seed in range(s.seeds):
        eval_seed = 100 + seed
        base = models.onestep()
        x, sec = plain(base, s.eval_n, eval_seed)
        add("base", x, sec, 1, 0)
        x, sec = best_of(base, s.eval_n, s.bon, eval_seed)
        add(f"best-of-N@{s.bon}", x, sec, s.bon, 0)
        start = time.perf_counter()
        r = rs.reno(base, models.default_reward(TARGET), n=s.reno_n, iters=s.reno_iters, seed=eval_seed, progress=False)
        add(f"ReNO@{s.reno_iters}", r.samples, (time.perf_counter() - start) / s.reno_n,
            r.spent["nfe"] / s.reno_n, r.spent["backward"] / s.reno_n)
        log(stage="baselines", seed=seed)
        for kind, (gen, cost) in train_all(s, seed, log).items():
            train_costs.setdefault(kind, []).append(cost)
            x, sec = plain(gen, s.eval_n, eval_seed)
            add(kind, x, sec, 1, 0)
            x, sec = best_of(gen, s.eval_n, s.bon, eval_seed)
            add(f"{kind} + best-of-N@{s.bon}", x, sec, s.bon, 0)
        log(stage="measured", seed=seed)
    summary = {name: summarize(values) for name, values in rows.items()}
    reno = summary[f"ReNO@{s.reno_iters}"]
    for kind, costs in train_costs.items():
        cost = {k: mean_sd([c[k] for c in costs])[0] for k in costs[0]}
        for name in (kind, f"{kind} + best-of-N@{s.bon}"):
            row = summary[name]
            row["training"] = cost
            passes = cost["nfe"] + cost["backward"]
            per = reno["nfe_per_sample"] + reno["backward_per_sample"] - row["nfe_per_sample"] - row["backward_per_sample"]
            row["break_even_passes"] = passes / per if per > 0 else math.inf
            per_s = reno["seconds_per_sample"] - row["seconds_per_sample"]
            row["break_even_seconds"] = cost["seconds"] / per_s if per_s > 0 else math.inf
    return {"rows": summary, "per_seed": rows}


def summarize(values: list[dict]) -> dict:
    out = {}
    for k in values[0]:
        m, sd = mean_sd([v[k] for v in values])
        out[k], out[k + "_sd"] = m, sd
    return out


def overopt_part(s: Setup, log, quick: bool) -> dict:
    """Gold vs proxy as LoRA fine-tuning proceeds, for single / mean / WCO / UWO BT proxies (bench overopt's)."""
    cfg = replace(overopt.QUICK if quick else overopt.Config(), target=TARGET)
    gen = models.onestep()
    gold = overopt.GoldReward(models.classifier("mnist-judge"), TARGET, overopt.MNIST_MEAN_INK[TARGET], cfg.ink_width)
    bt, info = overopt.bt_proxies(gen, gold, cfg, log)
    calib_x = overopt.pool(gen, cfg.calib, TARGET, 12345, cfg.batch)
    family = overopt.Family(bt, [agg.standardize(agg.calibrate(bt, calib_x, TARGET))], info)
    gold_sd = float(overopt.score_all(gold, calib_x, TARGET, cfg.batch)["gold"].std())
    calib_members = overopt.score_all(bt, calib_x, TARGET, cfg.batch)
    out = {"bt": info, "gold_sd": gold_sd, "aggregates": {}}
    for name, t in overopt.aggregates(list(bt.members), cfg.uwo_reno).items():
        reward = bt.with_transform(family.chain(t))
        proxy_sd = float(agg.reduce(reward.transform, calib_members).std())
        runs = []
        for seed in range(s.seeds):
            tc = TrainConfig(steps=s.overopt_steps, batch=s.batch, lr=s.overopt_lr, reg=0.0, seed=seed,
                             eval_every=s.overopt_every, eval_n=4 * s.eval_n)
            trained = am.finetune(models.onestep(), reward, rank=4, target=TARGET, generator_cond=TARGET, config=tc,
                                  watch={"gold": gold, **models.judges(TARGET)}, progress=False, log=lambda **k: None)
            ev = trained.report.evals
            runs.append({"step": [e["step"] for e in ev], "d": [math.sqrt(max(e["penalty"], 0.0)) for e in ev],
                         "gold": [(e["gold"] - ev[0]["gold"]) / gold_sd for e in ev],
                         "proxy": [(e["reward"] - ev[0]["reward"]) / proxy_sd for e in ev],
                         "judges_agree": [e["judges_agree"] for e in ev]})
            log(stage="overopt", aggregate=name, seed=seed, final_gold=runs[-1]["gold"][-1],
                final_proxy=runs[-1]["proxy"][-1], final_d=runs[-1]["d"][-1])
        mean = {k: [sum(r[k][i] for r in runs) / len(runs) for i in range(len(runs[0][k]))]
                for k in ("d", "gold", "proxy", "judges_agree")}
        peak = max(range(len(mean["gold"])), key=mean["gold"].__getitem__)
        out["aggregates"][name] = {"runs": runs, "mean": mean, "peak_step": runs[0]["step"][peak],
                                   "peak_gold": mean["gold"][peak], "final_gold": mean_sd([r["gold"][-1] for r in runs]),
                                   "final_proxy": mean_sd([r["proxy"][-1] for r in runs]),
                                   "final_judges_agree": mean_sd([r["judges_agree"][-1] for r in runs]),
                                   "fit": gao_fit(mean["d"][1:], mean["gold"][1:], form="rl")}
    return out


def plot_overopt(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res["aggregates"]), figsize=(4 * len(res["aggregates"]), 3.2), sharey=True)
    for ax, (name, a) in zip(axes, res["aggregates"].items()):
        ax.plot(a["mean"]["d"], a["mean"]["proxy"], "o-", label="proxy")
        ax.plot(a["mean"]["d"], a["mean"]["gold"], "o-", label="gold")
        f = a["fit"]
        if math.isfinite(f["alpha"]):
            d = torch.linspace(1e-3, max(a["mean"]["d"]), 50)
            ax.plot(d, d * (f["alpha"] - f["beta"] * torch.log(d)), "--", color="gray", label="Gao RL fit (gold)")
        ax.set_title(name)
        ax.set_xlabel("d = √KL to the base model")
        ax.axhline(0, color="black", lw=0.5)
    axes[0].set_ylabel("Δ reward (unsteered sd)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(row: dict, key: str, pct: bool = False) -> str:
    m, sd = row[key], row[key + "_sd"]
    return f"{100 * m:.1f} ± {100 * sd:.1f}%" if pct else f"{m:.3f} ± {sd:.3f}"


def markdown(res: dict, s: Setup, command: str) -> str:
    lines = ["# Amortized alignment vs per-sample steering", "",
             f"Generated by `{command}` ({res['seconds'] / 60:.1f} min, {res['threads']} torch thread(s), "
             f"{s.seeds} seeds). Numbers are mean ± sd over training/evaluation seeds.", ""]
    if "table" in res:
        rows = res["table"]["rows"]
        lines += ["## The bundled task: any digit → 7 (`mnist-onestep`, default reward)", "",
                  "| approach | NFE / sample | backward / sample | reward | " + " | ".join(f"{j} acc" for j in JUDGES) +
                  " | judges agree | realism | diversity | training (passes, s) | break-even vs ReNO (samples: passes; s) |",
                  "|---" * (9 + len(JUDGES)) + "|"]
        for name, r in rows.items():
            train = r.get("training")
            cost = f"{train['nfe'] + train['backward']:.0f}, {train['seconds']:.0f}" if train else "—"
            be = f"{r['break_even_passes']:.0f}; {r['break_even_seconds']:.0f}" if train else "—"
            lines.append(f"| {name} | {r['nfe_per_sample']:.0f} | {r['backward_per_sample']:.0f} | {fmt(r, 'reward')} | "
                         + " | ".join(fmt(r, f"{j}/acc", True) for j in JUDGES)
                         + f" | {fmt(r, 'judges_agree', True)} | {fmt(r, 'realism')} | {fmt(r, 'diversity')} | {cost} | {be} |")
        lines += ["", *bars(rows, s), ""]
    if "overopt" in res:
        o = res["overopt"]
        lines += ["## Over-optimization under LoRA fine-tuning (BT proxies of bench overopt's gold reward)", "",
                  "![gold and proxy against d](amortized-overopt.png)", "",
                  "| aggregate | peak Δgold (step) | final Δgold | final Δproxy | final judges agree | Gao RL fit α, β, R² |",
                  "|---|---|---|---|---|---|"]
        for name, a in o["aggregates"].items():
            f = a["fit"]
            lines.append(f"| {name} | {a['peak_gold']:+.3f} ({a['peak_step']}) | {a['final_gold'][0]:+.3f} ± "
                         f"{a['final_gold'][1]:.3f} | {a['final_proxy'][0]:+.3f} ± {a['final_proxy'][1]:.3f} | "
                         f"{100 * a['final_judges_agree'][0]:.1f}% | α={f['alpha']:.3f}, β={f['beta']:.3f}, R²={f['r2']:.2f} |")
    return "\n".join(lines) + "\n"


def bars(rows: dict, s: Setup) -> list[str]:
    """The issue's bars, checked on the measured numbers."""
    bon, reno, base = rows[f"best-of-N@{s.bon}"], rows[f"ReNO@{s.reno_iters}"], rows["base"]
    nn, lora = rows["noise-net"], rows["lora"]
    spread = max(base["realism_sd"], lora["realism_sd"])  # the larger seed sd, as every judges verdict uses
    return [
        f"- Noise network at 1 NFE vs best-of-N@{s.bon} (judges agree): {nn['judges_agree']:.1%} vs "
        f"{bon['judges_agree']:.1%} — {'meets' if nn['judges_agree'] >= bon['judges_agree'] else 'misses'} the bar.",
        f"- LoRA fine-tuning vs ReNO@{s.reno_iters} (reward): {lora['reward']:.3f} vs {reno['reward']:.3f} — "
        f"{'meets' if lora['reward'] >= reno['reward'] else 'misses'} the bar; realism {lora['realism']:.3f} vs the base "
        f"model's {base['realism']:.3f} (larger seed sd {spread:.3f}): "
        f"{'within' if lora['realism'] >= base['realism'] - spread else 'below'} the spread.",
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the whole pipeline")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--part", choices=["all", "table", "overopt"], default="all")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/amortized.json")
    p.add_argument("--md", type=Path, default=ROOT / "docs/benchmarks/amortized.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON, running nothing")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    s = QUICK if a.quick else Setup()
    if a.seeds:
        s = replace(s, seeds=a.seeds)

    def log(**rec):
        print(json.dumps(rec), flush=True)

    if a.report_only:
        res = json.loads(a.json.read_text())
        both = "table" in res and "overopt" in res
        cmd = "make bench-amortized (both parts, in parallel)" if both else res.get("command", "")
        a.md.write_text(markdown(res, Setup(**res["setup"]), cmd))
        print(a.md.read_text())
        return
    start = time.time()
    res: dict = {"setup": s.__dict__, "threads": a.threads}
    if a.part in ("all", "table"):
        res["table"] = table_part(s, log)
    if a.part in ("all", "overopt"):
        res["overopt"] = overopt_part(s, log, a.quick)
        a.md.parent.mkdir(parents=True, exist_ok=True)
        plot_overopt(res["overopt"], a.md.parent / "amortized-overopt.png")
    res["seconds"] = time.time() - start
    if a.json.is_file() and a.part != "all":  # keep the other part's numbers (read now: the parts may run in parallel)
        old = json.loads(a.json.read_text())
        res.update({k: v for k, v in old.items() if k in ("table", "overopt") and k not in res})
        res["seconds"] += old.get("seconds", 0.0)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    a.md.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/amortized.py" + (" --quick" if a.quick else "") + (f" --part {a.part}" if a.part != "all" else "")
    res["command"] = cmd
    a.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    a.md.write_text(markdown(res, s, cmd))
    print(a.md.read_text())


if __name__ == "__main__":
    main()
