"""Hacking-resistant rewards: the reward averaged over random input transformations.

Expectation over transformation (EOT; Athalye et al. 2018, "Synthesizing robust adversarial examples") and
randomized smoothing (Cohen et al. 2019, "Certified adversarial robustness via randomized smoothing"):
gradient steering (ReNO) finds pixel patterns that fool a classifier without drawing the digit; such patterns
are brittle, and averaging the reward over small shifts, rotations, zooms and pixel noise stops them paying off,
while a real digit keeps its score under all of them.

Notation: x a sample, T_1..T_n random transformations (T_1 = identity when `include_identity`), r_i the wrapped
reward's members. The wrapper's member i scores
    r̃_i(x) = (1/n) Σ_j r_i(T_j(x))
and the wrapped reward's own `combine` (mean, WCO, UWO, ...) reduces the averaged members, so a conservative
aggregate sees each member's smoothed score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.nn import functional as F

from ..core import Reward, select_cond
from ..errors import RewardsteerError
from .base import as_reward


@dataclass(frozen=True)
class TransformSpec:
    """Ranges of the random transformations and how many copies are averaged.

    shift: max translation in pixels (uniform in [−shift, shift], per axis); rotate: max degrees; scale: max
    relative zoom (0.1 = ×[0.9, 1.1]); noise: std of additive Gaussian pixel noise; n: copies averaged.
    include_identity (default True): copy 0 is the untransformed sample. The sample a method returns is the
    untransformed one, so its own score stays in the objective (with weight 1/n, which caps what a brittle
    perturbation can gain); it lowers the estimator's variance; and n = 1 is exactly the wrapped reward.
    """

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    noise: float = 0.0
    n: int = 1
    include_identity: bool = True

    def __post_init__(self):
        for f in ("shift", "rotate", "scale", "noise"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise RewardsteerError(f"transform {f} must be a finite number >= 0, got {v!r}")
        if self.scale >= 1:
            raise RewardsteerError(f"transform scale must be < 1 (a zoom of ×[1 − scale, 1 + scale]), got {self.scale}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise RewardsteerError(f"transform n must be an integer >= 1, got {self.n!r}")

    @property
    def geometric(self) -> bool:
        """Whether any copy is warped (otherwise copies differ by pixel noise only)."""
        return self.shift > 0 or self.rotate > 0 or self.scale > 0


PRESETS = {
    "default": TransformSpec(shift=2, rotate=10, scale=0.1, noise=0.05, n=8),
    "light": TransformSpec(shift=1, rotate=5, scale=0.05, noise=0.02, n=4),
    "none": TransformSpec(),
}
_KEYS = ("shift", "rotate", "scale", "noise", "n", "identity")
_ACCEPTED = f"accepted: a preset ({', '.join(PRESETS)}) then key=value overrides with keys {', '.join(_KEYS)}"


def parse_transforms(spec: str | TransformSpec) -> TransformSpec:
    """A TransformSpec from `"shift=2,rotate=10,scale=0.1,noise=0.05,n=8"`, a preset name (`default`, `light`,
    `none`), or a preset followed by overrides (`"default,n=16"`); `identity=false` drops the untransformed
    copy; a TransformSpec passes through. Anything else raises a one-line RewardsteerError naming the bad part
    (EOT, Athalye et al. 2018)."""
    if isinstance(spec, TransformSpec):
        return spec
    parts = [p.strip() for p in str(spec).split(",")]
    if not any(parts):
        raise RewardsteerError(f"empty transform spec; {_ACCEPTED}")
    base, values = TransformSpec(), {}
    for i, part in enumerate(parts):
        key, eq, raw = (s.strip() for s in part.partition("="))
        if not eq:
            if i == 0 and part in PRESETS:
                base = PRESETS[part]
                continue
            raise RewardsteerError(f"transform spec '{spec}': cannot parse '{part}'; {_ACCEPTED}")
        if key not in _KEYS:
            raise RewardsteerError(f"transform spec '{spec}': unknown key '{key}'; {_ACCEPTED}")
        values[key] = _parse_value(spec, part, key, raw)
    if "identity" in values:
        values["include_identity"] = values.pop("identity")
    return replace(base, **values)


def _parse_value(spec: str, part: str, key: str, raw: str):
    if key == "identity":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise RewardsteerError(f"transform spec '{spec}': '{part}' needs true or false; {_ACCEPTED}")
    try:
        value = int(raw) if key == "n" else float(raw)
    except ValueError:
        kind = "an integer >= 1" if key == "n" else "a number >= 0"
        raise RewardsteerError(f"transform spec '{spec}': '{part}' needs {kind}; {_ACCEPTED}") from None
    if key == "n" and value < 1:
        raise RewardsteerError(f"transform spec '{spec}': '{part}' needs an integer >= 1; {_ACCEPTED}")
    if not (math.isfinite(value) and value >= 0) or (key == "scale" and value >= 1):
        bound = "in [0, 1)" if key == "scale" else ">= 0"
        raise RewardsteerError(f"transform spec '{spec}': '{part}' must be {bound}; {_ACCEPTED}")
    return value


def affine_warp(images: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each image rotated by `angle[i]` degrees and zoomed by `zoom[i]` about its centre, then moved by
    `shift[i] = (dx, dy)` pixels (right, down); bilinear, zero fill outside. Differentiable in the images.

    affine_grid maps each output pixel to the input point it samples, so theta is the inverse map
    p_in = M⁻¹ (p_out − d), written in grid_sample's normalized coordinates (align_corners=False: one pixel is
    2/W wide, centres at (2i + 1)/W − 1), which makes an integer shift move pixels by exactly that many.
    """
    b, _, h, w = images.shape
    work = torch.promote_types(images.dtype, torch.float32)  # grid coordinates need more than fp16/bf16 bits
    x = images.to(work)
    rad = torch.deg2rad(angle.to(x))
    cos, sin = torch.cos(rad) / zoom.to(x), torch.sin(rad) / zoom.to(x)
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (B, 2, 2) M⁻¹, pixels
    to_norm = x.new_tensor([2 / w, 2 / h])
    lin = inv * to_norm[:, None] / to_norm[None, :]  # D M⁻¹ D⁻¹: the same map in normalized units
    trans = -(inv @ shift.to(x)[:, :, None]).squeeze(-1) * to_norm  # −D M⁻¹ d
    theta = torch.cat([lin, trans[:, :, None]], dim=2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(images.dtype)


def random_affine(images: torch.Tensor, spec: TransformSpec, generator: torch.Generator,
                  shared: bool = False) -> torch.Tensor:
    """n randomly transformed copies of every image (EOT, Athalye et al. 2018): rotation, zoom and translation
    (`affine_warp`), then Gaussian pixel noise, clamped to [0, 1]. Copy-major order: row j·B + b is copy j of
    image b; copy 0 is the image itself when `spec.include_identity`.

    Randomness comes only from `generator` (drawn on its device, then moved to the images'). `shared=True`
    draws one transformation per copy and applies it to every image, so the result for an image does not
    depend on the rest of its batch (a fixed function when the generator is re-seeded).
    """
    b = images.shape[0]
    k = spec.n - int(spec.include_identity)  # transformed copies
    if k == 0:
        return images
    m = k if shared else k * b

    def uniform(bound, *shape):  # U(−bound, bound), drawn even when bound = 0 so the random stream is stable
        u = torch.rand((m, *shape), generator=generator, device=generator.device)
        return ((2 * u - 1) * bound).to(images.device)

    angle, zoom, shift = uniform(spec.rotate), 1 + uniform(spec.scale), uniform(spec.shift, 2)
    eps = torch.randn((m, *images.shape[1:]), generator=generator, device=generator.device).to(images)
    if shared:  # one draw per copy, the same for all b images
        angle, zoom, shift, eps = (t.repeat_interleave(b, 0) for t in (angle, zoom, shift, eps))
    x = images.repeat(k, *([1] * (images.ndim - 1)))  # (k·B, C, H, W)
    if spec.geometric:
        x = affine_warp(x, angle, zoom, shift)
    if spec.noise > 0:
        x = (x + spec.noise * eps).clamp(0, 1)
    return torch.cat([images, x]) if spec.include_identity else x  # (n·B, C, H, W)


class TransformedReward(Reward):
    """A reward averaged over random transformations of its input, member by member (EOT, Athalye et al. 2018;
    randomized smoothing, Cohen et al. 2019); the wrapped reward's `combine` then reduces the averages.

    `resample=True` (default): every call draws fresh per-image transformations from the wrapper's own
    generator, seeded at construction, so runs are reproducible; the expectation is estimated anew each step.
    `resample=False`: n transformations drawn once from `seed` and shared by all images, so the reward is a
    fixed function of each sample (best-of-N rankings stay consistent across batches).
    One call on B samples is one call of the wrapped reward on n·B images.
    """

    def __init__(self, reward: Any, spec: TransformSpec | str = "default", seed: int = 0, resample: bool = True):
        self.reward, self.spec = as_reward(reward), parse_transforms(spec)
        self.seed, self.resample = int(seed), resample
        self.name = f"{self.reward.name}+eot"
        self.differentiable = self.reward.differentiable
        self._rng = torch.Generator().manual_seed(self.seed)

    def member_scores(self, samples: torch.Tensor, cond: Any = None) -> dict[str, torch.Tensor]:
        b, n = samples.shape[0], self.spec.n
        rng = self._rng if self.resample else torch.Generator().manual_seed(self.seed)
        copies = random_affine(samples, self.spec, rng, shared=not self.resample)  # (n·B, C, H, W)
        cond = select_cond(cond, torch.arange(b, device=samples.device).repeat(n), b)  # rows follow the copies
        _, members = self.reward.evaluate(copies, cond)  # evaluate checks every member's (n·B,) shape
        return {name: s.reshape(n, b).mean(0) for name, s in members.items()}  # (n, B) -> (B,)

    def combine(self, members: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.reward.combine(members)

    def __repr__(self) -> str:
        return f"TransformedReward({self.reward.name!r}, {self.spec}, seed={self.seed}, resample={self.resample})"


def robust(reward: Any, spec: TransformSpec | str = "default", seed: int = 0, resample: bool = True) -> Reward:
    """`reward` (any Reward or callable) made hacking-resistant by averaging it over random shifts, rotations,
    zooms and pixel noise (EOT, Athalye et al. 2018): `rs.robust(ens, "shift=2,rotate=10,n=8")`. See
    `TransformedReward` for `seed` and `resample`."""
    return TransformedReward(reward, spec, seed, resample)


__all__ = ["PRESETS", "TransformSpec", "TransformedReward", "affine_warp", "parse_transforms", "random_affine",
           "robust"]
