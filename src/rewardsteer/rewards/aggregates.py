"""Composable transforms of named member scores, chained like optax's `chain` (DESIGN.md, example 5).

Notation: members r_1..r_k, each a (B,) score for the same batch, kept by name in a dict. A transform maps
{name: (B,)} -> {name: (B,)}; an *aggregate* is a transform that returns a single entry. Member-wise
transforms (standardize, log_sigmoid, weighted) come first in a chain, an aggregate last:

    chain(standardize(stats), uwo(0.5))            # Coste et al. 2024, on calibrated members
    chain(standardize(stats), log_sigmoid(), total())   # Wang et al. 2024, "logical AND" of rewards

Aggregates (conservative ones penalise disagreement between members, the symptom of reward hacking):
    mean      (1/k) Σ r_i
    wco       min_i r_i                                       (Coste et al. 2024, worst-case optimization)
    uwo       mean − λ·(1/k) Σ (r_i − mean)²                  (Coste et al. 2024; λ = 0.5 search, 0.1 gradients)
    mean_std  mean − c·std, population std                    (Eisenstein et al. 2024)
    quantile  the q-quantile over members (linear interpolation)
    cvar      mean of the ⌈α·k⌉ lowest members                (conditional value at risk)
    total     Σ r_i (weighted multi-objective sums, after `weighted`)
    only      one named member (the single-model baseline)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from ..core import make_rng
from ..errors import RewardsteerError

Scores = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Transform:
    """One step on named member scores; `aggregate` marks steps that reduce to a single entry."""

    name: str
    fn: Callable[[Scores], Scores]
    aggregate: bool = False

    def __call__(self, scores: Mapping[str, torch.Tensor]) -> Scores:
        if not scores:
            raise RewardsteerError(f"transform '{self.name}' got no member scores")
        return self.fn(dict(scores))


def chain(*transforms: Transform) -> Transform:
    """Apply the transforms left to right; only the last may be an aggregate."""
    if not transforms:
        raise RewardsteerError("chain() needs at least one transform")
    for t in transforms[:-1]:
        if t.aggregate:
            raise RewardsteerError(f"aggregate '{t.name}' must come last in a chain")

    def fn(scores: Scores) -> Scores:
        for t in transforms:
            scores = t(scores)
        return scores

    return Transform(" > ".join(t.name for t in transforms), fn, transforms[-1].aggregate)


def reduce(transform: Transform, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The (B,) objective: apply `transform`, which must end in an aggregate (or leave one member)."""
    out = transform(scores)
    if len(out) != 1:
        raise RewardsteerError(f"transform '{transform.name}' left {len(out)} members; end the chain with an "
                               "aggregate such as mean(), wco() or uwo()")
    (only,) = out.values()
    return only


def _stack(scores: Scores) -> torch.Tensor:
    return torch.stack(list(scores.values()))  # (k, B)


def _per_member(name: str, scores: Scores, params: Mapping[str, Any] | Any, default=None):
    """A member's parameter from a mapping (missing names are an error) or one value shared by all."""
    if not isinstance(params, Mapping):
        return params
    if name in params:
        return params[name]
    if default is not None:
        return default
    raise RewardsteerError(f"no parameter for member '{name}'; known: {sorted(params)}")


# ---- member-wise transforms -------------------------------------------------------------------------

def standardize(stats: Mapping[str, tuple[float, float]]) -> Transform:
    """(r_i − μ_i) / σ_i with (μ_i, σ_i) per member, from `calibrate` on unsteered samples."""
    for name, (_, sd) in stats.items():
        if not sd > 0:
            raise RewardsteerError(f"member '{name}' has sd {sd} on the calibration samples; cannot standardize")

    def fn(scores):
        out = {}
        for k, v in scores.items():
            mu, sd = _per_member(k, scores, stats)
            out[k] = (v - mu) / sd
        return out

    return Transform("standardize", fn)


def log_sigmoid(reference: float | Mapping[str, float] = 0.0) -> Transform:
    """log σ(r_i − ref_i): a Bradley-Terry reward as the log-probability of beating the reference (Wang et al.
    2024, "Transforming and combining rewards"). Saturates above the reference, so summing the transformed
    members rewards being good on all of them rather than great on one. After `standardize`, ref 0 is the
    unsteered mean."""
    return Transform("log_sigmoid", lambda s: {k: F.logsigmoid(v - _per_member(k, s, reference)) for k, v in s.items()})


def weighted(weights: Mapping[str, float]) -> Transform:
    """w_i · r_i; every member needs a weight (a missing one is an error, not a silent 0 or 1)."""
    return Transform("weighted", lambda s: {k: _per_member(k, s, weights) * v for k, v in s.items()})


