"""FK steering (Singhal et al. 2025, "A general framework for inference-time scaling and steering of
diffusion models"), and best-of-N over full stochastic trajectories on the same loop.

Notation: λ the inverse temperature (target p(x)·exp(λ·r(x))); r_s = r(x̂0(x_s)) the reward of the
x0-prediction at scored step s; the potentials of the paper's §3.2, with steps counted from the noise:
    current: G_i = exp(λ·r_i)        diff: G_i = exp(λ·(r_i − r_{prev}))
    max:     G_i = exp(λ·max_{s≤i} r_s)     sum: G_i = exp(λ·Σ_{s≤i} r_s)
Potentials are applied on the scored steps (every `interval` steps inside `window`); their product along
each particle's path is carried, so the final reweighting exp(λ·r(x_T)) / Π G makes every potential
target the same tilted distribution. Weights accumulate across scored steps where ESS stayed high
(the reference implementation dropped them: its issue #12).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..budget import Budget
from ..core import Sampler
from ..errors import RewardsteerError
from ..wrap import sampler as as_checked_sampler
from .core import check_alpha
from .driver import Kernel, run_particles

POTENTIALS = ("max", "diff", "sum", "current")


class FKKernel(Kernel):
    name = "fk_steering"

    def __init__(self, lam: float, potential: str, interval: int, window: tuple[int, int]):
        self.lam, self.potential, self.interval, self.window = lam, potential, interval, window
        self.beta = lam

    def scored(self, i):
        start, end = self.window
        return start <= i < end and (i - start) % self.interval == 0

    def twist(self, i, r, phi, carry):
        if not carry:  # path statistics: previous, running max and running sum of the rewards
            carry.update(prev=torch.zeros_like(r), max=torch.full_like(r, -torch.inf), sum=torch.zeros_like(r))
        carry["max"], carry["sum"] = torch.maximum(carry["max"], r), carry["sum"] + r
        value = {"current": r, "diff": r - carry["prev"], "max": carry["max"], "sum": carry["sum"]}[self.potential]
        carry["prev"] = r
        return phi + self.lam * value  # log φ_i = Σ_{s≤i} log G_s along the path


def fk_steering(sampler: Sampler, reward, *, cond: Any = None, n: int = 1, particles: int = 8, lam: float = 10.0,
                potential: str = "max", interval: int = 5, window: tuple[int, int] | None = None,
                ess_threshold: float = 0.5, resampling: str = "systematic", pick: str = "best",
                chunk: int | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
                heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
                progress: bool = True):
    """Feynman–Kac steering of a stochastic sampler (Singhal et al. 2025): K = `particles` particles per
    sample, potentials on the x0-prediction's reward, adaptive resampling (ESS < ess_threshold·K) on the
    scored steps, final reweighting to p(x)·exp(λ·r(x)). `window` = (first, end) steps where potentials
    apply (default: all); `pick` = "best" (highest reward, as in the paper's image experiments) or
    "sample" (one draw from the final weights). Cost: n·K NFE per step, n·K reward calls per scored step
    and n·K for the final samples.
    """
    sampler = as_checked_sampler(sampler, "fk_steering")
    if potential not in POTENTIALS:
        raise RewardsteerError(f"potential must be one of {', '.join(POTENTIALS)}; got '{potential}'")
    check_alpha(lam, "lam")
    if not isinstance(interval, int) or interval < 1:
        raise RewardsteerError(f"interval must be a positive integer, got {interval!r}")
    window = (0, sampler.num_steps) if window is None else tuple(window)
    if len(window) != 2 or not 0 <= window[0] < window[1] <= sampler.num_steps:
        raise RewardsteerError(f"window must be (first, end) with 0 <= first < end <= {sampler.num_steps}; got {window}")
    kernel = FKKernel(float(lam), potential, interval, window)
    return run_particles(sampler, reward, kernel, cond=cond, n=n, particles=particles, ess_threshold=ess_threshold,
                         resampling=resampling, pick=pick, chunk=chunk, budget=budget, seed=seed, heldout=heldout,
                         callback=callback, progress=progress,
                         config={"lam": lam, "potential": potential, "interval": interval, "window": list(window)})


class TrajectoryKernel(Kernel):
    name = "trajectory_best_of_n"


def trajectory_best_of_n(sampler: Sampler, reward, *, cond: Any = None, n: int = 1, particles: int = 8,
                         chunk: int | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
                         heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
                         progress: bool = True):
    """Best-of-N over full stochastic trajectories (Ma et al. 2025, §3 random search with a verifier): K =
    `particles` independent runs of the sampler per sample, the highest final reward kept. The FK loop with
    no potentials and no resampling, so it is charged exactly like the particle methods: n·K NFE per step,
    n·K reward calls at the end.
    """
    return run_particles(sampler, reward, TrajectoryKernel(), cond=cond, n=n, particles=particles, ess_threshold=1.0,
                         resampling="systematic", pick="best", chunk=chunk, budget=budget, seed=seed,
                         heldout=heldout, callback=callback, progress=progress, config={})
