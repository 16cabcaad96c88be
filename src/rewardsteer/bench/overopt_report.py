"""The over-optimization benchmark's report: Gao et al.'s functional fit, the summary table, the plots; and the
held-out-judge helpers every benchmark report shares (seed spreads, the all-judges verdict)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

AGG_STYLE = {"single": "tab:gray", "mean": "tab:blue", "wco": "tab:red", "uwo": "tab:green"}

ALL_JUDGES_RULE = ("A claim \"X beats Y\" stands only if it holds under every held-out judge: X's accuracy on the "
                   "target is higher than Y's under each judge by more than the larger of the two seed standard "
                   "deviations (with fewer than 2 seeds there is no spread to beat, so no claim stands).")


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of per-seed aggregates."""
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), (float(t.std()) if len(values) > 1 else 0.0)


def judges_verdict(name: str, other: str, where: str, mine: dict, base: dict, seeds: int) -> str:
    """One line: "- NAME beats OTHER at WHERE under all judges: yes|no (per-judge evidence)".

    `mine` and `base` are rows with `judges: {judge: {"acc", "acc_sd"}}` and `judges_agree`(`_sd`): means over
    seeds ± sd of per-seed means. Yes only if every judge's accuracy is higher by more than the larger sd, and
    only with 2 or more seeds; a judge missing from either row makes it no.
    """
    parts, holds = [], seeds >= 2
    for judge in dict.fromkeys([*base["judges"], *mine["judges"]]):
        a, b = mine["judges"].get(judge), base["judges"].get(judge)
        if a is None or b is None:
            holds = False
            parts.append(f"{judge}: not measured for both")
            continue
        noise = max(a["acc_sd"], b["acc_sd"])
        ok = a["acc"] - b["acc"] > noise
        holds &= ok
        parts.append(f"{judge} {a['acc']:.1%} vs {b['acc']:.1%} (sd ≤ {noise:.1%}){'' if ok else ' fails'}")
    parts.append(f"judges agree {mine['judges_agree']:.1%} vs {base['judges_agree']:.1%}")
    if seeds < 2:
        parts.append("one seed: no spread")
    return f"- {name} beats {other} at {where} under all judges: {'yes' if holds else 'no'} ({'; '.join(parts)})"


