"""Masked (absorbing-state) discrete diffusion as a `Sampler`: token sequences on the same SMC core as images.

Notation (MDLM, Sahoo et al. 2024; Shi et al. 2024): a state x_i is (N, L) token ids, some of them [mask];
x_0 is all [mask]; step i moves from time t = 1 − i/T to s = 1 − (i + 1)/T under the linear schedule
α_t = 1 − t. The denoiser gives x̂0 = x_θ(x_i), a categorical (N, L, V) over the clean token at each position
(log-probabilities). The reverse transition (MDLM eq. 7, SUBS) factorizes over positions:
  (1) an unmasked token stays;
  (2) a masked one stays masked with probability (1 − α_s)/(1 − α_t) = s/t, else becomes v with
      probability (1 − s/t)·x̂0[v].
At the last step s = 0, so every remaining [mask] is filled. The randomness of a step is one uniform per
position, turned into the next token by the inverse CDF of (2), so a particle's path is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core import Sampler, Transition


class UnmaskTransition(Transition):
    """The factorized law (1)-(2) of x_{i+1} given x_i: (N, L) ids, x̂0 log-probs (N, L, V), stay = s/t."""

    def __init__(self, x: torch.Tensor, x0_logp: torch.Tensor, stay: float, mask_id: int):
        self.x, self.logp, self.stay, self.mask_id = x, x0_logp, float(stay), mask_id
        self.masked = x == mask_id  # (N, L)
        self.deterministic = not bool(self.masked.any()) or self.stay >= 1.0

    def draw_noise(self, generator):
        return torch.rand(self.x.shape, generator=generator, device=generator.device, dtype=torch.float64).to(self.x.device)

    def sample(self, noise):
        if noise is None or self.deterministic:
            return self.x
        # (2) u < s/t: stay masked; otherwise invert the CDF of x̂0 at (u − s/t)/(1 − s/t)
        u = ((noise - self.stay) / (1.0 - self.stay)).clamp(0.0, 1.0 - 1e-12)  # (N, L)
        cdf = self.logp.double().exp().cumsum(-1)  # (N, L, V)
        token = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1)).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
        fill = self.masked & (noise >= self.stay)
        return torch.where(fill, token, self.x)

    def log_prob(self, x_next):
        changed = x_next != self.x
        still = self.masked & ~changed
        filled = self.masked & changed
        lp = self.logp.double().gather(-1, x_next.unsqueeze(-1)).squeeze(-1)  # (N, L)
        log_stay = math.log(self.stay) if self.stay > 0 else -math.inf
        log_fill = math.log1p(-self.stay) if self.stay < 1 else -math.inf
        out = torch.zeros(x_next.shape, dtype=torch.float64, device=x_next.device)
        out = torch.where(still, torch.full_like(out, log_stay), out)
        out = torch.where(filled, log_fill + lp, out)
        out = torch.where(~self.masked & changed, torch.full_like(out, -math.inf), out)  # (1) unmasked tokens stay
        return out.sum(-1)

    def repeat(self, m):
        return UnmaskTransition(self.x.repeat_interleave(m, 0), self.logp.repeat_interleave(m, 0), self.stay,
                                self.mask_id)


class MaskedDiffusionSampler(Sampler):
    """T-step ancestral sampler of a masked diffusion model over sequences of `length` tokens.

    `denoiser(ids (N, L)) -> log-probs (N, L, V)` must follow SUBS (zero mass on [mask], unmasked tokens
    copied). `predict_x0` returns those log-probabilities; `decode` turns them (or a state) into token ids:
    an unmasked state as it is, a prediction by its most likely token at each position. Conditioning is not
    used (`cond` must be None); each step costs one denoiser call per sequence.
    """

    continuous = False

    def __init__(self, denoiser: torch.nn.Module, length: int, num_steps: int, mask_id: int):
        super().__init__()
        self.denoiser, self.length, self.num_steps, self.mask_id = denoiser, length, num_steps, mask_id
        self.state_shape = (length,)

    def time(self, i: int) -> float:
        return 1.0 - i / self.num_steps

    def initial_state(self, n, generator):
        ref = next(iter((*self.parameters(), *self.buffers())), torch.zeros(()))
        return torch.full((n, self.length), self.mask_id, dtype=torch.long, device=ref.device)

    def predict_x0(self, x, i, cond=None):
        return self.denoiser(x)

    def distribution(self, x, i, x0_pred):
        t, s = self.time(i), self.time(i + 1)
        return UnmaskTransition(x, x0_pred, s / t, self.mask_id)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(-1) if x.is_floating_point() else x

    def sample_noise(self, n, generator, device=None, dtype=None):
        return self.initial_state(n, generator)

    def sample(self, noise: torch.Tensor | None = None, cond: Any = None, generator: torch.Generator | None = None,
               n: int | None = None) -> torch.Tensor:
        """Token ids (N, L) of N unsteered samples, from `noise` (an initial state) or n fresh all-mask rows."""
        x = self.initial_state(n, generator) if noise is None else noise
        x0 = self.predict_x0(x, 0, cond)
        for i in range(self.num_steps):
            dist = self.distribution(x, i, x0)
            nxt = dist.sample(None if dist.deterministic else dist.draw_noise(generator))
            changed = (nxt != x).any(1)  # the denoiser has no time input: unchanged rows keep their x̂0 (MDLM §3.4)
            x = nxt
            if i + 1 < self.num_steps and bool(changed.any()):
                x0 = x0.clone()
                x0[changed] = self.predict_x0(x[changed], i + 1, cond)
        return self.decode(x)
