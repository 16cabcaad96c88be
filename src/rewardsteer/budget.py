"""Compute accounting: what a run spent (NFE, backward passes, reward calls, seconds, peak memory) and
the budget that may stop it. Every count is per sample: a generator call on a batch of B noises costs
B × `nfe_per_call` NFE, a backward pass through it B, a reward call B. Held-out monitors are counted
separately and never charged, since they measure the run rather than drive it.
"""

from __future__ import annotations

import math
import numbers
import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch

from .errors import RewardsteerError


@dataclass(frozen=True)
class Budget:
    """Upper bounds; None means unbounded. Any bound reached stops the run before it is exceeded."""

    nfe: int | None = None
    backward: int | None = None
    reward_calls: int | None = None
    seconds: float | None = None

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise RewardsteerError(f"budget {name} takes a number, got {value!r}")
            if name != "seconds" and not isinstance(value, numbers.Integral):
                raise RewardsteerError(f"budget {name} takes a whole number, got {value!r}")
            if not math.isfinite(value):
                raise RewardsteerError(f"budget {name} must be a finite number, got {value}")
            if value <= 0:
                raise RewardsteerError(f"budget {name} must be positive, got {value}")


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on a GPU; on CPU the process's peak resident set (ru_maxrss)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class Meter:
    """Counts what one run spends and says whether the next unit of work still fits the budget."""

    def __init__(self, budget: Budget | None = None, device: torch.device | str = "cpu"):
        self.budget = budget or Budget()
        self.device = torch.device(device)
        self.nfe = self.backward = self.reward_calls = self.heldout_calls = self.skipped = 0
        self.baseline_nfe = 0  # particle methods: the plain samples of the "before", reported, never charged
        self.start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def charge(self, nfe: int = 0, backward: int = 0, reward_calls: int = 0) -> None:
        self.nfe += nfe
        self.backward += backward
        self.reward_calls += reward_calls

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def stop_reason(self, nfe: int = 0, backward: int = 0, reward_calls: int = 0) -> str | None:
        """Why the next unit of work (costing the given amounts) must not run, or None if it fits."""
        b = self.budget
        for name, spent, cost, bound in (("nfe", self.nfe, nfe, b.nfe), ("backward", self.backward, backward, b.backward),
                                         ("reward_calls", self.reward_calls, reward_calls, b.reward_calls)):
            if bound is not None and spent + cost > bound:
                return f"budget:{name}"
        if b.seconds is not None and self.seconds >= b.seconds:
            return "budget:seconds"
        return None

    def units_that_fit(self, wanted: int, nfe: int = 0, backward: int = 0, reward_calls: int = 0) -> int:
        """How many of `wanted` units (each costing the given amounts) fit in what is left of the budget."""
        if self.stop_reason() is not None:
            return 0
        b, fit = self.budget, wanted
        for spent, cost, bound in ((self.nfe, nfe, b.nfe), (self.backward, backward, b.backward),
                                   (self.reward_calls, reward_calls, b.reward_calls)):
            if bound is not None and cost > 0:
                fit = min(fit, (bound - spent) // cost)
        return max(fit, 0)

    def spent(self) -> dict:
        out = {"nfe": self.nfe, "backward": self.backward, "reward_calls": self.reward_calls,
               "heldout_calls": self.heldout_calls, "skipped": self.skipped,
               "seconds": round(self.seconds, 4), "peak_memory_mb": round(peak_memory_mb(self.device), 1)}
        if self.baseline_nfe:
            out["baseline_nfe"] = self.baseline_nfe
        return out
