"""Builders: how a `RunSpec` becomes a generator, a reward, held-out monitors and a method call.

One builder per kind of generator: the bundled MNIST models (`images`), masked diffusion over molecules
(`molecules`) and diffusers pipelines (`pipelines`). Each registers itself here; `builder_for(spec)` picks the
first whose `accepts(spec)` holds. A new kind of generator is a new module with a builder and one `register`
call: no front-end changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import RewardsteerError
from .spec import RunSpec


@dataclass
class Plan:
    """Everything a run needs, nothing run yet: `method(generator, reward, **kwargs)` is the run, `write` saves
    its Result into a folder (returning {name: path}) and `notes` are lines for the user about the set-up."""

    generator: Any
    reward: Any
    heldout: dict
    method: Callable
    kwargs: dict
    write: Callable
    notes: list[str] = field(default_factory=list)

    def run(self, callback=None, progress: bool = True):
        """Call the method (with a callback(state) -> dict | None when given; see docs/steering.md)."""
        extra = {"callback": callback} if callback is not None else {}
        return self.method(self.generator, self.reward, **self.kwargs, **extra, progress=progress)


class Builder(Protocol):
    name: str

    def accepts(self, spec: RunSpec) -> bool: ...

    def check(self, spec: RunSpec) -> None:
        """The names and combinations the run needs, checked before any compute (a one-line RewardsteerError)."""

    def build(self, spec: RunSpec) -> Plan: ...


BUILDERS: list[Builder] = []


def register(builder: Builder) -> Builder:
    """Add a builder; later registrations are tried first, so a plug-in can take over a kind of spec."""
    BUILDERS.insert(0, builder)
    return builder


def builder_for(spec: RunSpec) -> Builder:
    for b in BUILDERS:
        if b.accepts(spec):
            return b
    raise RewardsteerError(f"no builder accepts model '{spec.model}'")


def check(spec: RunSpec) -> RunSpec:
    """Every check a run makes before it spends compute (names, specs, method/model pairs, budgets); returns `spec`."""
    budget_of(spec)
    builder_for(spec).check(spec)
    return spec


def build(spec: RunSpec) -> Plan:
    """The generator or sampler, the reward, the held-out monitors and the method call of `spec`."""
    builder = builder_for(spec)
    builder.check(spec)
    return builder.build(spec)


def budget_of(spec: RunSpec):
    from ..budget import Budget

    return Budget(spec.max_nfe, spec.max_backward, spec.max_reward_calls, spec.max_seconds)


def pick_knobs(spec: RunSpec, method_name: str) -> dict:
    """The particle method's own knobs from `spec` (those it takes, when set)."""
    wanted = {"fk_steering": ("potential", "lam", "interval", "ess_threshold", "resampling"),
              "das": ("alpha", "ess_threshold", "resampling"), "svdd": ("alpha",),
              "reward_guidance": ("scale",)}.get(method_name, ())
    return {k: getattr(spec, k) for k in wanted if getattr(spec, k) is not None}


def one_step_kwargs(spec: RunSpec) -> dict:
    """The knobs of a one-step method (best_of_n, random_search, zero_order_search, reno)."""
    return {"best_of_n": dict(n=spec.n, candidates=spec.candidates),
            "random_search": dict(n=spec.n, iters=spec.iters, candidates=spec.candidates),
            "zero_order_search": dict(n=spec.n, iters=spec.iters),
            "reno": dict(n=spec.n, iters=spec.iters, reg=spec.reg, lr=spec.lr, optimizer=spec.optimizer)}[spec.method or "reno"]


def image_writer(result, out: str | Path) -> dict[str, Path]:
    from ..report import write_report

    return write_report(result, out)
