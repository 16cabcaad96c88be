"""Reward-gradient guidance during sampling: DPS (Chung et al. 2023, "Diffusion posterior sampling for general
noisy inverse problems") and universal guidance (Bansal et al. 2023, "Universal guidance for diffusion models",
forward guidance), with a differentiable reward in place of the measurement loss / guidance function.

Notation: step i maps x_i -> x_{i+1} ~ N(m_i, s_i²) (the sampler's transition); x̂0(x_i) the x0-prediction;
g_i = ∇_{x_i} r(decode(x̂0(x_i))), the reward's gradient back through the network (one backward pass per
particle per step). Each step's mean is shifted along g_i:
    (A) step="constant": x_{i+1} = m_i + scale·g_i + s_i·ε                 (DPS, Alg. 1 line 7, with ζ_i = scale)
    (B) step="variance": x_{i+1} = m_i + scale·s_i²·g_i + s_i·ε            (classifier guidance's form, Dhariwal &
        Nichol 2021 Alg. 1: the first-order tilt of the transition by exp(scale·r))
No importance weights: it is a biased sampler of roughly p(x)·exp(scale·r(x)), the baseline next to FK, DAS and
SVDD. With K = `particles` > 1 per output, K guided trajectories run and the highest final reward is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..budget import Budget
from ..core import Sampler
from ..errors import RewardsteerError
from ..wrap import sampler as as_checked_sampler
from .driver import Kernel, run_particles

STEPS = ("constant", "variance")


class GuidanceKernel(Kernel):
    name = "reward_guidance"
    need_grad = True
    resample = False

    def __init__(self, scale: float, step: str, window: tuple[int, int]):
        self.scale, self.step, self.window = scale, step, window

    def scored(self, i):  # every step inside the window: the gradient needs r(x̂0(x_i))
        return self.window[0] <= i < self.window[1]

    def drift(self, i, grad, dist):
        if not self.scored(i):
            return None
        return self.scale * grad if self.step == "constant" else self.scale * dist.std**2 * grad  # (A) / (B)


DEFAULT_SCALE = 100.0  # with step="variance", measured on mnist-flow (20 steps) and the proxy ensemble (below)


def reward_guidance(sampler: Sampler, reward, *, cond: Any = None, n: int = 1, scale: float = DEFAULT_SCALE,
                    step: str = "variance", particles: int = 1, window: tuple[int, int] | None = None,
                    chunk: int | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
                    heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
                    progress: bool = True):
    """Reward-gradient guidance of a stochastic sampler (DPS, Chung et al. 2023; universal guidance's forward
    guidance, Bansal et al. 2023): at every step in `window` (default: all) the transition's mean moves along
    ∇_{x_i} r(x̂0(x_i)) — by `scale`·s_i²·∇r (`step="variance"`, the default: classifier guidance's form, where
    scale acts as the inverse temperature λ of p(x)·exp(λ·r(x)), like FK's `lam`) or by `scale`·∇r
    (`step="constant"`: DPS's fixed step size ζ). No reweighting or resampling; with `particles` = K > 1, K
    guided trajectories per output and the highest final reward kept. Needs a differentiable reward and a
    continuous state. Cost per output: K·T NFE, K·T backward passes (T steps in the window), K·(T + 1)
    reward calls — DAS's cost, so the two compare at equal NFE and backward passes.

    The default scale suits log-probability rewards on `mnist-flow` (20 steps, 5 CNN proxies, 8 outputs per
    class 3 and 7): 30 under-steers (all three judges agree on 25% / 12%), 100 agrees on 62% / 50%, 300
    fools the CNN proxies and `mnist-judge` (100%) but not the ViT and RFF judges (25% / 0% agree). Tune it
    to your reward's scale.
    """
    sampler = as_checked_sampler(sampler, "reward_guidance")
    if not getattr(sampler, "continuous", True):
        raise RewardsteerError(f"reward_guidance needs the reward's gradient with respect to a continuous state; "
                               f"{type(sampler).__name__} samples tokens: use fk_steering or svdd")
    if step not in STEPS:
        raise RewardsteerError(f"reward_guidance: step must be one of {', '.join(STEPS)}; got '{step}'")
    if not (isinstance(scale, (int, float)) and scale >= 0 and scale == scale and scale != float("inf")):
        raise RewardsteerError(f"reward_guidance: scale must be a finite number >= 0, got {scale!r}")
    window = (0, sampler.num_steps) if window is None else tuple(window)
    if len(window) != 2 or not 0 <= window[0] < window[1] <= sampler.num_steps:
        raise RewardsteerError(f"reward_guidance: window must be (first, end) with 0 <= first < end <= "
                               f"{sampler.num_steps}; got {window}")
    kernel = GuidanceKernel(float(scale), step, window)
    return run_particles(sampler, reward, kernel, cond=cond, n=n, particles=particles, ess_threshold=1.0,
                         resampling="systematic", pick="best", chunk=chunk, budget=budget, seed=seed, heldout=heldout,
                         callback=callback, progress=progress,
                         config={"scale": scale, "step": step, "window": list(window)})
