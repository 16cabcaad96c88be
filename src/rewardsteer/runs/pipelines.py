"""`--pipeline PATH_OR_ID` as a run: a diffusers pipeline steered toward transformers rewards (rewardsteer.hf).
Particle methods get its stochastic sampler (eta = 1, 50 steps unless --steps), the others a one-step generator
(1 step unless --steps: SD-Turbo style)."""

from __future__ import annotations

from pathlib import Path

from ..errors import RewardsteerError
from .registry import Plan, budget_of, image_writer, one_step_kwargs, pick_knobs, register
from .spec import PARTICLE_METHODS, RunSpec

REWARD_HELP = "clip:PATH_OR_ID, head:FILE.safetensors, suppress:CONCEPT, pickscore:PATH, hps:PATH or jpeg"


def local(name: str) -> bool:
    """Whether a name is written as a local path (./x, ../x, /x, ~/x) rather than a hub id (org/model)."""
    return name.startswith(("./", "../", "/", "~", ".\\")) or name in (".", "..")


def check_local(name: str, what: str, always: bool = False) -> None:
    """A name written as a local path (or any name, `always`) must exist: one line, instead of a hub lookup and
    a download hint."""
    if (always or local(name)) and not Path(name).expanduser().exists():
        sep = "" if what.endswith(" ") else " "
        raise RewardsteerError(f"{what}{sep}{name}: no such folder or file")


def spec_paths(spec: str) -> list[tuple[str, bool]]:
    """(path or hub id, whether it must be a local file) for each model a pipeline reward spec names: clip:X,
    pickscore:X, hps:X, head:FILE[@X], suppress:CONCEPT[@X]."""
    head, _, tail = spec.partition(":")
    if head in ("clip", "pickscore", "hps"):
        return [(tail, False)]
    if head in ("head", "suppress"):
        what, _, clip = tail.rpartition("@") if "@" in tail else (tail, "", "")
        return ([(what, True)] if head == "head" else []) + ([(clip, False)] if clip else [])
    return []


class Pipelines:
    """`--pipeline`: any supported diffusers text-to-image pipeline (SD, SDXL, Turbo, SD3, FLUX)."""

    name = "pipelines"

    def accepts(self, spec: RunSpec) -> bool:
        return spec.pipeline is not None

    def check(self, spec: RunSpec) -> None:
        from ..models import CLASSIFIERS

        if spec.aggregate or spec.standardize or spec.robust is not None:
            raise RewardsteerError("--aggregate/--standardize/--robust are not wired for --pipeline yet")
        if spec.amortized is not None:
            raise RewardsteerError("--amortized wraps the bundled one-step generator; not --pipeline")
        if not spec.prompt:
            raise RewardsteerError("--pipeline needs --prompt \"...\"")
        if not spec.rewards:
            raise RewardsteerError(f"--pipeline needs --reward: {REWARD_HELP}")
        check_local(spec.pipeline, "--pipeline")
        for s in (*spec.rewards, *(spec.heldouts or ())):
            for path, always in spec_paths(s):
                check_local(path, f"--reward {s}: ", always)
        for s in spec.heldouts or ():
            if s == "judges" or s in CLASSIFIERS:
                raise RewardsteerError(f"--heldout {s}: the bundled judges were trained on 1x28x28 MNIST digits, not "
                                       "--pipeline images; use clip:, head: or jpeg held-out rewards")

    def build(self, spec: RunSpec) -> Plan:
        import torch

        from ..hf import diffusers_sampler, from_diffusers, parse_dtype
        from ..hf.specs import SpecParser
        from ..methods import METHODS

        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = parse_dtype(spec.dtype)
        parser = SpecParser(spec.prompt, dtype, device, spec.checkpoint)
        reward = parser.rewards(list(spec.rewards))  # rewards first: a bad spec fails before the pipeline loads
        heldout = {s: parser.reward(s) for s in spec.heldouts or () if s != "none"}
        steps = spec.steps or (50 if spec.particle else 1)
        kw = dict(negative_prompt=spec.negative_prompt, guidance_scale=spec.guidance_scale, steps=steps,
                  height=spec.height, width=spec.width, dtype=dtype, device=device, checkpoint=spec.checkpoint)
        common = dict(cond=None, budget=budget_of(spec), seed=spec.seed, heldout=heldout)
        if spec.particle:
            name = PARTICLE_METHODS[spec.method]
            sampler = diffusers_sampler(spec.pipeline, spec.prompt, eta=1.0, **kw)
            return Plan(sampler, reward, heldout, METHODS[name],
                        dict(n=spec.n, particles=spec.particles, **pick_knobs(spec, name), **common), image_writer)
        gen = from_diffusers(spec.pipeline, spec.prompt, **kw)
        return Plan(gen, reward, heldout, METHODS[spec.method or "reno"], {**one_step_kwargs(spec), **common},
                    image_writer)


register(Pipelines())
