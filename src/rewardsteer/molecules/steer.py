"""`rewardsteer run --model moses-mdlm`: the CLI's molecule path, names checked before any weights load."""

from __future__ import annotations

from ..core import Reward
from ..errors import RewardsteerError, UnknownNameError
from ..rewards import Ensemble

MODELS = ("moses-mdlm",)
# CLI method -> particle method on the masked diffusion sampler; best_of_n keeps the best of K full trajectories
METHODS = {"svdd": "svdd", "fk": "fk_steering", "trajectory_best_of_n": "trajectory_best_of_n",
           "best_of_n": "trajectory_best_of_n"}
DEFAULT_REWARD, DEFAULT_HELDOUT = "qed", "gold"


def check_names(method: str, rewards: list[str], heldouts: list[str]) -> None:
    from .rewards import NAMES

    if method not in METHODS:
        raise RewardsteerError(f"--method {method} needs a continuous generator; on molecules use one of "
                               f"{', '.join(METHODS)} (das needs gradients of a continuous state)")
    for name in rewards:
        if name not in NAMES:
            raise UnknownNameError("molecule reward", name, NAMES)
    for name in heldouts:
        if name not in (*NAMES, "valid", "gold", "none"):
            raise UnknownNameError("molecule held-out reward", name, (*NAMES, "valid", "gold", "none"))


def build(rewards: list[str], heldouts: list[str], vocab) -> tuple[Reward, dict[str, Reward]]:
    """The objective (one reward, or the mean of several) and the held-out monitors ('gold': validity and
    the RDKit oracles QED, −SA, logP, less any oracle that is itself optimized)."""
    from .rewards import Validity, gold_monitors, reward

    members = [reward(name, vocab) for name in rewards]
    objective = members[0] if len(members) == 1 else Ensemble(members, name="+".join(rewards))
    held: dict[str, Reward] = {}
    for name in heldouts:
        if name == "gold":
            held.update(gold_monitors(vocab))
        elif name == "valid":
            held["valid"] = Validity(vocab)
        elif name != "none":
            held[name] = reward(name, vocab)
    for name in rewards:  # an oracle being optimized is not held out from itself
        held.pop(name, None)
    return objective, held


def setup(method: str, rewards: list[str], heldouts: list[str], steps: int, n: int, particles: int, knobs: dict,
          common: dict):
    """(sampler, call): moses-mdlm as a `steps`-step sampler and a thunk running the steering method."""
    from .. import methods as m
    from . import moses_mdlm

    check_names(method, rewards, heldouts)
    sampler = moses_mdlm(num_steps=steps)
    objective, held = build(rewards, heldouts, sampler.vocab)
    name = METHODS[method]
    wanted = {"fk_steering": ("potential", "lam", "interval", "ess_threshold", "resampling"),
              "svdd": ("alpha",)}.get(name, ())
    knobs = {k: knobs[k] for k in wanted if knobs.get(k) is not None}
    return sampler, lambda: m.METHODS[name](sampler, objective, n=n, particles=particles, heldout=held, **knobs,
                                            **common)
