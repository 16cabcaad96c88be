"""Your own model as a generator or a sampler: `as_generator` and `as_sampler`, and the checks every method runs
on what it is given (`one_step_generator`, `sampler`, `check_cond`, `check_budget`).

Protocols (what a plain object needs; `as_generator` / `as_sampler` wrap it, and every method wraps a plain
object that satisfies them by itself):

- one-step generator: callable `G(z, cond) -> samples` (or `G(z)`), differentiable in z, with `noise_shape`
  (one sample's noise) and optionally `nfe_per_call` (network evaluations per sample per call; default 1);
- sampler: `num_steps`, `state_shape`, `predict_x0(x, i, cond) -> x̂0` (one network evaluation per sample) and
  `transition(x, i, x0_pred) -> (mean, std)` of x_{i+1} (or `distribution(...) -> Transition`), optionally
  `decode(x) -> samples` (default: the identity) and `continuous` (default True).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any

import torch

from .core import GaussianTransition, OneStepGenerator, Sampler, Transition
from .errors import RewardsteerError

ONE_STEP_METHODS = "best_of_n, random_search, zero_order_search, reno"
SAMPLER_METHODS = "fk_steering, das, svdd, trajectory_best_of_n, reward_guidance"


class RewardsteerWarning(UserWarning):
    """Something the user should know about a run that still returned (e.g. fewer outputs than asked)."""


def takes_cond(fn: Callable) -> bool:
    """Whether `fn` accepts a second positional argument (the condition)."""
    try:
        params = list(inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn).parameters.values())
    except (TypeError, ValueError):  # builtins and C extensions: assume the full signature
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 2


def _anchor(module: torch.nn.Module, fns, device, dtype) -> None:
    """A zero-size buffer that carries device and dtype when the wrapped callables hold no weights of their own
    (so `.to()` moves the noise, and methods find where to put it)."""
    owns = any(isinstance(f, torch.nn.Module) and any(True for _ in (*f.parameters(), *f.buffers())) for f in fns)
    if not owns or device is not None or dtype is not None:
        module.register_buffer("_anchor", torch.zeros(0, device=device, dtype=dtype or torch.float32), persistent=False)


class FunctionGenerator(OneStepGenerator):
    """A callable `fn(z, cond) -> samples` (a function or an `nn.Module`) as a `OneStepGenerator`; see `as_generator`."""

    def __init__(self, fn: Callable, noise_shape, nfe_per_call: int = 1, name: str | None = None,
                 device=None, dtype=None):
        super().__init__()
        if not callable(fn):
            raise RewardsteerError(f"as_generator needs a callable G(z, cond) -> samples; got {type(fn).__name__}")
        shape = (noise_shape,) if isinstance(noise_shape, numbers.Integral) else noise_shape
        if not (isinstance(shape, (tuple, list, torch.Size)) and shape and
                all(isinstance(d, numbers.Integral) and d > 0 for d in shape)):
            raise RewardsteerError(f"noise_shape must be the shape of one sample's noise, e.g. (1, 28, 28); got "
                                   f"{noise_shape!r}")
        if not isinstance(nfe_per_call, numbers.Integral) or nfe_per_call < 1:
            raise RewardsteerError(f"nfe_per_call must be a positive integer, got {nfe_per_call!r}")
        self.fn = fn  # an nn.Module is registered as a submodule: .to(), .parameters() reach it
        self.noise_shape, self.nfe_per_call = tuple(int(d) for d in shape), int(nfe_per_call)
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self._with_cond = takes_cond(fn)
        _anchor(self, [fn], device, dtype)

    def forward(self, z: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if self._with_cond:
            return self.fn(z, cond)
        if cond is not None:
            raise RewardsteerError(f"generator '{self.name}' takes no condition (it is fn(z)); got cond={cond!r}")
        return self.fn(z)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, noise_shape={self.noise_shape}, nfe_per_call={self.nfe_per_call}"


def as_generator(fn: Callable, noise_shape, nfe_per_call: int = 1, *, name: str | None = None, device=None,
                 dtype=None) -> OneStepGenerator:
    """Any callable `fn(z, cond) -> samples` (or `fn(z)`) as a one-step generator for best-of-N, search and ReNO.

    `noise_shape` is one sample's noise (z has shape (B, *noise_shape)); `nfe_per_call` is what one call costs
    per sample in network evaluations (an S-step sampler unrolled inside fn: S). An `nn.Module` keeps its
    parameters (`.to()` moves them); for a plain function, `device` / `dtype` say where its noise lives. A
    OneStepGenerator is returned as it is. `fn` must stay differentiable in z for ReNO.
    """
    if isinstance(fn, OneStepGenerator):
        return fn
    return FunctionGenerator(fn, noise_shape, nfe_per_call, name, device, dtype)


class FunctionSampler(Sampler):
    """A sampler from two callables, `predict_x0(x, i, cond)` and `transition(x, i, x0_pred)`; see `as_sampler`."""

    def __init__(self, predict_x0: Callable, transition: Callable, num_steps: int, state_shape, decode=None,
                 continuous: bool = True, name: str | None = None, device=None, dtype=None):
        super().__init__()
        for what, f in (("predict_x0", predict_x0), ("transition", transition)):
            if not callable(f):
                raise RewardsteerError(f"as_sampler needs a callable {what}; got {type(f).__name__}")
        if not isinstance(num_steps, numbers.Integral) or num_steps < 1:
            raise RewardsteerError(f"num_steps must be a positive integer, got {num_steps!r}")
        shape = (state_shape,) if isinstance(state_shape, numbers.Integral) else state_shape
        if not (isinstance(shape, (tuple, list, torch.Size)) and shape):
            raise RewardsteerError(f"state_shape must be the shape of one sample's state, e.g. (1, 28, 28); got "
                                   f"{state_shape!r}")
        self._predict, self._transition, self._decode = predict_x0, transition, decode
        for key, f in (("predict_module", predict_x0), ("transition_module", transition), ("decode_module", decode)):
            if isinstance(f, torch.nn.Module):
                self.add_module(key, f)
        self.num_steps, self.state_shape, self.continuous = int(num_steps), tuple(int(d) for d in shape), continuous
        self.name = name or getattr(predict_x0, "__name__", type(predict_x0).__name__)
        _anchor(self, [predict_x0, transition, decode], device, dtype)

    def predict_x0(self, x, i, cond):
        return self._predict(x, i, cond)

    def distribution(self, x, i, x0_pred) -> Transition:
        out = self._transition(x, i, x0_pred)
        if isinstance(out, Transition):
            return out
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise RewardsteerError(f"sampler '{self.name}': transition must return (mean, std) or a Transition; "
                                   f"got {type(out).__name__}")
        return GaussianTransition(out[0], out[1])

    def transition(self, x, i, x0_pred):
        dist = self.distribution(x, i, x0_pred)
        if not isinstance(dist, GaussianTransition):
            raise RewardsteerError(f"sampler '{self.name}' has a non-Gaussian transition: no (mean, std)")
        return dist.mean, dist.std

    def decode(self, x):
        return x if self._decode is None else self._decode(x)


def as_sampler(predict_x0: Any, transition: Callable | None = None, *, num_steps: int | None = None,
               state_shape=None, decode: Callable | None = None, continuous: bool = True, name: str | None = None,
               device=None, dtype=None) -> Sampler:
    """A multi-step stochastic sampler for the particle methods (FK, DAS, SVDD, best-of-N over trajectories,
    reward guidance), from `predict_x0(x, i, cond) -> x̂0` and `transition(x, i, x0_pred) -> (mean, std)` (the
    Gaussian law of x_{i+1}; or a `Transition`). Steps i = 0..num_steps−1 run from x_0 ~ N(0, I) of
    `state_shape`; `decode` maps the final state to samples (default: the identity).

    `as_sampler(obj)` also wraps an object that has those attributes (`predict_x0`, `transition` or
    `distribution`, `num_steps`, `state_shape`, optional `decode`, `continuous`); a `Sampler` is returned as is.
    `rewardsteer.core.ddim_posterior` gives the DDIM/DDPM step's coefficients for a Gaussian-path model.
    """
    if isinstance(predict_x0, Sampler):
        return predict_x0
    if transition is None and hasattr(predict_x0, "predict_x0"):  # an object satisfying the protocol
        obj = predict_x0
        missing = [a for a in ("num_steps", "state_shape") if not hasattr(obj, a)]
        if not (hasattr(obj, "transition") or hasattr(obj, "distribution")):
            missing.append("transition (or distribution)")
        if missing:
            raise RewardsteerError(f"{type(obj).__name__} is not a sampler: it lacks {', '.join(missing)}")
        return FunctionSampler(obj.predict_x0, getattr(obj, "distribution", None) or obj.transition, obj.num_steps,
                               obj.state_shape, getattr(obj, "decode", None), getattr(obj, "continuous", True),
                               name or type(obj).__name__, device, dtype)
    if transition is None or num_steps is None or state_shape is None:
        raise RewardsteerError("as_sampler needs predict_x0, transition, num_steps= and state_shape= (or one object "
                               "with those attributes)")
    return FunctionSampler(predict_x0, transition, num_steps, state_shape, decode, continuous, name, device, dtype)


# -- what every method checks before it runs ----------------------------------------------------------------


def _describe(obj: Any) -> str:
    return obj.__name__ if inspect.isfunction(obj) else type(obj).__name__


def _is_sampler_like(obj: Any) -> bool:
    return isinstance(obj, Sampler) or (hasattr(obj, "predict_x0") and hasattr(obj, "num_steps"))


def one_step_generator(obj: Any, method: str) -> OneStepGenerator:
    """`obj` as a one-step generator, or a RewardsteerError naming `method`, what it needs and what it got."""
    if isinstance(obj, OneStepGenerator):
        if not hasattr(obj, "noise_shape"):
            raise RewardsteerError(f"{method}: {_describe(obj)} sets no noise_shape (the shape of one sample's noise)")
        return obj
    if _is_sampler_like(obj):
        raise RewardsteerError(
            f"{method} needs a one-step generator G(z, cond) -> samples; got {_describe(obj)}, a multi-step sampler "
            f"({getattr(obj, 'num_steps', '?')} steps): steer it with {SAMPLER_METHODS}, or unroll it into a one-step "
            "generator with rewardsteer.flow.UnrolledSampler(sampler) (for mnist-flow: models.unrolled_flow(steps))")
    if callable(obj) and hasattr(obj, "noise_shape"):
        return as_generator(obj, obj.noise_shape, getattr(obj, "nfe_per_call", 1))
    if callable(obj):
        raise RewardsteerError(
            f"{method} needs a one-step generator; {_describe(obj)} has no noise_shape: wrap it as "
            "rs.as_generator(model, noise_shape=(C, H, W)) (the shape of one sample's noise; nfe_per_call= what one "
            "call costs per sample, default 1)")
    raise RewardsteerError(f"{method} needs a one-step generator G(z, cond) -> samples (see rs.as_generator); "
                           f"got {_describe(obj)}")


def sampler(obj: Any, method: str) -> Sampler:
    """`obj` as a multi-step sampler, or a RewardsteerError naming `method`, what it needs and what it got."""
    if isinstance(obj, Sampler):
        return obj
    if _is_sampler_like(obj):
        return as_sampler(obj)
    if isinstance(obj, OneStepGenerator) or (callable(obj) and hasattr(obj, "noise_shape")):
        raise RewardsteerError(
            f"{method} needs a multi-step sampler (per step an x0-prediction and a Gaussian transition); got "
            f"{_describe(obj)}, a one-step generator G(z, cond): steer it with {ONE_STEP_METHODS} (for mnist-flow's "
            "sampler: models.flow_sampler(steps))")
    raise RewardsteerError(f"{method} needs a multi-step sampler (see rs.as_sampler: predict_x0, transition, "
                           f"num_steps, state_shape); got {_describe(obj)}")


def check_cond(cond: Any, method: str, n: int, model: Any = None, shared_only: bool = False) -> Any:
    """The condition normalized (a list or tuple of numbers becomes a tensor) and checked: None, one number
    shared by the run, or one entry per output (length n). Strings are refused (a prompt belongs in the
    generator, as `rewardsteer.hf.from_diffusers(pipe, prompt)` does). `shared_only`: methods that draw every
    candidate for one condition. A model's own `check_cond(cond, batch)` (class range, ...) runs last."""
    if cond is None:
        return None
    if isinstance(cond, str) or (isinstance(cond, (list, tuple)) and any(isinstance(c, str) for c in cond)):
        hint = f" (did you mean cond={int(cond)}?)" if isinstance(cond, str) and cond.strip().isdigit() else ""
        raise RewardsteerError(f"{method}: cond must be None, a number, or a tensor / list with one entry per output; "
                               f"got the string {cond!r}{hint}")
    if isinstance(cond, bool):
        raise RewardsteerError(f"{method}: cond must be None, a number or a tensor; got {cond!r}")
    if isinstance(cond, (list, tuple)):
        try:
            cond = torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):
            raise RewardsteerError(f"{method}: cond as a list must hold numbers, one per output; got {cond!r}") from None
    if isinstance(cond, torch.Tensor) and cond.ndim > 0:
        if shared_only and cond.numel() > 1:
            raise RewardsteerError(
                f"{method} draws every candidate for one shared condition; got {cond.shape[0]} conditions: pass one "
                "value (e.g. cond=3) and run it once per condition")
        if shared_only:
            cond = cond.reshape(())
        elif cond.shape[0] != n:
            raise RewardsteerError(f"{method}: cond has {cond.shape[0]} entries but the run returns n={n} outputs; "
                                   "pass one entry per output, or one value shared by all")
    check = getattr(model, "check_cond", None)
    if check is not None:
        try:
            check(cond, n)
        except RewardsteerError as e:
            raise RewardsteerError(f"{method}: {e}") from None
    return cond


