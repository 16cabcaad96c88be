"""What a run leaves behind for a person: image grids, a trace plot, and a three-line summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .rewards.monitors import BAND_SUFFIX, JUDGES_AGREE, monitor_lines, plotted


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


def labelled_grid(rows: list[tuple[str, torch.Tensor, torch.Tensor | None]], pad: int = 2,
                  scale: int | None = None) -> Image.Image:
    """Rows of (label, (N, C, H, W) images in [0, 1], (N,) scores or None) -> one PIL image: the label at the
    left of each row, each image's score under it. Small images are upscaled (2× up to 64 px) for viewing."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w = rows[0][1].shape[-2:]
    scale = scale or (2 if max(h, w) <= 64 else 1)
    ncol = max(len(images) for _, images, _ in rows)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    text_h = probe.textbbox((0, 0), "-0.00", font=font)[3] + 2
    label_w = max(probe.textbbox((0, 0), label, font=font)[2] for label, _, _ in rows) + 8
    cell_w, cell_h = max(w * scale, probe.textbbox((0, 0), "-00.00", font=font)[2]) + pad, h * scale + text_h + pad
    canvas = Image.new("RGB", (label_w + ncol * cell_w + pad, len(rows) * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images, scores) in enumerate(rows):
        top = pad + r * cell_h
        draw.text((4, top + h * scale // 2 - text_h // 2), label, fill=(0, 0, 0), font=font)
        for i in range(len(images)):
            left = label_w + i * cell_w
            canvas.paste(image_grid(images[i:i + 1], nrow=1, pad=0, scale=scale).convert("RGB"), (left, top))
            if scores is not None:
                value = float(scores[i])
                draw.text((left, top + h * scale + 1), f"{value:.2f}" if math.isfinite(value) else "nan",
                          fill=(0, 0, 0), font=font)
    return canvas


def save_before_after(result, path: Path) -> Path:
    """Two labelled rows, each sample's objective score under it: "before" (the unsteered start) and "after"
    (the steered outputs), up to 16 each."""
    k = min(len(result.samples), len(result.initial_samples), 16)
    labelled_grid([("before", result.initial_samples[:k].cpu().float(), result.initial_scores[:k].cpu()),
                   ("after", result.samples[:k].cpu().float(), result.scores[:k].cpu())]).save(path)
    return path


def plot_trace(result, path: Path) -> Path:
    """Optimized score (solid) and held-out scores (dashed) against NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    nfe = [row["nfe"] for row in result.trace]
    key = "best" if result.trace and "best" in result.trace[0] else "score"
    ax.plot(nfe, [row[key] for row in result.trace], "-", label=f"objective ({key})")
    for name in result.heldout_scores:
        if plotted(name):
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


def summary_lines(result) -> list[str]:
    """The summary the CLI prints (and `Result.summary()` returns as text)."""
    s = result.summary_dict()
    sp = s["spent"]
    lines = [f"score ({result.method}, {s['stopped']}): {s['score'][0]:.3f} -> {s['score'][1]:.3f}"]
    h = s["heldout"]
    held = ", ".join(f"{k}: {a:.3f} -> {b:.3f}" + (f" (in the real-data band {h[k + BAND_SUFFIX][0]:.0%} -> "
                                                   f"{h[k + BAND_SUFFIX][1]:.0%})" if k + BAND_SUFFIX in h else "")
                     for k, (a, b) in h.items() if not k.startswith("diversity") and not k.endswith(BAND_SUFFIX)) or "none"
    lines.append(f"held-out {held}")
    if "judges" in s:
        accs = ", ".join(f"{k} {a:.0%} -> {b:.0%}" for k, (a, b) in s["judges"].items())
        a, b = s["judges_agree"]
        lines.append(f"judges (target class): {accs}; all agree {a:.0%} -> {b:.0%}")
    lines.append(f"cost: {sp['nfe']} NFE, {sp['backward']} backward, {sp['reward_calls']} reward calls, "
                 f"{sp['seconds']:.1f} s, peak memory {sp['peak_memory_mb']:.0f} MB, {sp['skipped']} skipped"
                 + (f" (+{sp['baseline_nfe']} NFE, not charged, for the plain samples of the before row)"
                    if sp.get("baseline_nfe") else ""))
    lines.extend(monitor_lines(result.overoptimization))
    if (warning := nonfinite_warning(result)) is not None:
        lines.append(f"WARNING: {warning}")
    if result.shortfall:
        lines.append(f"WARNING: returned {len(result.samples)} of the n={len(result.samples) + result.shortfall} "
                     f"outputs asked for (stopped: {result.stopped})")
    return lines


def nonfinite_warning(result) -> str | None:
    """What a run whose reward gave NaN or infinite scores must say (None when every score was finite)."""
    sp, scores = result.spent, result.scores.detach().float()
    bad = int(sp.get("skipped", 0))
    if not bad and bool(torch.isfinite(scores).all()):
        return None
    text = (f"{bad} of {sp.get('reward_calls', '?')} reward evaluations were NaN or infinite (or their gradient was) "
            "and were skipped")
    if not bool(torch.isfinite(scores).any()):
        text += "; no output has a finite score: check the reward"
    return text


def write_report(result, out_dir: str | Path) -> dict[str, Path]:
    """`result.save(out_dir, report=True)`: result.json, tensors.safetensors, grid.png (image samples) and trace.png."""
    out = result.save(out_dir, report=True)
    return {"result": out / "result.json", "grid": out / "grid.png", "trace": out / "trace.png"}
