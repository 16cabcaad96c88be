"""Analytic attributes of digit images: the gold of the hard targets (no network involved).

Input: (N, 1, 28, 28) images in [0, 1] (white ink on black, MNIST convention), any float dtype; output: a
dict of (N,) float32 tensors. Everything is batched torch, deterministic, and not differentiable by design
(thresholds and thinning): the learned proxy `mnist-attr-proxy` (`models.attribute_regressor()`, trained by
`rewardsteer.train.attr_proxy`) is the differentiable, hackable stand-in.

Coordinates: x = column (grows to the right), y = row (grows DOWNWARD, image convention).
Ink = pixels > INK (0.5).

- ink:        Σ intensity, the soft ink mass in pixels (a real digit: ~70-160).
- area:       number of ink pixels.
- thickness:  area / skeleton length (pixels), the mean stroke width in pixels. The skeleton is the
              Zhang-Suen thinning (Zhang & Suen 1984, CACM 27(3)) of the ink mask, its length the number of
              skeleton pixels. A straight bar of width w gives about w (tests/test_targets.py).
- slant:      the horizontal shear of the ink, −μ11/μ02 from the intensity-weighted central second moments
              (μ11 = E[(x−x̄)(y−ȳ)], μ02 = E[(y−ȳ)²]); it is dx per unit of height going UP, i.e. tan of the
              lean from vertical: > 0 leans right (top to the right, like '/'), < 0 leans left ('\\').
              The classic deskew (shear x by −slant·(ȳ−y)) makes it 0. slant_deg = atan(slant) in degrees.
- height, width: rows / columns spanned by ink pixels (bounding box, inclusive), 0 for a blank image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

INK = 0.5
NAMES = ("ink", "area", "thickness", "slant", "height", "width")


def _neighbours(m: torch.Tensor) -> list[torch.Tensor]:
    """The 8 neighbours P2..P9 of every pixel of a (N, H, W) 0/1 uint8 mask, clockwise from north."""
    p = F.pad(m, (1, 1, 1, 1))
    h, w = m.shape[-2:]
    at = lambda dy, dx: p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]  # noqa: E731
    return [at(-1, 0), at(-1, 1), at(0, 1), at(1, 1), at(1, 0), at(1, -1), at(0, -1), at(-1, -1)]


def skeleton(mask: torch.Tensor, max_iter: int = 50) -> torch.Tensor:
    """Zhang-Suen thinning of a (N, H, W) bool mask -> (N, H, W) bool one-pixel-wide skeleton.

    Each pass has two sub-iterations; a foreground pixel P1 with neighbours P2..P9 is deleted when
    2 ≤ B ≤ 6 (B = number of ink neighbours), A = 1 (A = number of 0→1 transitions around P2, P3, ..., P9, P2),
    and (sub-iteration 1) P2·P4·P6 = 0 and P4·P6·P8 = 0, or (sub-iteration 2) P2·P4·P8 = 0 and P2·P6·P8 = 0.
    """
    m = mask.to(torch.uint8)
    for _ in range(max_iter):
        changed = False
        for sub in (0, 1):
            n = _neighbours(m)
            b = sum(n)
            ring = n + n[:1]
            a = sum(((ring[i] == 0) & (ring[i + 1] == 1)).to(torch.uint8) for i in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if sub == 0:
                c = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                c = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            delete = (m == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if bool(delete.any()):
                changed = True
                m = m * (~delete).to(torch.uint8)
        if not changed:
            break
    return m.bool()


def _extent(any_ink: torch.Tensor) -> torch.Tensor:
    """(N, L) bool: is there ink in row/column l -> (N,) span last − first + 1 (0 when none)."""
    idx = torch.arange(any_ink.shape[1], device=any_ink.device)
    first = torch.where(any_ink, idx, any_ink.shape[1]).min(1).values
    last = torch.where(any_ink, idx, -1).max(1).values
    return (last - first + 1).clamp(min=0).float()


@torch.no_grad()
def measure(images: torch.Tensor, chunk: int = 8192) -> dict[str, torch.Tensor]:
    """{attribute: (N,) float32} for (N, 1, 28, 28) images in [0, 1] (see the module docstring)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected (N, 1, H, W) images, got {tuple(images.shape)}")
    parts = [_measure(part) for part in images.split(chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in NAMES} | {
        "slant_deg": torch.rad2deg(torch.atan(torch.cat([p["slant"] for p in parts])))}


def _measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    x = images[:, 0].float().clamp(0, 1)  # (N, H, W)
    n, h, w = x.shape
    mask = x > INK
    area = mask.flatten(1).sum(1).float()
    skel = skeleton(mask).flatten(1).sum(1).float()
    thickness = torch.where(skel > 0, area / skel.clamp(min=1), torch.zeros_like(area))

    ink = x.flatten(1).sum(1)
    ys = torch.arange(h, device=x.device, dtype=x.dtype)[:, None].expand(h, w)
    xs = torch.arange(w, device=x.device, dtype=x.dtype)[None, :].expand(h, w)
    mass = ink.clamp(min=1e-6)[:, None, None]
    xbar = (x * xs).sum((1, 2), keepdim=True) / mass
    ybar = (x * ys).sum((1, 2), keepdim=True) / mass
    mu11 = (x * (xs - xbar) * (ys - ybar)).sum((1, 2)) / mass[:, 0, 0]
    mu02 = (x * (ys - ybar) ** 2).sum((1, 2)) / mass[:, 0, 0]
    slant = torch.where(mu02 > 1e-3, -mu11 / mu02.clamp(min=1e-3), torch.zeros_like(mu02))

    return {"ink": ink, "area": area, "thickness": thickness, "slant": slant,
            "height": _extent(mask.any(2)), "width": _extent(mask.any(1))}


def shear(images: torch.Tensor, s: float) -> torch.Tensor:
    """Images sheared so that their slant grows by about `s` (x' = x + s·(yc − y), bilinear, about the centre):
    a test helper for the sign convention, plain torch (no torchvision)."""
    n, _, h, w = images.shape
    # affine_grid maps output coords to input coords in normalized units; y_norm grows downward like rows.
    theta = images.new_tensor([[1.0, s * h / w, 0.0], [0.0, 1.0, 0.0]]).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def bar(width: int, length: int = 18, angle_deg: float = 0.0, size: int = 28) -> torch.Tensor:
    """A (1, 1, size, size) synthetic stroke: a bar `width` px wide, `length` px long, leaning `angle_deg`
    from vertical (> 0 leans right), for checking thickness and slant against known values."""
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = size // 2  # a pixel centre, so a vertical bar of width w covers exactly w columns
    t = math.radians(angle_deg)
    # unit vector along the bar going up-and-right: (dx, dy) = (sin t, −cos t)
    along = (xs - c) * math.sin(t) - (ys - c) * math.cos(t)
    across = (xs - c) * math.cos(t) + (ys - c) * math.sin(t)
    inside = (along.abs() <= length / 2) & (across >= -width / 2) & (across < width / 2)
    return inside.float()[None, None]
