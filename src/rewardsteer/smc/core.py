"""The SMC core: log-space importance weights, effective sample size, resampling, the normalizer estimate.

Notation (Doucet & Johansen 2009, "A tutorial on particle filtering and smoothing"): B independent
runs ("slots") of K particles each; log-weights logw (B, K) accumulate incremental weights between
resampling steps (never dropped where resampling is skipped); W = softmax(logw) per slot;
ESS = 1 / Σ_k W_k² (Kong et al. 1994); after each resampling the weights restart at 1, and the estimate
log Ẑ = Σ_epochs log( (1/K) Σ_k w_k ) sums the epochs between resampling steps and the last one.
Weights are kept in float64; a particle with weight 0 carries logw = −inf, never NaN.
"""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import RewardsteerError

SCHEMES = ("multinomial", "systematic", "stratified")


def check_smc(particles: int, ess_threshold: float = 0.5, resampling: str = "systematic") -> None:
    """Clear errors for the knobs every particle method shares."""
    if not isinstance(particles, numbers.Integral) or particles < 1:
        raise RewardsteerError(f"particles (K) must be a positive integer, got {particles!r}")
    if not 0 < ess_threshold <= 1:
        raise RewardsteerError(f"ess_threshold must lie in (0, 1] (resample when ESS < threshold·K), got {ess_threshold}")
    if resampling not in SCHEMES:
        raise RewardsteerError(f"resampling must be one of {', '.join(SCHEMES)}; got '{resampling}'")


def check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
        raise RewardsteerError(f"{name} must be a finite number > 0 (the target is p(x)·exp(r(x)/{name})), got {alpha}")


def normalize(logw: torch.Tensor) -> torch.Tensor:
    """(B, K) log-weights -> (B, K) normalized log W; a slot whose weights are all 0 counts as uniform."""
    lse = logw.logsumexp(-1, keepdim=True)
    uniform = torch.full_like(logw, -math.log(logw.shape[-1]))
    return torch.where(torch.isfinite(lse), logw - lse, uniform)


def ess(logw: torch.Tensor) -> torch.Tensor:
    """Effective sample size per slot, (B, K) -> (B,), in [1, K]."""
    return 1.0 / normalize(logw).mul(2).exp().sum(-1)


def resample(logw: torch.Tensor, num: int, scheme: str, rng: torch.Generator) -> torch.Tensor:
    """Ancestor indices (B, num) drawn from each slot's weights; E[#copies of k] = num·W_k for every scheme.

    multinomial: num independent draws; stratified: one uniform in each stratum [(j + u_j)/num);
    systematic: one uniform shared by all strata (Douc et al. 2005, "Comparison of resampling schemes").
    """
    w = normalize(logw).exp()  # (B, K)
    b, k = w.shape
    if scheme == "multinomial":
        return torch.multinomial(w, num, replacement=True, generator=rng)
    shape = (b, 1) if scheme == "systematic" else (b, num)
    u = torch.rand(shape, generator=rng, device=rng.device, dtype=w.dtype).to(w.device)
    points = (torch.arange(num, device=w.device, dtype=w.dtype) + u) / num  # (B, num) in [0, 1)
    cdf = w.cumsum(-1)
    return torch.searchsorted(cdf, points, right=True).clamp_(max=k - 1)


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of a per-particle tensor: t (B, K, ...), idx (B, N) -> (B, N, ...)."""
    return t[torch.arange(t.shape[0], device=t.device)[:, None], idx.to(t.device)]


class Weights:
    """Log-weights of B slots × K particles with adaptive resampling and the running log-normalizer."""

    def __init__(self, b: int, k: int, device):
        self.k = k
        self.logw = torch.zeros(b, k, dtype=torch.float64, device=device)
        self.log_z = torch.zeros(b, dtype=torch.float64, device=device)

    def add(self, increment: torch.Tensor, dead: torch.Tensor) -> None:
        """Multiply in incremental weights (B, K); dead or non-finite ones become weight 0, never NaN."""
        inc = increment.to(self.logw)
        bad = dead | ~torch.isfinite(inc)
        self.logw = torch.where(bad, -math.inf, self.logw + torch.where(bad, 0.0, inc))

    def ess(self) -> torch.Tensor:
        return ess(self.logw)

    def _fold_epoch(self, mask: torch.Tensor) -> None:
        # log Ẑ += log (1/K) Σ_k w_k for the slots whose epoch ends here
        epoch = self.logw.logsumexp(-1) - math.log(self.k)
        self.log_z = self.log_z + torch.where(mask, epoch, torch.zeros_like(epoch))

    def maybe_resample(self, threshold: float, scheme: str, rng: torch.Generator):
        """Resample the slots with ESS < threshold·K; returns ancestors (B, K) (identity for the others) or
        None when no slot needed it, and the (B,) mask of slots resampled."""
        mask = self.ess() < threshold * self.k
        if not bool(mask.any()):
            return None, mask
        keep = torch.arange(self.k, device=mask.device).expand(mask.shape[0], self.k)
        idx = torch.where(mask[:, None], resample(self.logw, self.k, scheme, rng).to(mask.device), keep)
        self._fold_epoch(mask)
        self.logw = torch.where(mask[:, None], torch.zeros_like(self.logw), self.logw)
        return idx, mask

    def close(self) -> None:
        """Fold the last epoch into log Ẑ (weights are left as they are, for the final pick)."""
        self._fold_epoch(torch.ones_like(self.log_z, dtype=torch.bool))
