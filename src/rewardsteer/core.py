"""The three kinds of object every method works on: one-step generators, multi-step samplers, rewards.

Conventions (DESIGN.md): samples are images in [0, 1], shape (B, C, H, W); device and dtype follow the
input tensors; randomness comes from an explicit `torch.Generator`; `cond` is None, one value shared by
the batch, or a tensor with one row per sample (see `select_cond`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import RewardsteerError


def select_cond(cond: Any, index: torch.Tensor | slice, batch: int) -> Any:
    """The rows of a per-sample condition (leading dim == batch); shared conditions pass through."""
    if isinstance(cond, torch.Tensor) and cond.ndim > 0 and cond.shape[0] == batch:
        return cond[index]
    return cond


def make_rng(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator from a seed (or the one given); methods never touch the global RNG."""
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(0 if seed is None else int(seed))


def reference(module: Any) -> torch.Tensor:
    """A tensor carrying a module's device and dtype: its first parameter, else its first buffer, else a CPU
    float32 scalar (a generator or sampler without weights)."""
    if isinstance(module, torch.nn.Module):
        for t in (*module.parameters(), *module.buffers()):
            return t
    return torch.zeros(())


class OneStepGenerator(torch.nn.Module):
    """G(z, cond) -> samples, differentiable in z (SD-Turbo, consistency models, unrolled few-step samplers).

    Subclasses set `noise_shape` (per sample) and `nfe_per_call` (generator evaluations per sample per call)
    and implement `forward(z, cond)`. They must not wrap `forward` in no_grad: noise optimization
    backpropagates through it, and the caller chooses.
    """

    noise_shape: tuple[int, ...]
    nfe_per_call: int = 1

    def sample_noise(self, n: int, generator: torch.Generator, device=None, dtype=None) -> torch.Tensor:
        ref = reference(self)
        return torch.randn((n, *self.noise_shape), generator=generator, device=generator.device).to(
            device or ref.device, dtype or ref.dtype)


