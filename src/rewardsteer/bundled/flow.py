"""Samplers for the rectified-flow UNet, one-step generators built from it, and their unconditional prior.

Notation (rectified flow, Liu et al. 2023): x_t = α_t·x + σ_t·ε with α_t = t, σ_t = 1 − t; t = 0 is noise,
t = 1 data; the network predicts the velocity v = x − ε. From v: x̂ = x_t + (1 − t)·v and
ε̂ = (x_t − α_t·x̂)/σ_t. Model space is [-1, 1]; `decode` maps to [0, 1].

Unconditional prior (cond=None): a mixture of the guided class-conditionals, p(x) = Σ_c w_c(u)·p_guided(x | c),
whose class weights w(u) = softmax(P·u / τ) come from a Gaussian class code u through ten fixed orthonormal
directions P: P·u ~ N(0, I₁₀), so every digit is drawn equally often, w is nearly one-hot for small τ, and
it stays differentiable in u (noise optimization can still change the digit). The one-step generator reads
the code from its noise z; a sampler carries it as a second state channel that its steps keep fixed, so
particles keep their code through resampling. The label-dropout null class (guidance-free unconditional
model) draws ambiguous digits a quarter of the time (docs/models.md), which is why it is not the prior.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..core import OneStepGenerator, Sampler, ddim_posterior
from ..errors import RewardsteerError
from .nets import UNet

NULL_CLASS = 10  # the label-dropout class: the guidance-free unconditional model
MIXTURE_TEMPERATURE = 0.1  # τ of the unconditional prior's class weights (docs/models.md)


def class_labels(cond: Any, batch: int, device) -> torch.Tensor:
    """MNIST conditions: None (the null class), an int class shared by the batch, or a (B,) tensor of classes
    (10 = null class)."""
    if cond is None:
        return torch.full((batch,), NULL_CLASS, device=device, dtype=torch.long)
    y = torch.as_tensor(cond, device=device, dtype=torch.long)
    if y.ndim == 0:
        y = y.expand(batch)
    if y.shape != (batch,) or y.min() < 0 or y.max() > NULL_CLASS:
        raise RewardsteerError(f"cond must be None, a class in 0..9 or a ({batch},) tensor of classes; got {cond!r}")
    return y


def check_class_cond(cond: Any, batch: int) -> None:
    """What the MNIST models accept as a condition (`class_labels`), checked before a run starts."""
    if isinstance(cond, torch.Tensor) and cond.is_floating_point():
        raise RewardsteerError(f"cond must hold integer classes 0..9; got a {cond.dtype} tensor")
    try:
        class_labels(cond, batch, "cpu")
    except (TypeError, RuntimeError):
        raise RewardsteerError(f"cond must be None, a class in 0..9 or a ({batch},) tensor of classes; "
                               f"got {cond!r}") from None


@lru_cache(maxsize=4)
def _code_directions(d: int) -> torch.Tensor:
    """(10, d) fixed orthonormal rows (seeded, so every install draws the same prior)."""
    gauss = torch.randn((d, 10), generator=torch.Generator().manual_seed(20261121), dtype=torch.float64)
    return torch.linalg.qr(gauss)[0].T.float().contiguous()


def mixture_weights(code: torch.Tensor, temperature: float = MIXTURE_TEMPERATURE) -> torch.Tensor:
    """(B, 11) class weights softmax(P·u / τ) over the digits (the null class gets 0) from codes u (B, ...)."""
    flat = code.flatten(1)
    logits = flat @ _code_directions(flat.shape[1]).to(flat.device, flat.dtype).T / temperature  # (B, 10)
    return torch.nn.functional.pad(torch.softmax(logits, dim=1), (0, 1))  # (B, 11)


def split_code(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image, class code) of a (B, 2, H, W) state; any other state (a 1-channel image, a toy's vectors) has
    no code."""
    if x.ndim == 4 and x.shape[1] == 2:
        return x[:, :1], x[:, 1:]
    return x, None


