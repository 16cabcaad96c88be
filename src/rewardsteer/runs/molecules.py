"""`--model moses-mdlm` as a run: masked diffusion over molecules steered toward RDKit rewards (or learned proxies),
with the gold oracles and validity held out; names are checked before any weights load."""

from __future__ import annotations

from ..errors import RewardsteerError, UnknownNameError
from .registry import Plan, budget_of, pick_knobs, register
from .spec import RunSpec

MODELS = ("moses-mdlm",)
# CLI method -> particle method on the masked diffusion sampler; best_of_n keeps the best of K full trajectories
METHODS = {"svdd": "svdd", "fk": "fk_steering", "trajectory_best_of_n": "trajectory_best_of_n",
           "best_of_n": "trajectory_best_of_n"}
DEFAULT_REWARD, DEFAULT_HELDOUT, DEFAULT_METHOD = "qed", "gold", "svdd"
IMAGE_OPTIONS = ("robust", "aggregate", "standardize", "condition")  # options a molecule run refuses


def check_names(method: str, rewards: list[str], heldouts: list[str]) -> None:
    from ..molecules.rewards import NAMES

    if method not in METHODS:
        raise RewardsteerError(f"--method {method} needs a continuous generator; on molecules use one of "
                               f"{', '.join(METHODS)} (das needs gradients of a continuous state)")
    for name in rewards:
        if name not in NAMES:
            raise UnknownNameError("molecule reward", name, NAMES)
    for name in heldouts:
        if name not in (*NAMES, "valid", "gold", "none"):
            raise UnknownNameError("molecule held-out reward", name, (*NAMES, "valid", "gold", "none"))


def objective_and_heldout(rewards: list[str], heldouts: list[str], vocab):
    """The objective (one reward, or the mean of several) and the held-out monitors ('gold': validity and
    the RDKit oracles QED, −SA, logP, less any oracle that is itself optimized)."""
    from ..molecules.rewards import Validity, gold_monitors, reward
    from ..rewards.base import Ensemble

    members = [reward(name, vocab) for name in rewards]
    objective = members[0] if len(members) == 1 else Ensemble(members, name="+".join(rewards))
    held: dict = {}
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


class Molecules:
    """`--model moses-mdlm`: the bundled masked diffusion model of MOSES molecules."""

    name = "molecules"

    def accepts(self, spec: RunSpec) -> bool:
        return spec.pipeline is None and spec.model in MODELS

    def check(self, spec: RunSpec) -> None:
        defaults = RunSpec()
        for name in IMAGE_OPTIONS:
            if getattr(spec, name) not in (None, getattr(defaults, name)):
                raise RewardsteerError(f"--{name} is an image option; molecule runs take --reward, --heldout, --method")
        for name in ("device", "dtype"):
            if getattr(spec, name) != getattr(defaults, name):
                raise RewardsteerError(f"--{name} is not wired for --model moses-mdlm yet (it runs on the CPU in fp32)")
        if spec.amortized is not None:
            raise RewardsteerError("--amortized wraps a one-step image generator; not --model moses-mdlm")
        check_names(spec.method or DEFAULT_METHOD, list(spec.rewards or [DEFAULT_REWARD]),
                    list(spec.heldouts or [DEFAULT_HELDOUT]))

    def build(self, spec: RunSpec) -> Plan:
        from ..methods import METHODS as LIBRARY
        from ..molecules import DEFAULT_STEPS, moses_mdlm
        from ..molecules.report import write_molecule_report

        sampler = moses_mdlm(num_steps=spec.steps or DEFAULT_STEPS)
        objective, held = objective_and_heldout(list(spec.rewards or [DEFAULT_REWARD]),
                                                list(spec.heldouts or [DEFAULT_HELDOUT]), sampler.vocab)
        name = METHODS[spec.method or DEFAULT_METHOD]
        kwargs = dict(n=spec.n, particles=spec.particles, heldout=held, budget=budget_of(spec), seed=spec.seed,
                      **pick_knobs(spec, name))
        return Plan(sampler, objective, held, LIBRARY[name], kwargs,
                    lambda result, out: write_molecule_report(result, sampler.vocab, out))


register(Molecules())
