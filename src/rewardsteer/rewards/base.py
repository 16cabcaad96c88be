"""Basic rewards: classifier log-probabilities, and ensembles of named members reduced by a transform chain."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from ..core import FunctionReward, Reward, input_for
from ..errors import RewardsteerError
from .aggregates import Transform, calibrate, chain, mean, reduce, standardize, total, unsteered_samples, weighted
from .stacked import scores_with_stacks, stack_members


def check_target(target: Any, net: torch.nn.Module, name: str) -> int | None:
    """None, or a class index the classifier has (its config's `num_classes`, when it says): one line otherwise,
    at construction rather than a raw IndexError / TypeError at the first score."""
    if target is None:
        return None
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        hint = f" (did you mean target={int(target)}?)" if isinstance(target, str) and target.strip().isdigit() else ""
        raise RewardsteerError(f"reward '{name}': target must be a class index (an int) or None; got {target!r}{hint}")
    classes = (getattr(net, "config", None) or {}).get("num_classes")
    if classes is not None and not 0 <= target < classes:
        raise RewardsteerError(f"reward '{name}': target {target} is not a class of this classifier (0..{classes - 1})")
    return int(target)


class ClassifierReward(Reward):
    """log p(target | x) under a classifier; the target is `target` or, if None, the class in `cond`."""

    def __init__(self, net: torch.nn.Module, name: str, target: int | None = None):
        self.net, self.name, self.target, self.differentiable = net, name, check_target(target, net, name), True

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        self.check_input(samples)
        return self.from_output(self.net(input_for(self.net, samples)), samples, cond)

    def check_input(self, samples: torch.Tensor) -> None:
        """A classifier sees only the image size it was trained on: say so instead of a torch shape error."""
        want = getattr(self.net, "input_shape", None)
        if want is not None and tuple(samples.shape[1:]) != tuple(want):
            got, need = "x".join(map(str, samples.shape[1:])), "x".join(map(str, want))
            raise RewardsteerError(f"'{self.name}' was trained on {need} images; these samples are {got}: "
                                   "use it only with a generator of that image size")

    def _targets(self, samples: torch.Tensor, cond: Any) -> torch.Tensor:
        target = self.target if self.target is not None else cond
        if target is None:
            raise RewardsteerError(f"reward '{self.name}' needs a target class: pass target= or a class condition")
        return torch.as_tensor(target, device=samples.device, dtype=torch.long).expand(samples.shape[0])

    def from_output(self, logits: torch.Tensor, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The score from the network's output (lets an ensemble run many nets in one vectorized call)."""
        logp = F.log_softmax(logits.float(), dim=1)
        return logp.gather(1, self._targets(samples, cond)[:, None]).squeeze(1)

    @torch.no_grad()
    def score_and_hits(self, samples: torch.Tensor, cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(target | x), whether the classifier's top class is the target): what a judge reports."""
        self.check_input(samples)
        logits = self.net(input_for(self.net, samples))
        return self.from_output(logits, samples, cond), logits.argmax(1) == self._targets(samples, cond)


class Ensemble(Reward):
    """Named members reduced by a chain of transforms (default: their mean; see `aggregates`).

    Member scores stay separate for monitors and diagnostics (each method's Result keeps them). Members that
    wrap networks of one architecture (`ClassifierReward`, `BTReward`) can be evaluated in one vectorized call
    (`stacked.StackedNets`, `vectorize=True`, the default; weights are stacked on first use, so later in-place
    changes to them are not seen). Measured speedups over the loop: docs/benchmarks/ensemble_speed.md.
    """

    def __init__(self, members: Mapping[str, Reward] | list[Reward], transform: Transform | None = None,
                 name: str = "ensemble", vectorize: bool = True):
        if not isinstance(members, Mapping):
            named = {r.name: r for r in members}
            if len(named) != len(members):
                raise RewardsteerError("ensemble members need distinct names: pass a dict {name: reward}")
            members = named
        if not members:
            raise RewardsteerError("an ensemble needs at least one member")
        self.members, self.name = dict(members), name
        self.transform = transform if transform is not None else mean()
        self.vectorize = vectorize
        self.differentiable = all(r.differentiable for r in self.members.values())
        self._stacks = None

    def member_scores(self, samples, cond=None):
        if not self.vectorize:
            return {name: r(samples, cond) for name, r in self.members.items()}
        if self._stacks is None:
            self._stacks = stack_members(self.members)
        return scores_with_stacks(self.members, self._stacks, samples, cond)

    def combine(self, members):
        return reduce(self.transform, members)

    def with_transform(self, *transforms: Transform, name: str | None = None) -> Ensemble:
        """The same members under another chain, e.g. `ens.with_transform(wco())`."""
        return type(self)._from(self, chain(*transforms), name or self.name)

    def calibrated(self, generator, n: int = 256, cond: Any = None, seed: int = 12345) -> Ensemble:
        """Members standardized to mean 0, sd 1 on n unsteered samples G(z, cond), then this ensemble's chain."""
        stats = calibrate(self, unsteered_samples(generator, n, cond, seed), cond)
        ens = type(self)._from(self, chain(standardize(stats), self.transform), self.name)
        ens.calibration = stats
        return ens

    @classmethod
    def _from(cls, other: Ensemble, transform: Transform, name: str) -> Ensemble:
        ens = Ensemble.__new__(cls)
        ens.__dict__.update(other.__dict__)
        ens.transform, ens.name = transform, name
        return ens


class WeightedSum(Ensemble):
    """Σ_i w_i · r_i with every member's raw score kept (multi-objective rewards): an ensemble whose chain is
    `weighted(w) > total()`; prepend `standardize` (via `calibrated`) to put objectives on one scale."""

    def __init__(self, members: Mapping[str, tuple[Reward, float]], name: str = "weighted_sum"):
        if not members:
            raise RewardsteerError("a weighted sum needs at least one member")
        self.weights = {k: float(w) for k, (_, w) in members.items()}
        super().__init__({k: r for k, (r, _) in members.items()}, chain(weighted(self.weights), total()), name)


def as_reward(obj: Any, name: str | None = None, differentiable: bool = True) -> Reward:
    """A Reward as is, or any callable `fn(samples, cond) -> (B,)` wrapped as one."""
    if isinstance(obj, Reward):
        return obj
    if callable(obj):
        return FunctionReward(obj, name or getattr(obj, "__name__", "reward"), differentiable)
    raise RewardsteerError(f"cannot use {type(obj).__name__} as a reward: pass a Reward or a callable")
