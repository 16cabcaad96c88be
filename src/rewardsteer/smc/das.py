"""DAS: diffusion alignment as sampling (Kim et al. 2025, "Test-time alignment of diffusion models without
reward over-optimization").

Notation: target p(x)·exp(r(x)/α); steps i = 0..T counted from the noise; λ_i = min((1 + γ)^i − 1, 1) the
tempering schedule (λ_T = 1, so the last weight completes the tilt); r_i = r(x̂0(x_i)). Intermediate
targets (A) π_i(x_{0:i}) ∝ p(x_{0:i})·exp(λ_i·r_i/α), the proposal
(B) q(x_{i+1} | x_i) = N(m_i + s_i²·∇_{x_i} λ_{i+1}·r_i/α, s_i²)
and the incremental weights
(C) w_{i+1} = p(x_{i+1} | x_i)·exp(λ_{i+1}·r_{i+1}/α) / (q(x_{i+1} | x_i)·exp(λ_i·r_i/α)).
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


class DASKernel(Kernel):
    name = "das"
    need_grad = True

    def __init__(self, alpha: float, gamma: float, steps: int):
        self.alpha, self.gamma, self.steps = alpha, gamma, steps
        self.beta = 1.0 / alpha

    def lam(self, i: int) -> float:
        return 1.0 if i >= self.steps else min((1 + self.gamma) ** i - 1, 1.0)

    def scored(self, i):
        return True

    def twist(self, i, r, phi, carry):
        return self.lam(i) * r / self.alpha  # (A) log φ_i = λ_i·r_i/α; the loop weights by φ_i / φ_{i−1} (C)

    def guidance(self, i):
        return self.lam(i + 1) / self.alpha  # (B) drift s_i²·λ_{i+1}/α·∇r: toward the next target; p/q in (C)


def das(sampler: Sampler, reward, *, cond: Any = None, n: int = 1, particles: int = 8, alpha: float = 0.1,
        gamma: float = 0.008, ess_threshold: float = 0.5, resampling: str = "systematic", pick: str = "sample",
        chunk: int | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
        heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
        progress: bool = True):
    """Sample p(x)·exp(r(x)/α) with tempered, gradient-guided SMC (DAS, Kim et al. 2025): K = `particles`
    per sample, tempering rate γ (0.008 as in the paper), adaptive resampling at ESS < ess_threshold·K.
    `pick` = "sample" (one draw from the final weights: a sample of the target) or "best". Needs a
    differentiable reward. Cost per step: n·K NFE, n·K reward calls, n·K backward passes; n·K reward calls
    for the final samples.
    """
    sampler = as_checked_sampler(sampler, "das")
    check_alpha(alpha)
    if not getattr(sampler, "continuous", True):
        raise RewardsteerError(f"das needs the reward's gradient with respect to a continuous state; "
                               f"{type(sampler).__name__} samples tokens: use fk_steering or svdd")
    if not gamma > 0:
        raise RewardsteerError(f"gamma must be > 0 (tempering λ_i = min((1+γ)^i − 1, 1)), got {gamma}")
    kernel = DASKernel(float(alpha), float(gamma), sampler.num_steps)
    return run_particles(sampler, reward, kernel, cond=cond, n=n, particles=particles, ess_threshold=ess_threshold,
                         resampling=resampling, pick=pick, chunk=chunk, budget=budget, seed=seed, heldout=heldout,
                         callback=callback, progress=progress, config={"alpha": alpha, "gamma": gamma})