class Transition:
    """The law of x_{i+1} given x_i: what the particle methods need of one sampler step, in either world.

    `draw_noise(generator)` draws the step's randomness (Gaussian ε, or uniforms for categorical steps);
    `sample(noise)` is a deterministic function of it (noise None: the mean / the unchanged state), so a
    particle's path is reproducible; `log_prob(x_next)` is per sample (N,); `repeat(m)` gives the law of m
    independent copies of each row (candidates, rows repeated m times in place).
    """

    deterministic: bool

    def draw_noise(self, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, noise: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x_next: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def repeat(self, m: int) -> Transition:
        raise NotImplementedError


def _repeat_rows(t: torch.Tensor, m: int) -> torch.Tensor:
    """Rows repeated m times in place; a tensor without a per-row dim (a shared std) stays as it is."""
    return t if t.ndim == 0 or t.shape[0] == 1 else t.repeat_interleave(m, 0)


class GaussianTransition(Transition):
    """x_{i+1} ~ N(mean, std²) elementwise; std broadcasts to mean and is 0 on a deterministic step."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | float):
        self.mean, self.std = mean, torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
        self.deterministic = not bool((self.std > 0).any())

    def draw_noise(self, generator):
        return torch.randn(self.mean.shape, generator=generator, device=generator.device).to(self.mean)

    def sample(self, noise):
        return self.mean if noise is None else self.mean + self.std * noise

    def log_prob(self, x_next):
        z = (x_next - self.mean) / self.std
        return (-0.5 * z**2 - self.std.log() - 0.5 * math.log(2 * math.pi)).expand_as(x_next).flatten(1).double().sum(1)

    def repeat(self, m):
        return GaussianTransition(self.mean.repeat_interleave(m, 0), _repeat_rows(self.std, m))


@dataclass
class StepOutput:
    """One transition x_i -> x_{i+1} of a stochastic sampler: x_next ~ N(mean, std²)."""

    x_next: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor  # broadcastable to mean; 0 on the last step
    x0_pred: torch.Tensor  # model-space prediction of the clean sample


class Sampler(torch.nn.Module):
    """A multi-step sampler exposing, per step, the x0-prediction and the law of the transition.

    Step i (0-based, `num_steps` in all) maps x_i -> x_{i+1}; x_0 is the start (Gaussian noise, or all
    [mask] tokens), x_{num_steps} the sample. The step noise is passed in explicitly so every particle is
    reproducible. `decode` maps model space to samples (images in [0, 1]; token ids for sequences).
    Gaussian samplers implement `transition` (mean, std); others override `distribution` and
    `initial_state`. The particle methods use only `initial_state`, `predict_x0`, `distribution`, `decode`.
    """

    num_steps: int
    state_shape: tuple[int, ...]
    continuous: bool = True  # False for token states: no gradient with respect to the state

    def predict_x0(self, x: torch.Tensor, i: int, cond: Any) -> torch.Tensor:  # one NFE per sample
        raise NotImplementedError

    def transition(self, x: torch.Tensor, i: int, x0_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of x_{i+1} given x_i and the x0-prediction (Gaussian samplers)."""
        raise NotImplementedError

    def distribution(self, x: torch.Tensor, i: int, x0_pred: torch.Tensor) -> Transition:
        """The law of x_{i+1} given x_i and the x0-prediction."""
        return GaussianTransition(*self.transition(x, i, x0_pred))

    def initial_state(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of x_0 on the sampler's device: standard Gaussian noise of `state_shape`."""
        ref = reference(self)
        return torch.randn((n, *self.state_shape), generator=generator, device=generator.device).to(ref.device, ref.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, x: torch.Tensor, i: int, cond: Any, noise: torch.Tensor | None) -> StepOutput:
        x0 = self.predict_x0(x, i, cond)
        mean, std = self.transition(x, i, x0)
        x_next = mean if noise is None else mean + std * noise
        return StepOutput(x_next, mean, std, x0)

    def sample_noise(self, n: int, generator: torch.Generator, device=None, dtype=None) -> torch.Tensor:
        ref = reference(self)
        return torch.randn((n, *self.state_shape), generator=generator, device=generator.device).to(
            device or ref.device, dtype or ref.dtype)

    def sample(self, noise: torch.Tensor, cond: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Run every step from `noise` (x_0) and decode; fresh step noise comes from `generator` wherever a
        step is stochastic (so a deterministic sampler needs no generator)."""
        x = noise
        for i in range(self.num_steps):
            dist = self.distribution(x, i, self.predict_x0(x, i, cond))
            x = dist.sample(None if dist.deterministic else dist.draw_noise(generator))
        return self.decode(x)


def ddim_posterior(a_t: float, s_t: float, a_s: float, s_s: float, eta: float) -> tuple[float, float, float]:
    """(c_x0, c_eps, std) of the step x_t -> x_s ~ N(c_x0·x̂ + c_eps·ε̂, std²) on a Gaussian path x = α·x̂ + σ·ε.

    DDIM (Song et al. 2021) eq. 12 with eq. 16's std = η·σ_s·√(1 − (α_t σ_s / (α_s σ_t))²): η = 0 is the
    deterministic DDIM / probability-flow step, η = 1 the DDPM posterior q(x_s | x_t, x̂) (Ho et al. 2020);
    every η keeps the path's marginals when x̂ is exact.
    """
    ratio = (a_t * s_s) / (a_s * s_t)
    std = eta * s_s * math.sqrt(max(0.0, 1 - ratio**2))
    return a_s, math.sqrt(max(s_s**2 - std**2, 0.0)), std


class RewardError(RewardsteerError):
    """A reward returned something other than one finite-or-NaN score per sample."""


class Reward:
    """Maps a batch of samples (+ condition) to one score per sample, keeping each member's score.

    `member_scores` returns {member name: (B,) scores}; `combine` reduces them to the (B,) objective.
    A plain reward has one member, itself. `differentiable` says whether gradients flow to the samples.
    """

    name: str = "reward"
    differentiable: bool = True

    def member_scores(self, samples: torch.Tensor, cond: Any = None) -> dict[str, torch.Tensor]:
        return {self.name: self.score(samples, cond)}

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        raise NotImplementedError

    def combine(self, members: dict[str, torch.Tensor]) -> torch.Tensor:
        (only,) = members.values()
        return only

    def evaluate(self, samples: torch.Tensor, cond: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(objective (B,), members) with each member's output checked for shape."""
        members = self.member_scores(samples, cond)
        b = samples.shape[0]
        for name, s in members.items():
            if not isinstance(s, torch.Tensor) or s.shape != (b,):
                got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise RewardError(f"reward '{name}' returned shape {got} for a batch of {b}; expected ({b},)")
        return self.combine(members), members

    def __call__(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.evaluate(samples, cond)[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Reward:
        """Move every network this reward holds (and those of the rewards it wraps: ensemble members, robust
        wrappers) to `device` and, if given, `dtype`; returns self. The bundled rewards cast their input to their
        network's dtype, so an fp16/bf16 generator can feed an fp32 reward."""
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if kwargs:
            for obj in _reachable(self, set()):
                if isinstance(obj, torch.nn.Module):
                    obj.to(**kwargs)
                elif hasattr(obj, "_stacks"):
                    obj._stacks = None  # stacked ensemble weights are rebuilt from the moved members
        return self


def _reachable(value: Any, seen: set):
    """The rewards, nn.Modules and torch.Generators reachable from `value` (attributes of rewards, dicts, lists,
    bound methods such as net.features), each once, in attribute order."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, (torch.nn.Module, torch.Generator)):
        yield value
    elif isinstance(value, Reward):
        yield value
        yield from _reachable(vars(value), seen)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _reachable(v, seen)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _reachable(v, seen)
    elif isinstance(getattr(value, "__self__", None), torch.nn.Module):
        yield from _reachable(value.__self__, seen)


def reward_generators(reward: Reward) -> list[torch.Generator]:
    """The random generators a reward draws from (e.g. a robust wrapper's transformations): what a resumable
    training run must save to replay the same stream."""
    return [g for g in _reachable(reward, set()) if isinstance(g, torch.Generator)]


def input_for(net: torch.nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """Samples in the dtype of the network about to score them (floating samples only)."""
    dtype = reference(net).dtype
    return samples.to(dtype) if samples.is_floating_point() and samples.dtype != dtype else samples


class FunctionReward(Reward):
    """Any callable `fn(samples, cond) -> (B,)` as a reward."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str, differentiable: bool = True):
        self.fn, self.name, self.differentiable = fn, name, differentiable

    def score(self, samples, cond=None):
        return self.fn(samples, cond)
