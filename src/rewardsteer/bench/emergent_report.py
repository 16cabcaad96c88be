"""docs/benchmarks/emergent.md and its decision-curve plot, from the results `benchmarks/emergent.py` writes."""

from __future__ import annotations

from pathlib import Path

from .emergent import CLASS_SHARE, CONFIDENT_MARGIN, FRECHET_RATIO, REAL_CONFIDENT

SHORT = {"mnist-judge": "CNN", "mnist-judge-vit": "ViT", "mnist-judge-rff": "RFF"}


def yes_no(v) -> str:
    return "n/a" if v is None else ("yes" if v else "**no**")


def prior_table(settings: dict) -> list[str]:
    """One row per sampler setting: each judge's confident share and class-share range, Fréchet, cost, bars."""
    judges = list(REAL_CONFIDENT)
    head = ("| setting | n | " + " | ".join(f"{SHORT[j]} confident (bar ≥ {REAL_CONFIDENT[j] - CONFIDENT_MARGIN:.1%})"
                                          f" / class shares" for j in judges)
            + " | all confident and agree | Fréchet | conditional Fréchet | ratio (bar ≤ 1.5) | realism |"
              " UNet rows / sample (conditional) | seconds | bars met |")
    lines = [head, "|---" * (len(judges) + 10) + "|"]
    for name, r in settings.items():
        m = r["metrics"]
        cells = [f"{m[j]['confident']:.1%} / {m[j]['class_share_min']:.1%}–{m[j]['class_share_max']:.1%}" for j in judges]
        cond = r["conditional_frechet"]
        lines.append(f"| {name} | {r['n']} | " + " | ".join(cells) + f" | {m['all_judges_confident_and_agree']:.1%} | "
                     f"{r['frechet_judge']:.2f} | {'' if cond is None else f'{cond:.2f}'} "
                     f"({r.get('conditional_source', '')}) | "
                     f"{'' if r['frechet_over_conditional'] is None else format(r['frechet_over_conditional'], '.2f')} | "
                     f"{r['realism_mean']:.2f} | {r['rows_per_sample']:.1f} ({r.get('conditional_rows_per_sample', '')}) | "
                     f"{r['seconds']:.0f} | {yes_no(r['all_bars_met'])} |")
    return lines


def outside_band(shares: list[float]) -> str:
    """" (digit 9: 6.8%)" for the digits whose share is outside the class-share bar, "" when none is."""
    out = [f"digit {c}: {v:.1%}" for c, v in enumerate(shares) if not CLASS_SHARE[0] <= v <= CLASS_SHARE[1]]
    return f" ({', '.join(out)})" if out else ""


def bar_lines(settings: dict) -> list[str]:
    out = []
    for name, r in settings.items():
        parts = [f"{SHORT[j]} confident {yes_no(b['confident'])}, class shares {yes_no(b['class_shares'])}"
                 + outside_band(r["metrics"][j]["class_shares"]) for j, b in r["bars"].items() if isinstance(b, dict)]
        out.append(f"- {name}: " + "; ".join(parts) + f"; Fréchet {yes_no(r['bars']['frechet'])}.")
    return out


def decision_table(settings: dict, at=(0.0, 0.1, 0.2, 0.3, 0.5, 0.75)) -> list[str]:
    lines = ["| setting | " + " | ".join(f"t = {t:g}" for t in at) + " |", "|---" * (len(at) + 1) + "|"]
    for name, r in settings.items():
        c = r["decision_curve"]
        idx = [min(range(len(c["t"])), key=lambda i, t=t: abs(c["t"][i] - t)) for t in at]
        lines.append(f"| {name}: class from x_t | " + " | ".join(f"{c['p_xt_class_is_final'][i]:.0%}" for i in idx) + " |")
        lines.append(f"| {name}: class of x̂0 | " + " | ".join(f"{c['p_x0_class_is_final'][i]:.0%}" for i in idx) + " |")
    return lines


