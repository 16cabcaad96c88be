"""Samplers for the rectified-flow UNet, and one-step generators built from it.

Notation (rectified flow, Liu et al. 2023): x_t = α_t·x + σ_t·ε with α_t = t, σ_t = 1 − t; t = 0 is noise,
t = 1 data; the network predicts the velocity v = x − ε. From v: x̂ = x_t + (1 − t)·v and
ε̂ = (x_t − α_t·x̂)/σ_t. Model space is [-1, 1]; `decode` maps to [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .core import OneStepGenerator, Sampler, ddim_posterior
from .nets import UNet

NULL_CLASS = 10  # the label-dropout class: "any digit"


def class_labels(cond: Any, batch: int, device) -> torch.Tensor:
    """MNIST conditions: None (unconditional), an int class shared by the batch, or a (B,) tensor of classes
    (10 = unconditional)."""
    if cond is None:
        return torch.full((batch,), NULL_CLASS, device=device, dtype=torch.long)
    y = torch.as_tensor(cond, device=device, dtype=torch.long)
    if y.ndim == 0:
        y = y.expand(batch)
    if y.shape != (batch,) or y.min() < 0 or y.max() > NULL_CLASS:
        raise ValueError(f"cond must be None, a class in 0..9 or a ({batch},) tensor of classes; got {cond!r}")
    return y


class FlowSampler(Sampler):
    """DDIM-style sampler (Song et al. 2021) on the rectified-flow path, with classifier-free guidance.

    With `eta` = 0 it is the deterministic probability-flow ODE (exactly Euler on v); with `eta` = 1 each
    step draws from the DDPM posterior q(x_s | x_t, x̂) (Ho et al. 2020), a Gaussian with explicit mean
    and std, which is what particle methods (FK, DAS, SVDD) need.
    """

    def __init__(self, model: UNet, num_steps: int = 50, guidance: float = 2.0, eta: float = 1.0):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.model, self.num_steps, self.guidance, self.eta = model, num_steps, guidance, eta
        self.state_shape = (1, 28, 28)

    def time(self, i: int) -> float:
        return i / self.num_steps

    def velocity(self, x: torch.Tensor, t: float, cond: Any) -> torch.Tensor:
        b = x.shape[0]
        y = class_labels(cond, b, x.device)
        tt = x.new_full((b,), t)
        if self.guidance == 1.0 or cond is None:  # unconditional: the null class, no guidance
            return self.model(x, tt, y)
        null = torch.full_like(y, self.model.num_classes)
        v_c, v_u = self.model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
        return v_u + self.guidance * (v_c - v_u)  # Ho & Salimans 2022, eq. 6

    def predict_x0(self, x, i, cond):
        t = self.time(i)
        return x + (1 - t) * self.velocity(x, t, cond)

    def transition(self, x, i, x0_pred):
        t, s = self.time(i), self.time(i + 1)
        eps = (x - t * x0_pred) / (1 - t)  # ε̂ implied by the x0-prediction
        c_x0, c_eps, std = ddim_posterior(t, 1 - t, s, 1 - s, self.eta)
        return c_x0 * x0_pred + c_eps * eps, x.new_tensor(std)

    def decode(self, x):
        return ((x.clamp(-1, 1) + 1) / 2).to(x.dtype)


class OneStepUNet(OneStepGenerator):
    """G(z, c) = decode(z + u(z, 0, c)): the distilled one-step generator (`mnist-onestep`); c = None draws
    any digit (the unconditional model), which leaves a reward the most room to steer."""

    def __init__(self, model: UNet):
        super().__init__()
        self.model = model
        self.noise_shape = (1, 28, 28)

    def forward(self, z: torch.Tensor, cond: Any = None) -> torch.Tensor:
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