def check_budget(method: str, budget, what: str, **cost: int) -> None:
    """Refuse a budget that cannot pay for the least work that yields the asked outputs (`what`, costing `cost`
    in nfe / backward / reward_calls), instead of returning fewer outputs than asked."""
    if budget is None:
        return
    if not all(hasattr(budget, k) for k in ("nfe", "backward", "reward_calls", "seconds")):
        hint = ""
        if isinstance(budget, dict):
            hint = " (write Budget(" + ", ".join(f"{k}={v!r}" for k, v in budget.items()) + "))"
        raise RewardsteerError(f"{method}: budget must be a rewardsteer.Budget, e.g. Budget(nfe=64, seconds=30); "
                               f"got {type(budget).__name__}{hint}")
    for key, need in cost.items():
        bound = getattr(budget, key)
        if bound is not None and need > bound:
            raise RewardsteerError(f"{method}: the budget ({key}={bound}) is smaller than one evaluation of the outputs "
                                   f"asked for: {what} costs {need} {key}; raise the budget or lower n")


def check_count(method: str, **values) -> None:
    """Positive integers (n, candidates, particles, iters, ...), with the method's name in the error."""
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise RewardsteerError(f"{method}: {key} must be a positive integer, got {v!r}")


def renamed(method: str, old: str, new: str, stacklevel: int = 3) -> None:
    """The deprecation warning for an old keyword (works for one release)."""
    import warnings

    warnings.warn(f"{method}({old}=...) is deprecated and will be removed in the next release: use {new}",
                  DeprecationWarning, stacklevel=stacklevel)