def particle_table(rows: list[dict]) -> list[str]:
    lines = ["| sampler | method | outputs × particles | all judges on target | returned class ≠ class at step 0 |"
             " returned class ≠ unsteered ODE class | library NFE / output | UNet rows / output | seconds |",
             "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['method']} | {r['n']} × {r['particles']} | {r['judges_agree_target']:.0%} | "
                     f"{r['differs_from_step0_class']:.0%} | {r['differs_from_unsteered_ode_class']:.0%} | "
                     f"{r['library_nfe_per_output']:.0f} | {r['unet_rows_per_output']:.0f} | {r['seconds']:.0f} |")
    return lines


def markdown(result: dict) -> str:
    settings, particles = result["settings"], result.get("particles") or {}
    lines = ["# The emergent-digit sampler: prior bars, how the digit is decided, particles that change it", "",
             "`models.emergent_sampler` (`rewardsteer.bundled.emergent`): cond=None follows the posterior mixture of "
             "`mnist-flow`'s guided class-conditional velocities, weighted by `mnist-flow-tclassifier`'s "
             "π_t(c | x_t), so the digit is decided while sampling instead of at step 0 (`flow_sampler`'s mixture "
             "prior). Issue 28, item 1.", "",
             "Commands: " + "; ".join(f"`{c}`" for c in result["commands"]) + ".", "",
             "## Prior bars", "",
             f"Bars (issue 28): each judge confident (max probability ≥ 0.9) on at least its share of real test digits "
             f"less {round(CONFIDENT_MARGIN * 100)} points (CNN 98.9%, ViT 96.7%, RFF 93.7%); every class {CLASS_SHARE[0]:.0%}–"
             f"{CLASS_SHARE[1]:.0%} under every judge; Fréchet distance in `mnist-judge` features to the 10k test "
             f"digits ≤ {FRECHET_RATIO}× the same sampler's class-conditional samples' (same steps, guidance, eta and "
             "number of samples; *measured* in this run, or *docs* = docs/models.md's number). *UNet rows*: one "
             "class-conditional or null evaluation of one sample; the guided conditional sampler costs 2 per step.", "",
             *prior_table(settings), "", *bar_lines(settings), ""]
    if result.get("notes"):
        lines += [*(f"- {n}" for n in result["notes"]), ""]
    lines += ["## How the digit is decided", "",
              "At step i (t = i / T; 0 = noise): how often the class predicted from x_t (argmax π_t(c | x_t)) and the "
              "class of the x0-prediction (`mnist-judge` on decode(x̂0)) equal the final class (`mnist-judge` on the "
              "sample). On `flow_sampler`'s mixture prior the class is the class code's, fixed at step 0, so both "
              "would read 100% from the first step.", "", *decision_table(settings), "",
              f"![decision curve]({result.get('plot', 'emergent.png')})", ""]
    if particles:
        lines += ["## Can particle methods change the digit?", "",
                  f"FK steering (max potential, λ = 10, resampling every 5 steps) and SVDD toward digit "
                  f"{particles['target']} (reward: mean log p({particles['target']} | x) of the 5 proxies), "
                  f"{particles['steps']} stochastic steps (eta = 1), cond=None, seed {particles['seed']}. *Class at step 0*: "
                  "the class predicted from the returned sample's ancestor x_0 (emergent: argmax π_0; mixture prior: the "
                  "class code's digit). *Unsteered ODE class*: `mnist-judge`'s class of the eta = 0 sample from the same "
                  "x_0, what the start noise alone decides. Returned classes by `mnist-judge`.", "",
                  *particle_table(particles["runs"]), ""]
    return "\n".join(lines) + "\n"


