"""The over-optimization benchmark's report: Gao et al.'s functional fit, the summary table, the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

AGG_STYLE = {"single": "tab:gray", "mean": "tab:blue", "wco": "tab:red", "uwo": "tab:green"}


def gao_fit(d: list[float], r: list[float]) -> dict:
    """Least-squares fit of R(d) = d(α − βd), d = √KL (Gao et al. 2023, best-of-n form), with R²."""
    d_t, r_t = torch.tensor(d, dtype=torch.float64), torch.tensor(r, dtype=torch.float64)
    design = torch.stack([d_t, -d_t**2], 1)
    coef = torch.linalg.lstsq(design, r_t[:, None]).solution[:, 0]
    resid = r_t - design @ coef
    ss_tot = float(((r_t - r_t.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"alpha": float(coef[0]), "beta": float(coef[1]), "r2": r2}


def _mean_sd(curves: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor(curves, dtype=torch.float64)  # (seeds, points)
    return t.mean(0), (t.std(0) if t.shape[0] > 1 else torch.zeros(t.shape[1], dtype=torch.float64))


def summarize(results: dict) -> list[dict]:
    """One row per (family, optimizer, aggregate): peak gold of the seed-mean curve, where, final gold ± sd."""
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
                         **{f"fit_{k}": v for k, v in gao_fit(bon["sqrt_kl"], mean.tolist()).items()}})
        for reg, by_agg in res["reno"].items():
            for name, c in by_agg.items():
                mean, _ = _mean_sd(c["gold"])
                final = torch.tensor([g[-1] for g in c["gold"]], dtype=torch.float64)
                i = int(mean.argmax())
                rows.append({"family": fam, "optimizer": f"ReNO λ={reg}", "aggregate": name, "peak_gold": float(mean[i]),
                             "peak_at": f"iteration {i}", "final_gold": float(final.mean()),
                             "final_sd": float(final.std()) if len(final) > 1 else 0.0,
                             "final_proxy": float(_mean_sd(c["proxy"])[0][-1]),
                             "alarms": f"{sum(c['alarm'])}/{len(c['alarm'])}"})
    return rows


def table_markdown(rows: list[dict]) -> str:
    lines = ["| proxy | optimizer | aggregate | peak Δgold | peak at | final Δgold (± sd over seeds) | final Δproxy | "
             "Gao fit α, β, R² / monitor alarms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = (f"α={r['fit_alpha']:.3f}, β={r['fit_beta']:.3f}, R²={r['fit_r2']:.2f}" if "fit_alpha" in r
                 else f"alarm in {r['alarms']} seeds")
        lines.append(f"| {r['family']} | {r['optimizer']} | {r['aggregate']} | {r['peak_gold']:+.3f} | {r['peak_at']} | "
                     f"{r['final_gold']:+.3f} ± {r['final_sd']:.3f} | {r['final_proxy']:+.3f} | {extra} |")
    return "\n".join(lines) + "\n"


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
    return paths


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    rows = summarize(results)
    results["summary"] = rows
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=_nan_safe) + "\n")
    (out_dir / "table.md").write_text(table_markdown(rows))
    bon, ren = plot(results, out_dir)
    return {"results": out_dir / "results.json", "table": out_dir / "table.md", "bon": bon, "reno": ren}


def _nan_safe(obj):
    return None if isinstance(obj, float) and math.isnan(obj) else repr(obj)
