"""A Gaussian mixture as a "diffusion model" with an exact x0-prediction: problems with known answers.

Notation (as in `flow`): x_t = t·x + (1 − t)·ε on the rectified-flow path, t = 0 noise, t = 1 data;
p(x) = Σ_k π_k N(x; μ_k, diag σ_k²). Given component k, x_t ~ N(t·μ_k, v_k) with v_k = t²σ_k² + (1 − t)²
per coordinate, and E[x | x_t, k] = μ_k + t·σ_k²/v_k·(x_t − t·μ_k); the exact x0-prediction is the
posterior mean Σ_k ρ_k(x_t)·E[x | x_t, k] with ρ_k ∝ π_k N(x_t; t·μ_k, v_k). The stochastic transition is
FlowSampler's (inherited, not re-derived). For a linear reward r(x) = a·x the tilt p(x)·exp(r(x)/α) is
again a Gaussian mixture: means μ_k + σ_k²·a/α, weights ∝ π_k·exp(a·μ_k/α + ‖σ_k·a‖²/(2α²)), and its
normalizer Z = E_p[exp(r/α)] is the sum of those unnormalized weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .flow import FlowSampler
from .masked import MaskedDiffusionSampler


class GaussianMixtureFlow(FlowSampler):
    """A d-dimensional Gaussian mixture sampled with FlowSampler's DDIM/DDPM transition (`eta` = 1:
    stochastic). Samples live in model space (`decode` is the identity); float64 by default."""

    def __init__(self, weights, means, stds, num_steps: int = 20, eta: float = 1.0, dtype=torch.float64):
        super().__init__(None, num_steps, guidance=1.0, eta=eta)
        means = torch.as_tensor(means, dtype=dtype)
        means = means[:, None] if means.ndim == 1 else means  # (K, d)
        stds = torch.as_tensor(stds, dtype=dtype)
        stds = (stds[:, None] if stds.ndim == 1 else stds).expand_as(means)  # (K, d)
        weights = torch.as_tensor(weights, dtype=dtype)
        self.register_buffer("log_pi", (weights / weights.sum()).log())
        self.register_buffer("mu", means)
        self.register_buffer("sigma", stds.clone())
        self.state_shape = (means.shape[1],)

    def predict_x0(self, x: torch.Tensor, i: int, cond: Any = None) -> torch.Tensor:
        t = self.time(i)
        var = t**2 * self.sigma**2 + (1 - t) ** 2  # (K, d)
        diff = x[:, None] - t * self.mu  # (N, K, d)
        log_n = -0.5 * (diff**2 / var + var.log() + math.log(2 * math.pi)).sum(-1)  # (N, K)
        rho = torch.softmax(self.log_pi + log_n, dim=1)
        post = self.mu + t * self.sigma**2 / var * diff  # (N, K, d): E[x | x_t, k]
        return (rho[..., None] * post).sum(1)  # (N, d)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def sample_exact(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact draws from the mixture (for checking the sampler itself)."""
        k = torch.multinomial(self.log_pi.exp(), n, replacement=True, generator=generator)
        eps = torch.randn((n, self.mu.shape[1]), generator=generator, dtype=self.mu.dtype)
        return self.mu[k] + self.sigma[k] * eps

    def tilted_linear(self, a, alpha: float):
        """The exact target p(x)·exp(a·x/α): (weights (K,), means (K, d), stds (K, d), log Z, mean (d,))."""
        a = torch.as_tensor(a, dtype=self.mu.dtype).reshape(-1)
        log_w = self.log_pi + self.mu @ a / alpha + 0.5 * ((self.sigma * a) ** 2).sum(1) / alpha**2
        log_z = torch.logsumexp(log_w, 0)
        weights = (log_w - log_z).exp()
        means = self.mu + self.sigma**2 * a / alpha
        return weights, means, self.sigma, float(log_z), weights @ means

    def responsibilities(self, x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """(N, K) posterior component probabilities of points x (N, d) under a mixture with this one's stds."""
        diff = x[:, None] - means
        log_n = -0.5 * (diff**2 / self.sigma**2 + 2 * self.sigma.log()).sum(-1)
        return torch.softmax(weights.log() + log_n, dim=1)


def linear_reward(a):
    """r(x) = a·x on (N, d) points: differentiable, and its tilt of a Gaussian mixture is closed-form."""
    from ..core import FunctionReward

    a = torch.as_tensor(a).reshape(-1)
    return FunctionReward(lambda x, c=None: x @ a.to(x), "linear")


class _IndependentDenoiser(torch.nn.Module):
    """The exact SUBS denoiser of a product distribution: a masked position's posterior is its own marginal."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        length, v = probs.shape
        logp = torch.full((length, v + 1), -math.inf, dtype=probs.dtype)
        logp[:, :v] = (probs / probs.sum(1, keepdim=True)).log()
        self.register_buffer("logp", logp)  # (L, V + 1); the last id is [mask]
        self.mask_id = v

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.logp.expand(ids.shape[0], -1, -1).clone()  # (N, L, V + 1)
        carry = torch.full_like(out, -math.inf).scatter_(-1, ids.unsqueeze(-1), 0.0)
        return torch.where((ids != self.mask_id).unsqueeze(-1), carry, out)


class IndependentTokensToy(MaskedDiffusionSampler):
    """Masked diffusion over sequences whose L tokens are independent, p(x) = Π_l P[l, x_l], with V tokens
    (ids 0..V−1; [mask] is id V). Its x0-prediction is exact, so the sampler draws p exactly in any number
    of steps, and for any reward the tilt p(x)·exp(r(x)/α) can be enumerated over the V^L sequences."""

    def __init__(self, probs, num_steps: int = 8):
        probs = torch.as_tensor(probs, dtype=torch.float64)
        denoiser = _IndependentDenoiser(probs)
        super().__init__(denoiser, probs.shape[0], num_steps, denoiser.mask_id)

    def enumerate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sequence (V^L, L) and its log-probability (V^L,)."""
        length, v = self.length, self.mask_id
        seqs = torch.cartesian_prod(*[torch.arange(v)] * length).reshape(-1, length)
        logp = self.denoiser.logp[torch.arange(length), seqs].sum(1)
        return seqs, logp

    def tilted(self, reward, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(sequences, target probabilities ∝ p·exp(r/α), log Z = log E_p[exp(r/α)]) by enumeration."""
        seqs, logp = self.enumerate()
        log_w = logp + reward(seqs).double() / alpha
        log_z = torch.logsumexp(log_w, 0)
        return seqs, (log_w - log_z).exp(), float(log_z)