def plot(settings: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, r in settings.items():
        c = r["decision_curve"]
        line = axes[0].plot(c["t"], c["p_xt_class_is_final"], marker="o", ms=3, label=f"{name} (n={r['n']})")[0]
        axes[0].plot(c["t"], c["mean_posterior_of_final"], ls=":", color=line.get_color())
        axes[1].plot(c["t"], c["p_x0_class_is_final"], marker="o", ms=3, color=line.get_color(), label=name)
    axes[0].set_title("class from x_t: argmax π_t (dotted: mean π_t of the final class)", fontsize=9)
    axes[1].set_title("class of x̂0 (mnist-judge)", fontsize=9)
    for ax in axes:
        ax.axhline(0.1, color="grey", lw=0.5, ls="--")
        ax.set_xlabel("t of the step (0 = noise, 1 = data)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("P(predicted class = final class)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def models_section(result: dict) -> str:
    """docs/models.md's short section on the emergent sampler (between `EMERGENT_BEGIN` / `EMERGENT_END`)."""
    settings, particles = result["settings"], result.get("particles") or {}
    lines = ["## The emergent-digit sampler: `models.emergent_sampler`", "",
             "`flow_sampler`'s mixture prior draws the class code at step 0, so the digit is fixed before sampling starts "
             "and particle methods (FK, DAS, SVDD) can only select among particles, never change a digit. "
             "`models.emergent_sampler(num_steps=20, guidance=2.0, eta=1.0)` samples the same mixture of guided "
             "class-conditionals through its exact velocity, v = v_u + w·(Σ_c π_t(c | x_t)·v(x_t | c) − v_u), with "
             "π_t ∝ p_t(c | x_t)^w / Z_c(t) from `mnist-flow-tclassifier` (a 0.35M-parameter noise-conditional "
             "classifier trained on the flow's path: `python -m rewardsteer.train.time_classifier`; its card holds "
             "the log Z_c(t) table) — derivation in `rewardsteer.bundled.emergent`. A class cond is the guided "
             "conditional as before. It costs more network rows than the conditional sampler's 2 per step: classes "
             "with π_c < 10⁻³·max π are skipped, so early steps evaluate several classes and late ones about one.", "",
             "| setting | n | " + " | ".join(f"{SHORT[j]} confident" for j in REAL_CONFIDENT) +
             " | class shares (all judges) | Fréchet / conditional | UNet rows per sample | bars met |",
             "|---" * (len(REAL_CONFIDENT) + 6) + "|"]
    for name, r in settings.items():
        m = r["metrics"]
        lo = min(m[j]["class_share_min"] for j in REAL_CONFIDENT)
        hi = max(m[j]["class_share_max"] for j in REAL_CONFIDENT)
        ratio = r["frechet_over_conditional"]
        lines.append(f"| {name} | {r['n']} | " + " | ".join(f"{m[j]['confident']:.1%}" for j in REAL_CONFIDENT) +
                     f" | {lo:.1%}–{hi:.1%} | {r['frechet_judge']:.2f} / {r['conditional_frechet'] or 0:.2f}"
                     f" = {'' if ratio is None else f'{ratio:.2f}'} | {r['rows_per_sample']:.0f} | "
                     f"{yes_no(r['all_bars_met'])} |")
    for name, r in settings.items():
        shares = [r["metrics"][j]["class_shares"] for j in REAL_CONFIDENT]  # (judges, 10)
        misses = [f"digit {c} at {min(col):.1%}–{max(col):.1%}" for c, col in enumerate(zip(*shares))
                  if any(not CLASS_SHARE[0] <= v <= CLASS_SHARE[1] for v in col)]
        if misses:
            lines.append(f"\n{name}: outside the class-share band under some judge: {', '.join(misses)}.")
    lines += ["", "Bars (issue 28): confident ≥ real digits' share − 2 points (CNN 96.9%, ViT 94.7%, RFF 91.7%), "
              "class shares 7–13%, Fréchet ≤ 1.5× conditional.", ""]
    for name, r in settings.items():
        c = r["decision_curve"]
        i3 = min(range(len(c["t"])), key=lambda i: abs(c["t"][i] - 0.3))
        lines.append(f"- {name}: the class predicted from x_t is the final class {c['p_xt_class_is_final'][0]:.0%} of the "
                     f"time at t = 0 and {c['p_xt_class_is_final'][i3]:.0%} at t = {c['t'][i3]:g}.")
    for r in particles.get("runs", []):
        lines.append(f"- {r['method'].upper()} toward {particles['target']} on the {r['sampler']} sampler: the returned "
                     f"class differs from the class at step 0 for {r['differs_from_step0_class']:.0%} of outputs "
                     f"(all judges on target: {r['judges_agree_target']:.0%}).")
    lines += ["", "Full numbers, the decision curve and commands: [docs/benchmarks/emergent.md](benchmarks/emergent.md)."]
    return "\n".join(lines)