# ---- aggregates ---------------------------------------------------------------------------------------

def _aggregate(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Transform:
    return Transform(name, lambda s: {name: fn(_stack(s))}, aggregate=True)


def only(name: str) -> Transform:
    """One member's score as the objective (the single-reward-model baseline); the others stay monitored."""
    def fn(s):
        if name not in s:
            raise RewardsteerError(f"no member '{name}'; members: {sorted(s)}")
        return {name: s[name]}

    return Transform(f"only:{name}", fn, aggregate=True)


def mean() -> Transform:
    return _aggregate("mean", lambda r: r.mean(0))


def total() -> Transform:
    return _aggregate("total", lambda r: r.sum(0))


def wco() -> Transform:
    """Worst-case optimization: min_i r_i (Coste et al. 2024, eq. 4)."""
    return _aggregate("wco", lambda r: r.min(0).values)


def uwo(lam: float = 0.5) -> Transform:
    """Uncertainty-weighted optimization: mean − λ·Var_pop (Coste et al. 2024, eq. 5). λ = 0.5 suits search and
    best-of-N, 0.1 gradient methods (their tuned values)."""
    if lam < 0:
        raise RewardsteerError(f"uwo needs lam >= 0, got {lam}")
    return _aggregate("uwo", lambda r: r.mean(0) - lam * r.var(0, correction=0))


def mean_minus_std(c: float = 1.0) -> Transform:
    """mean − c·std over members, population std (Eisenstein et al. 2024, "Helping or herding?")."""
    return _aggregate("mean_std", lambda r: r.mean(0) - c * r.std(0, correction=0))


def quantile(q: float) -> Transform:
    """The q-quantile over members (q = 0 is WCO, 0.5 the median)."""
    if not 0 <= q <= 1:
        raise RewardsteerError(f"quantile needs q in [0, 1], got {q}")
    return _aggregate(f"q{q:g}", lambda r: torch.quantile(r.float(), q, dim=0).to(r.dtype))


def cvar(alpha: float) -> Transform:
    """Conditional value at risk: the mean of the ⌈α·k⌉ lowest members (α → 0 is WCO, α = 1 the mean)."""
    if not 0 < alpha <= 1:
        raise RewardsteerError(f"cvar needs alpha in (0, 1], got {alpha}")

    def fn(r):
        m = math.ceil(alpha * r.shape[0])
        return r.sort(0).values[:m].mean(0)

    return _aggregate(f"cvar{alpha:g}", fn)


AGGREGATES: dict[str, Callable[..., Transform]] = {
    "mean": mean, "total": total, "wco": wco, "uwo": uwo, "mean_std": mean_minus_std, "quantile": quantile,
    "cvar": cvar}


def aggregate_from_spec(spec: str) -> Transform:
    """`mean`, `wco`, `uwo[:λ]`, `mean_std[:c]`, `quantile:q`, `cvar:α` -> the aggregate."""
    head, _, arg = spec.partition(":")
    if head not in AGGREGATES:
        raise RewardsteerError(f"unknown aggregate '{spec}'; choose from {', '.join(AGGREGATES)} (e.g. uwo:0.5)")
    try:
        return AGGREGATES[head](float(arg)) if arg else AGGREGATES[head]()
    except (TypeError, ValueError):
        raise RewardsteerError(f"aggregate '{spec}': expected {head}:<number>") from None


# ---- calibration on the unsteered generator ---------------------------------------------------------

@torch.no_grad()
def unsteered_samples(generator, n: int, cond: Any = None, seed: int = 12345, batch: int = 64) -> torch.Tensor:
    """n samples G(z, cond) from fresh Gaussian noise, drawn `batch` at a time (no steering)."""
    rng = make_rng(seed)
    out = []
    for i in range(0, n, batch):
        out.append(generator(generator.sample_noise(min(batch, n - i), rng), cond).float())
    return torch.cat(out)


@torch.no_grad()
def calibrate(reward, samples: torch.Tensor, cond: Any = None, batch: int = 256) -> dict[str, tuple[float, float]]:
    """(mean, population sd) of every member's score on `samples` (use samples from the unsteered generator)."""
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, samples.shape[0], batch):
        for k, v in reward.member_scores(samples[i:i + batch], cond).items():
            parts.setdefault(k, []).append(v.float())
    stats = {}
    for k, v in parts.items():
        v = torch.cat(v)
        v = v[torch.isfinite(v)]
        if v.numel() < 2:
            raise RewardsteerError(f"member '{k}' has fewer than 2 finite scores on the calibration samples")
        stats[k] = (float(v.mean()), float(v.std(correction=0)))
    return stats
