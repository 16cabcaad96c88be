"""The bundled MNIST generators as runs: `mnist-onestep` (or `mnist-flow` unrolled) for the one-step methods, and
mnist-flow's stochastic sampler for the particle methods, steered toward classifier rewards while the three
held-out judges, realism and diversity watch."""

from __future__ import annotations

from ..errors import RewardsteerError, UnknownNameError
from .registry import Plan, budget_of, image_writer, one_step_kwargs, pick_knobs, register
from .spec import PARTICLE_METHODS, RunSpec

DEFAULT_STEPS, DEFAULT_REWARD, DEFAULT_HELDOUT, DEFAULT_ROBUST = 8, ("proxies-mixed",), ("judges",), "default"


def condition(spec: RunSpec) -> int | None:
    """--condition: none -> unconditional (None), class -> the rewarded class, or an explicit digit."""
    c = spec.condition
    if c == "none":
        return None
    if c == "class":
        return spec.target
    if c.isdigit() and 0 <= int(c) <= 9:
        return int(c)
    raise RewardsteerError(f"--condition must be none, class or a digit 0-9; got '{c}'")


def heldout_rewards(specs, target: int) -> dict:
    """--heldout specs -> {name: reward}; 'judges' expands to every bundled held-out judge."""
    from ..models import judges, reward_from_spec

    out = {}
    for s in specs:
        if s == "judges":
            out.update(judges(target))
        elif s != "none":
            out[s] = reward_from_spec(s, target)
    return out


def transforms(spec_text):
    """--robust: None (off) or a parsed TransformSpec; a spec that does not parse is a one-line error."""
    if spec_text is None or spec_text == "none":
        return None
    from ..rewards.robust import parse_transforms

    return parse_transforms(spec_text)


def placement(device, dtype):
    """(device, dtype) for --device / --dtype on the bundled models, or None when both are the defaults."""
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if device is None and dtype == "fp32":
        return None
    try:
        dev = torch.device(device or "cpu")
    except RuntimeError:
        raise RewardsteerError(f"--device '{device}' is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RewardsteerError(f"--device {device}: torch sees no CUDA device here")
    return dev, dtypes[dtype]


def move(place, generator, *rewards) -> None:
    """Move the generator (weights and dtype) and the rewards (device only: they read its samples cast)."""
    if place is None:
        return
    device, dtype = place
    if generator is not None:
        generator.to(device=device, dtype=dtype)
    for r in rewards:
        r.to(device)


def ensemble_options(reward, heldout, gen, cond, aggregate, standardize, target=None):
    """--aggregate / --standardize on the reward, and the diversity and realism monitors beside the judges."""
    from ..models import diversity_monitor, realism_monitor
    from ..rewards.aggregates import aggregate_from_spec
    from ..rewards.base import Ensemble

    if (aggregate or standardize) and not isinstance(reward, Ensemble):
        raise RewardsteerError(f"--aggregate/--standardize need an ensemble reward (e.g. proxies, bt:DIR); "
                               f"'{reward.name}' has one member")
    if aggregate:
        reward = reward.with_transform(aggregate_from_spec(aggregate))
    if standardize:
        reward = reward.calibrated(gen, n=256, cond=cond)
    if heldout:  # monitors beside the judges: batch diversity and realism (distance to real digits)
        heldout["realism"] = realism_monitor(target)
        heldout["diversity"] = diversity_monitor()
    return reward, heldout


class BundledImages:
    """`--model mnist-onestep | mnist-flow`: the bundled MNIST generators."""

    name = "images"

    def accepts(self, spec: RunSpec) -> bool:
        return spec.pipeline is None and spec.model != "moses-mdlm"

    def check(self, spec: RunSpec) -> None:
        from ..models import GENERATORS, reward_from_spec

        if spec.model not in GENERATORS:
            raise UnknownNameError("generator", spec.model, GENERATORS)
        if spec.particle and spec.model != "mnist-flow":
            raise RewardsteerError(f"--method {spec.method} steers a multi-step stochastic sampler: use --model mnist-flow")
        if spec.amortized is not None and spec.particle:
            raise RewardsteerError("--amortized wraps a one-step generator: use it with reno, best_of_n or the searches")
        if spec.amortized is not None:
            from ..amortized.artifacts import check_amortized

            check_amortized(spec.amortized)
        condition(spec)
        for s in spec.rewards or DEFAULT_REWARD:
            reward_from_spec(s, spec.target)
        heldout_rewards(spec.heldouts or DEFAULT_HELDOUT, spec.target)
        transforms(spec.robust or DEFAULT_ROBUST)
        if spec.aggregate:
            from ..rewards.aggregates import aggregate_from_spec

            aggregate_from_spec(spec.aggregate)

    def build(self, spec: RunSpec) -> Plan:
        from .. import models
        from ..methods import METHODS
        from ..rewards.base import Ensemble

        names = spec.rewards or DEFAULT_REWARD
        steps = spec.steps or DEFAULT_STEPS
        place = placement(spec.device, spec.dtype)  # a bad --device fails before any weights load
        cond = condition(spec)
        members = [models.reward_from_spec(s, spec.target) for s in names]
        reward = members[0] if len(members) == 1 else Ensemble(members, name="+".join(names))
        heldout = heldout_rewards(spec.heldouts or DEFAULT_HELDOUT, spec.target)
        eot = transforms(spec.robust or DEFAULT_ROBUST)
        gen, notes = models.generator(spec.model, steps=steps), []
        if spec.amortized is not None:
            gen, note = amortized(spec.amortized, gen, spec.target)
            notes.append(note)
        move(place, gen, reward, *heldout.values())
        reward, heldout = ensemble_options(reward, heldout, gen, cond, spec.aggregate, spec.standardize, spec.target)
        move(place, None, *heldout.values())
        if eot is not None:
            from ..rewards.robust import TransformedReward

            reward = TransformedReward(reward, eot, seed=spec.seed)
        common = dict(cond=cond, budget=budget_of(spec), seed=spec.seed, heldout=heldout)
        if spec.particle:
            name = PARTICLE_METHODS[spec.method]
            sampler = models.flow_sampler(steps, eta=1.0)
            move(place, sampler)
            return Plan(sampler, reward, heldout, METHODS[name],
                        dict(n=spec.n, particles=spec.particles, **pick_knobs(spec, name), **common), image_writer, notes)
        method = spec.method or "reno"
        return Plan(gen, reward, heldout, METHODS[method], {**one_step_kwargs(spec), **common}, image_writer, notes)


def amortized(path, gen, target: int):
    """--amortized: the saved noise map or adapter applied to the bundled generator, for --class; and a line
    describing it."""
    from ..amortized import load_amortized
    from ..amortized.artifacts import describe

    note = f"using {describe(path)}"
    return load_amortized(path, gen, target), note


register(BundledImages())
