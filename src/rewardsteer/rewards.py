"""Basic rewards: classifier log-probabilities, weighted sums, and an ensemble mean with named members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from .core import FunctionReward, Reward
from .errors import RewardsteerError


class ClassifierReward(Reward):
    """log p(target | x) under a classifier; the target is `target` or, if None, the class in `cond`."""

    def __init__(self, net: torch.nn.Module, name: str, target: int | None = None):
        self.net, self.name, self.target, self.differentiable = net, name, target, True

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        target = self.target if self.target is not None else cond
        if target is None:
            raise RewardsteerError(f"reward '{self.name}' needs a target class: pass target= or a class condition")
        logp = F.log_softmax(self.net(samples).float(), dim=1)
        y = torch.as_tensor(target, device=samples.device, dtype=torch.long).expand(samples.shape[0])
        return logp.gather(1, y[:, None]).squeeze(1)


class WeightedSum(Reward):
    """Σ_i w_i · r_i with every member's raw score kept (multi-objective rewards)."""

    def __init__(self, members: Mapping[str, tuple[Reward, float]], name: str = "weighted_sum"):
        if not members:
            raise RewardsteerError("a weighted sum needs at least one member")
        self.members, self.name = dict(members), name
        self.differentiable = all(r.differentiable for r, _ in self.members.values())

    def member_scores(self, samples, cond=None):
        return {name: r(samples, cond) for name, (r, _) in self.members.items()}

    def combine(self, members):
        return sum(w * members[name] for name, (_, w) in self.members.items())


class Ensemble(Reward):
    """Named members reduced by their mean; member scores stay separate for monitors and diagnostics."""

    def __init__(self, members: Mapping[str, Reward] | list[Reward], name: str = "ensemble"):
        if not isinstance(members, Mapping):
            members = {r.name: r for r in members}
        if not members:
            raise RewardsteerError("an ensemble needs at least one member")
        self.members, self.name = dict(members), name
        self.differentiable = all(r.differentiable for r in self.members.values())

    def member_scores(self, samples, cond=None):
        return {name: r(samples, cond) for name, r in self.members.items()}

    def combine(self, members):
        return torch.stack(list(members.values())).mean(0)


def as_reward(obj: Any, name: str | None = None, differentiable: bool = True) -> Reward:
    """A Reward as is, or any callable `fn(samples, cond) -> (B,)` wrapped as one."""
    if isinstance(obj, Reward):
        return obj
    if callable(obj):
        return FunctionReward(obj, name or getattr(obj, "__name__", "reward"), differentiable)
    raise RewardsteerError(f"cannot use {type(obj).__name__} as a reward: pass a Reward or a callable")
