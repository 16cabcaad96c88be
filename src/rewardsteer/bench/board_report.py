"""The leaderboard's files: leaderboard.json (the summary and every cell), leaderboard.md (tables) and
leaderboard.png (success against measured compute, one line per method)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .leaderboard import BACKWARD_COST, REFERENCE


def fmt(x, digits: int = 0) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def method_rows(summary: dict) -> list[str]:
    ref = summary["reference"]
    budgets = sorted({int(b) for m in summary["methods"].values() for b in m["budgets"]})
    head = ("| method | " + " | ".join(f"B={b}" for b in budgets)
            + " | compute to reach best-of-N's top | × less than best-of-N | the same in network rows"
            + " | diversity (× real) |")
    rows = [head, "|" + "---|" * (len(budgets) + 5)]
    for name, m in summary["methods"].items():
        cells = []
        for b in budgets:
            r = m["budgets"].get(str(b))
            cells.append("" if r is None else f"{100 * r['rate']:.0f}% ± {100 * r['sd_over_seeds']:.0f}")
        reach = m.get("compute_to_reach_reference")
        ratio = fmt(ref["compute"] / reach, 1) if ref and reach and ref.get("compute") else "—"
        reach_rows = m.get("rows_to_reach_reference")
        ratio_rows = fmt(ref["compute"] / reach_rows, 1) if ref and reach_rows and ref.get("compute") else "—"
        div = m.get("diversity_ratio") or {}
        div_text = fmt(sum(div.values()) / len(div), 2) if div else "—"
        reached = fmt(reach) if reach else "not reached"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {reached} | {ratio} | {ratio_rows} | {div_text} |")
    return rows


def write(summary: dict, records: list[dict], out: str | Path, title: str, notes: list[str]) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ref = summary["reference"]
    if ref is not None and REFERENCE in summary["methods"]:
        ref["compute"] = summary["methods"][REFERENCE]["budgets"][str(ref["budget"])]["compute"]
    (out / "leaderboard.json").write_text(json.dumps({"summary": summary, "cells": [
        {k: v for k, v in r.items() if k != "features"} for r in records]}, indent=1) + "\n")
    lines = [f"# {title}", "", *notes, "",
             f"Success rate (all outputs of all targets and seeds) per per-output budget B in NFE-equivalents "
             f"(NFE + {BACKWARD_COST} × backward passes), ± the sd over seeds of the per-seed rate.", ""]
    if ref is not None:
        lines += [f"Reference: best-of-N at B = {ref['budget']} reaches {100 * ref['rate']:.1f}%.", ""]
    lines += method_rows(summary)
    (out / "leaderboard.md").write_text("\n".join(lines) + "\n")
    plot(summary, out / "leaderboard.png", title)
    return {"json": out / "leaderboard.json", "md": out / "leaderboard.md", "png": out / "leaderboard.png"}


def plot(summary: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, m in summary["methods"].items():
        pts = sorted((b["compute"], b["rate"]) for b in m["budgets"].values())
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "-o" if name == REFERENCE else "-", ms=3,
                lw=2.2 if name == REFERENCE else 1.2, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"measured compute per output (NFE + {BACKWARD_COST}·backward)")
    ax.set_ylabel("success (%) under the gold rule")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
