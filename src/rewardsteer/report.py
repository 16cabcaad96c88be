"""What a run leaves behind for a person: image grids, a trace plot, and a three-line summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .monitor import alarm_watched, monitor_lines
from .result import JUDGES_AGREE, Result


def image_grid(images: torch.Tensor, nrow: int, pad: int = 2, scale: int = 2) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> a PIL grid with `nrow` images per row, upscaled `scale`× for viewing."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 0.5)
    for i in range(n):
        r, k = divmod(i, nrow)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    arr = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if c == 1 else arr)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def save_before_after(result: Result, path: Path) -> Path:
    """Top row: the unsteered start; bottom row: the steered best samples."""
    k = min(len(result.samples), len(result.initial_samples), 16)
    both = torch.cat([result.initial_samples[:k].cpu().float(), result.samples[:k].cpu().float()])
    image_grid(both, nrow=k).save(path)
    return path


def plot_trace(result: Result, path: Path) -> Path:
    """Optimized score (solid) and held-out scores (dashed) against NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    nfe = [row["nfe"] for row in result.trace]
    key = "best" if result.trace and "best" in result.trace[0] else "score"
    ax.plot(nfe, [row[key] for row in result.trace], "-", label=f"objective ({key})")
    for name in result.heldout_scores:
        if alarm_watched(name):
            ax.plot(nfe, [row["heldout"][name] for row in result.trace], "--", label=f"held-out {name}")
    if result.trace and JUDGES_AGREE in result.trace[0]["heldout"]:
        ax.plot(nfe, [row["heldout"][JUDGES_AGREE] for row in result.trace], ":", color="black",
                label="judges agree (fraction)")
    ax.set_xlabel("NFE (generator evaluations)")
    ax.set_ylabel("score (mean over samples)")
    ax.set_title(f"{result.method}: {result.stopped}")
    ax.legend(fontsize=8)
    ess = [(row["nfe"], row["ess"]) for row in result.trace if "ess" in row]
    if ess:  # particle methods: effective sample size per scored step, on a second axis
        ax2 = ax.twinx()
        ax2.plot(*zip(*ess), ":", color="gray")
        ax2.set_ylabel("ESS (dotted, particles)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_lines(result: Result) -> list[str]:
    s = result.summary()
    sp = s["spent"]
    lines = [f"score ({result.method}, {s['stopped']}): {s['score'][0]:.3f} -> {s['score'][1]:.3f}"]
    held = ", ".join(f"{k}: {a:.3f} -> {b:.3f}" for k, (a, b) in s["heldout"].items()
                     if not k.startswith("diversity")) or "none"
    lines.append(f"held-out {held}")
    if "judges" in s:
        accs = ", ".join(f"{k} {a:.0%} -> {b:.0%}" for k, (a, b) in s["judges"].items())
        a, b = s["judges_agree"]
        lines.append(f"judges (target class): {accs}; all agree {a:.0%} -> {b:.0%}")
    lines.append(f"cost: {sp['nfe']} NFE, {sp['backward']} backward, {sp['reward_calls']} reward calls, "
                 f"{sp['seconds']:.1f} s, peak memory {sp['peak_memory_mb']:.0f} MB, {sp['skipped']} skipped")
    lines.extend(monitor_lines(result.overoptimization))
    return lines


def write_report(result: Result, out_dir: str | Path) -> dict[str, Path]:
    out = result.save(out_dir)
    return {"result": out / "result.json", "grid": save_before_after(result, out / "grid.png"),
            "trace": plot_trace(result, out / "trace.png")}
