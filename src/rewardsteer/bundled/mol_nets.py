"""The molecule models' networks: `FingerprintMLP` (the learned property proxies) and the masked
(absorbing-state) diffusion denoiser of `moses-mdlm` (MDLM: Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models"; Shi et al. 2024, "Simplified and Generalized Masked Diffusion").

Notation: x_0 is a clean token sequence (B, L); at time t in [0, 1] each token is independently replaced by
[mask] with probability 1 − α_t, α_t = 1 − t (the log-linear schedule). The network maps x_t to a categorical
x_θ(x_t) over the clean token at every position, with the SUBS parameterization (MDLM §3.2):
  (a) [mask] gets zero probability, (b) positions already unmasked copy their token.
No time input: for absorbing-state diffusion the posterior of x_0 given x_t does not depend on t (MDLM §3.4).
Training minimizes the continuous-time NELBO (MDLM eq. 10): E_t [ 1/t · Σ_{masked l} −log x_θ(x_t)_l[x_0,l] ].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .nets import TransformerBlock


class MaskedDiffusionTransformer(nn.Module):
    """Bidirectional transformer over token ids with learned positions; returns SUBS log-probabilities."""

    def __init__(self, vocab_size: int, length: int, dim: int = 128, depth: int = 6, heads: int = 4,
                 mlp: int = 512, mask_id: int = 1):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "length": length, "dim": dim, "depth": depth, "heads": heads,
                       "mlp": mlp, "mask_id": mask_id}
        self.mask_id = mask_id
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, V) log-probabilities of the clean token (SUBS parameterization)."""
        h = self.norm(self.blocks(self.embed(ids) + self.pos[:, :ids.shape[1]]))
        logits = self.head(h).float()
        logits[..., self.mask_id] = float("-inf")  # (a) never predict [mask]
        logp = F.log_softmax(logits, dim=-1)
        known = ids != self.mask_id
        carry = torch.full_like(logp, float("-inf")).scatter_(-1, ids.unsqueeze(-1), 0.0)
        return torch.where(known.unsqueeze(-1), carry, logp)  # (b) unmasked tokens are kept


def masked_diffusion_loss(model: MaskedDiffusionTransformer, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """MDLM's NELBO per token (eq. 10, linear schedule) with antithetic (stratified) times to cut variance."""
    b, length = x0.shape
    t = (torch.rand((), generator=gen) + torch.arange(b) / b) % 1.0
    t = t.clamp_min(1e-3)  # (B,) masking probabilities 1 − α_t = t
    masked = torch.rand(b, length, generator=gen) < t[:, None]
    xt = torch.where(masked, torch.full_like(x0, model.mask_id), x0)
    logp = model(xt)  # (B, L, V)
    nll = -logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)  # (B, L); zero where unmasked (SUBS carry-over)
    nll = torch.where(masked, nll, torch.zeros_like(nll))
    return (nll.sum(1) / t).mean() / length


class FingerprintMLP(nn.Module):
    """fingerprint (N, bits) -> property (N,): log1p of counts, two hidden ReLU layers, then the standardized
    prediction mapped back to property units with the training targets' mean / std (buffers)."""

    def __init__(self, bits: int = 2048, hidden: int = 256, counts: bool = True, prop: str = "qed"):
        super().__init__()
        self.config = {"bits": bits, "hidden": hidden, "counts": counts, "prop": prop}
        self.net = nn.Sequential(nn.Linear(bits, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.log1p()).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * self.standardized(x)