def gao_fit(d: list[float], r: list[float], form: str = "bon") -> dict:
    """Least-squares fit of Gao et al. 2023's functional forms, d = √KL, with R²: the best-of-n form
    R(d) = d(α − βd) (`form="bon"`) or the RL form R(d) = d(α − β log d) (`form="rl"`; points with d = 0 add
    nothing to either fit)."""
    d_t, r_t = torch.tensor(d, dtype=torch.float64), torch.tensor(r, dtype=torch.float64)
    if form not in ("bon", "rl"):
        raise ValueError(f"form must be 'bon' or 'rl', got {form!r}")
    second = d_t**2 if form == "bon" else d_t * torch.log(d_t.clamp_min(1e-12))
    design = torch.stack([d_t, -second], 1)
    coef = torch.linalg.lstsq(design, r_t[:, None]).solution[:, 0]
    resid = r_t - design @ coef
    ss_tot = float(((r_t - r_t.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"alpha": float(coef[0]), "beta": float(coef[1]), "r2": r2}


def _mean_sd(curves: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(curves, dtype=torch.float64)  # (seeds, points)
    return t.mean(0), (t.std(0) if t.shape[0] > 1 else torch.zeros(t.shape[1], dtype=torch.float64))


def _judge_points(c: dict, peak: int) -> dict:
    """Each judge's accuracy and the judges-agree fraction (seed means) at the start, at the gold peak and at the
    end of one curve, with the final sd over seeds; {} for results written before judges were recorded."""
    if "judges_agree" not in c:
        return {}
    out = {"judges_start": {}, "judges_peak": {}, "judges_final": {}, "judges_final_sd": {}}
    for name, curves in [*c["judges"].items(), ("judges_agree", c["judges_agree"])]:
        mean, sd = _mean_sd(curves)
        out["judges_start"][name], out["judges_peak"][name] = float(mean[0]), float(mean[peak])
        out["judges_final"][name], out["judges_final_sd"][name] = float(mean[-1]), float(sd[-1])
    return out


def summarize(results: dict) -> list[dict]:
    """One row per (family, optimizer, aggregate): peak gold of the seed-mean curve, where, final gold ± sd, and
    the held-out judges' accuracies and agreement at the start, at the gold peak and at the end."""
    rows = []
    for fam, res in results["families"].items():
        bon = res["best_of_n"]
        for name, c in bon["aggregates"].items():
            mean, _ = _mean_sd(c["gold"])
            final = torch.tensor([g[-1] for g in c["gold"]], dtype=torch.float64)
            i = int(mean.argmax())
            rows.append({"family": fam, "optimizer": "best-of-N", "aggregate": name, "peak_gold": float(mean[i]),
                         "peak_at": f"√KL={bon['sqrt_kl'][i]:.2f} (n={bon['n'][i]})", "final_gold": float(final.mean()),
                         "final_sd": float(final.std()) if len(final) > 1 else 0.0,
                         "final_proxy": float(_mean_sd(c["proxy"])[0][-1]),
                         **{f"fit_{k}": v for k, v in gao_fit(bon["sqrt_kl"], mean.tolist()).items()},
                         **_judge_points(c, i)})
        for reg, by_agg in res["reno"].items():
            for name, c in by_agg.items():
                mean, _ = _mean_sd(c["gold"])
                final = torch.tensor([g[-1] for g in c["gold"]], dtype=torch.float64)
                i = int(mean.argmax())
                rows.append({"family": fam, "optimizer": f"ReNO λ={reg}", "aggregate": name, "peak_gold": float(mean[i]),
                             "peak_at": f"iteration {i}", "final_gold": float(final.mean()),
                             "final_sd": float(final.std()) if len(final) > 1 else 0.0,
                             "final_proxy": float(_mean_sd(c["proxy"])[0][-1]),
                             "alarms": f"{sum(c['alarm'])}/{len(c['alarm'])}", **_judge_points(c, i)})
    return rows


def table_markdown(rows: list[dict], judges: dict | None = None) -> str:
    """The summary table; with `judges` (results["judges"]) a header naming them and the all-judges rule."""
    head = ""
    if judges:
        skipped = "".join(f" {n}." for n in judges.get("notes", []))
        unsteered = ", ".join(f"{'all judges' if k == 'judges_agree' else k} {v:.1%}"
                              for k, v in judges.get("unsteered", {}).items())
        head = (f"Held-out judges (never optimized; the gold reward's classifier is `mnist-judge`): "
                f"{', '.join(f'`{j}`' for j in judges['used'])}.{skipped} Accuracy on the target of unsteered "
                f"samples: {unsteered}. Judges agree: the fraction of samples every judge assigns to the target "
                f"(best-of-N: the expected value for the best-of-n sample). {ALL_JUDGES_RULE}\n\n")
    with_judges = any("judges_final" in r for r in rows)
    lines = ["| proxy | optimizer | aggregate | peak Δgold | peak at | final Δgold (± sd over seeds) | final Δproxy | "
             "Gao fit α, β, R² / monitor alarms |" + (" judges agree: start → at peak → final (± sd) | "
                                                      "final accuracy per judge |" if with_judges else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if with_judges else "")]
    for r in rows:
        extra = (f"α={r['fit_alpha']:.3f}, β={r['fit_beta']:.3f}, R²={r['fit_r2']:.2f}" if "fit_alpha" in r
                 else f"alarm in {r['alarms']} seeds")
        line = (f"| {r['family']} | {r['optimizer']} | {r['aggregate']} | {r['peak_gold']:+.3f} | {r['peak_at']} | "
                f"{r['final_gold']:+.3f} ± {r['final_sd']:.3f} | {r['final_proxy']:+.3f} | {extra} |")
        if with_judges:
            a = "judges_agree"
            per_judge = ", ".join(f"{j} {v:.1%}" for j, v in r.get("judges_final", {}).items() if j != a)
            line += (f" {r['judges_start'][a]:.1%} → {r['judges_peak'][a]:.1%} → {r['judges_final'][a]:.1%} ± "
                     f"{r['judges_final_sd'][a]:.1%} | {per_judge} |" if "judges_final" in r else " — | — |")
        lines.append(line)
    return head + "\n".join(lines) + "\n"


def _plot(ax, x, c, name):
    for key, style in (("gold", "-"), ("proxy", "--")):
        mean, sd = _mean_sd(c[key])
        ax.plot(x, mean, style, color=AGG_STYLE.get(name), label=f"{name} {key}")
        if key == "gold":
            ax.fill_between(x, mean - sd, mean + sd, color=AGG_STYLE.get(name), alpha=0.12, lw=0)


def plot(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(results["families"])
    fig, axes = plt.subplots(1, len(fams), figsize=(5.5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        bon = results["families"][fam]["best_of_n"]
        for name, c in bon["aggregates"].items():
            _plot(ax, bon["sqrt_kl"], c, name)
        ax.axhline(0, color="k", lw=0.5)
        ax.set(title=f"best-of-N, {fam} proxies", xlabel="√KL_bon (nats^½)", ylabel="Δ reward (sd of unsteered)")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths = [out_dir / "bon.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    regs = list(results["families"][fams[0]]["reno"])
    fig, axes = plt.subplots(len(regs), len(fams), figsize=(5.5 * len(fams), 3.6 * len(regs)), squeeze=False)
    for j, fam in enumerate(fams):
        for i, reg in enumerate(regs):
            ax = axes[i][j]
            for name, c in results["families"][fam]["reno"][reg].items():
                _plot(ax, list(range(len(c["gold"][0]))), c, name)
            ax.axhline(0, color="k", lw=0.5)
            ax.set(title=f"ReNO λ={reg}, {fam} proxies", xlabel="iteration", ylabel="Δ reward (sd of unsteered)")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out_dir / "reno.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    if all("judges_agree" in c for fam in fams for c in results["families"][fam]["best_of_n"]["aggregates"].values()):
        paths.append(_plot_judges(results, out_dir / "judges.png", plt))
    return paths


def _plot_judges(results: dict, path: Path, plt) -> Path:
    """Judges agree (every held-out judge: the target) along each curve: best-of-N vs √KL, ReNO vs iteration."""
    fams = list(results["families"])
    regs = list(results["families"][fams[0]]["reno"])
    fig, axes = plt.subplots(1 + len(regs), len(fams), figsize=(5.5 * len(fams), 3.4 * (1 + len(regs))),
                             squeeze=False)
    for j, fam in enumerate(fams):
        res = results["families"][fam]
        panels = [(axes[0][j], res["best_of_n"]["sqrt_kl"], res["best_of_n"]["aggregates"], "√KL_bon (nats^½)",
                   f"best-of-N, {fam} proxies")]
        panels += [(axes[1 + i][j], None, res["reno"][reg], "iteration", f"ReNO λ={reg}, {fam} proxies")
                   for i, reg in enumerate(regs)]
        for ax, x, by_agg, xlabel, title in panels:
            for name, c in by_agg.items():
                if "judges_agree" not in c:
                    continue
                mean, sd = _mean_sd(c["judges_agree"])
                xs = x if x is not None else list(range(len(mean)))
                ax.plot(xs, mean, color=AGG_STYLE.get(name), label=name)
                ax.fill_between(xs, mean - sd, mean + sd, color=AGG_STYLE.get(name), alpha=0.12, lw=0)
            ax.set(title=title, xlabel=xlabel, ylabel="judges agree", ylim=(-0.02, 1.02))
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"held-out judges: {', '.join(results.get('judges', {}).get('used', []))}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    rows = summarize(results)
    results["summary"] = rows
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_nan_safe) + "\n")
    (out_dir / "table.md").write_text(table_markdown(rows, results.get("judges")))
    paths = dict(zip(("bon", "reno", "judges"), plot(results, out_dir)))
    return {"results": out_dir / "results.json", "table": out_dir / "table.md", **paths}


def _nan_safe(obj):
    return None if isinstance(obj, float) and math.isnan(obj) else repr(obj)


def add_result(parts: dict, spent: dict, result, judges) -> None:
    """Append one Result's proxy scores, each judge's hits and log p, and judges-agree to `parts` (lists of
    tensors per column), and its cost to `spent` (the benchmarks' per-seed accumulation)."""
    parts["proxy"].append(result.scores.float())
    parts["judges_agree"].append(result.heldout_scores["judges_agree"])
    for j in judges:
        parts[f"{j}/acc"].append(result.heldout_scores[f"{j}/acc"])
        parts[f"{j}/logp"].append(result.heldout_scores[j])
    spent["nfe"] += result.spent["nfe"]
    spent["backward"] += result.spent["backward"]
    spent["n"] += result.samples.shape[0]


def judge_columns(seeds: dict, judges) -> dict:
    """Per judge accuracy and log p, and judges agree, as mean ± sd over the per-seed means in `seeds`."""
    out = {"judges": {}}
    for j in judges:
        acc, acc_sd = mean_sd(seeds[f"{j}/acc"])
        logp, logp_sd = mean_sd(seeds[f"{j}/logp"])
        out["judges"][j] = {"acc": acc, "acc_sd": acc_sd, "logp": logp, "logp_sd": logp_sd}
    out["judges_agree"], out["judges_agree_sd"] = mean_sd(seeds["judges_agree"])
    return out