class FlowSampler(Sampler):
    """DDIM-style sampler (Song et al. 2021) on the rectified-flow path, with classifier-free guidance.

    With `eta` = 0 it is the deterministic probability-flow ODE (exactly Euler on v); with `eta` = 1 each
    step draws from the DDPM posterior q(x_s | x_t, x̂) (Ho et al. 2020), a Gaussian with explicit mean
    and std, which is what particle methods (FK, DAS, SVDD) need.
    State: (B, 2, 28, 28) = image and class code (`sample_noise` draws both; the code is what cond=None
    samples from, the mixture prior above); a (B, 1, 28, 28) state has no code, and cond=None then means the
    null class without guidance.
    """

    def __init__(self, model: UNet, num_steps: int = 50, guidance: float = 2.0, eta: float = 1.0,
                 temperature: float = MIXTURE_TEMPERATURE):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.model, self.num_steps, self.guidance, self.eta = model, num_steps, guidance, eta
        self.temperature = temperature
        self.state_shape = (2, 28, 28)

    def time(self, i: int) -> float:
        return i / self.num_steps

    def check_cond(self, cond: Any, batch: int) -> None:
        check_class_cond(cond, batch)

    def velocity(self, x: torch.Tensor, t: float, cond: Any, code: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        tt = x.new_full((b,), t)
        if cond is None and code is None:  # the null class: no guidance
            return self.model(x, tt, class_labels(None, b, x.device))
        y = mixture_weights(code, self.temperature) if cond is None else class_labels(cond, b, x.device)
        if self.guidance == 1.0:
            return self.model(x, tt, y)
        null = class_labels(None, b, x.device)
        if y.is_floating_point():  # soft classes: the null class as weights too, so both halves stack
            null = torch.nn.functional.one_hot(null, y.shape[1]).to(y)
        v_c, v_u = self.model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
        return v_u + self.guidance * (v_c - v_u)  # Ho & Salimans 2022, eq. 6

    def predict_x0(self, x, i, cond):
        t = self.time(i)
        image, code = split_code(x)
        x0 = image + (1 - t) * self.velocity(image, t, cond, code)
        return x0 if code is None else torch.cat([x0, code], dim=1)

    def transition(self, x, i, x0_pred):
        t, s = self.time(i), self.time(i + 1)
        (image, code), (x0, _) = split_code(x), split_code(x0_pred)
        eps = (image - t * x0) / (1 - t)  # ε̂ implied by the x0-prediction
        c_x0, c_eps, std = ddim_posterior(t, 1 - t, s, 1 - s, self.eta)
        mean = c_x0 * x0 + c_eps * eps
        if code is None:
            return mean, x.new_tensor(std)
        # the class code rides along unchanged: mean = code, std = 0 on its channel
        return torch.cat([mean, code], dim=1), x.new_tensor([std, 0.0]).view(1, 2, 1, 1)

    def decode(self, x):
        return ((split_code(x)[0].clamp(-1, 1) + 1) / 2).to(x.dtype)


class OneStepUNet(OneStepGenerator):
    """G(z, c) = decode(z + u(z, 0, c)): the distilled one-step generator (`mnist-onestep`). c = None draws
    any digit from the mixture prior with the class code read from z itself (classes uniform, differentiable
    in z); `prior="null"` uses the label-dropout null class instead."""

    def __init__(self, model: UNet, prior: str = "mixture", temperature: float = MIXTURE_TEMPERATURE):
        super().__init__()
        if prior not in ("mixture", "null"):
            raise ValueError(f"prior must be 'mixture' or 'null', got {prior!r}")
        self.model, self.prior, self.temperature = model, prior, temperature
        self.noise_shape = (1, 28, 28)

    def check_cond(self, cond: Any, batch: int) -> None:
        check_class_cond(cond, batch)

    def forward(self, z: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is None and self.prior == "mixture":
            y = mixture_weights(z, self.temperature)
        else:
            y = class_labels(cond, z.shape[0], z.device)
        x = z + self.model(z, z.new_zeros(z.shape[0]), y)
        return ((x.clamp(-1, 1) + 1) / 2).to(z.dtype)


class UnrolledSampler(OneStepGenerator):
    """A few-step deterministic sampler seen as G(z, c), differentiable in z (for ReNO on multi-step models).

    With `checkpoint=True` each step's activations are recomputed during backward (Chen et al. 2016),
    trading one extra forward per step for memory that no longer grows with the number of steps.
    """

    def __init__(self, sampler: Sampler, checkpoint: bool = True):
        super().__init__()
        self.sampler, self.checkpoint = sampler, checkpoint
        self.noise_shape = tuple(sampler.state_shape)
        self.nfe_per_call = sampler.num_steps

    def check_cond(self, cond: Any, batch: int) -> None:
        check = getattr(self.sampler, "check_cond", None)
        if check is not None:
            check(cond, batch)

    def _step(self, x, i, cond):
        return self.sampler.step(x, i, cond, None).mean

    def forward(self, z: torch.Tensor, cond: Any = None) -> torch.Tensor:
        x = z
        for i in range(self.sampler.num_steps):
            if self.checkpoint and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(self._step, x, i, cond, use_reentrant=False)
            else:
                x = self._step(x, i, cond)
        return self.sampler.decode(x)
