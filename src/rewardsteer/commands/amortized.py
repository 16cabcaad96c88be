"""`rewardsteer train-noise` and `rewardsteer finetune`: amortized alignment of the bundled one-step generators
(Python API and diffusers generators: `rewardsteer.amortized`, docs/amortized.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import RewardsteerError
from ..safety import finite_option, writable_out_option

KINDS = ("noise-net", "learned-noise")


def _classes(spec: str) -> list[int]:
    """'0-9', '7' or '1,7' -> the classes a noise map is trained for."""
    try:
        if "-" in spec:
            lo, hi = (int(v) for v in spec.split("-"))
            out = list(range(lo, hi + 1))
        else:
            out = [int(v) for v in spec.split(",")]
    except ValueError:
        out = []
    if not out or any(not 0 <= c <= 9 for c in out) or len(set(out)) != len(out):
        raise RewardsteerError(f"--classes must be digits 0-9 as a range (0-9), a list (1,7) or one digit; got '{spec}'")
    return out


def _setup(model: str, rewards, robust: str, seed: int, threads: int | None, target: int | None):
    """(generator, reward, watched judges + realism) for the bundled task; the reward scores `target` (None: the
    per-sample class the trainer passes as the reward's condition)."""
    import torch

    from .. import models
    from ..rewards.base import Ensemble
    from ..rewards.robust import TransformedReward, parse_transforms

    if threads:
        torch.set_num_threads(threads)
    if model not in models.GENERATORS:
        from ..errors import UnknownNameError

        raise UnknownNameError("generator", model, models.GENERATORS)
    transforms = None if robust == "none" else parse_transforms(robust)
    members = [models.reward_from_spec(s, target) for s in rewards]
    reward = members[0] if len(members) == 1 else Ensemble(members, name="+".join(rewards))
    if transforms is not None:
        reward = TransformedReward(reward, transforms, seed=seed)
    watch = {**models.judges(target), "realism": models.realism_monitor(target)}
    return models.generator(model, steps=4), reward, watch


def _options(f):
    for option in reversed([
        click.option("--model", default="mnist-onestep", show_default=True,
                     help="the bundled generator (mnist-onestep, or mnist-flow unrolled over 4 ODE steps)"),
        click.option("--reward", "rewards", multiple=True, default=["proxies-mixed"], show_default=True,
                     help="reward spec, repeatable (mean of all), as for `rewardsteer run`"),
        click.option("--robust", default="default", show_default=True,
                     help="EOT transformations averaged in the reward (a preset or a spec); 'none' for the raw reward"),
        click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="optimizer steps"),
        click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, help="noises per step"),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
                     callback=finite_option),
        click.option("--eval-every", type=click.IntRange(min=0), default=50, show_default=True,
                     help="steps between evaluations of the reward, judges and realism on fixed noises (0: never)"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's)"),
        click.option("--resume", is_flag=True, help="continue from OUT/checkpoint (bit-identical to an unbroken run)"),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]):
        f = option(f)
    return f


def _config(steps, batch, lr, reg, eval_every, seed):
    from ..amortized.trainer import TrainConfig

    return TrainConfig(steps=steps, batch=batch, lr=lr, reg=reg, seed=seed, eval_every=eval_every)


def _report(trained, out: Path, use: str) -> None:
    cost = trained.report.cost()
    click.echo(f"trained {trained.kind} for {cost['steps_done']} steps in {cost['seconds']:.0f} s: {cost['nfe']} NFE, "
               f"{cost['backward']} backward passes, {cost['reward_calls']} reward calls")
    if trained.report.evals:
        first, last = trained.report.evals[0], trained.report.evals[-1]
        click.echo("on fixed evaluation noises: " + ", ".join(
            f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in last if k not in ("step",)))
    click.echo(f"wrote {out / 'card.json'}; use it: {use}")


@click.command("train-noise")
@_options
@click.option("--kind", type=click.Choice(KINDS), default="noise-net", show_default=True,
              help="noise-net: golden-noise network z -> z* (Zhou et al. 2024); learned-noise: a Gaussian per class "
                   "(FIND, Chen et al. 2024)")
@click.option("--classes", default="0-9", show_default=True, help="the target classes it learns (the reward's class)")
@click.option("--reg", type=click.FloatRange(min=0), default=1e-3, show_default=True, callback=finite_option,
              help="β: chi-prior weight (noise-net) or KL weight (learned-noise)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/noise-net"), show_default=True,
              callback=writable_out_option)
def train_noise(model, rewards, robust, steps, batch, lr, eval_every, seed, threads, resume, progress, kind, classes,
                reg, out):
    """Train a noise network or a learned noise distribution for a bundled generator, once; afterwards a steered
    sample costs one generator call (`rewardsteer run --amortized OUT --class C`)."""
    from ..amortized import train_noise as fit
    from ..bundled.training import Logger

    conditions = _classes(classes)
    gen, reward, watch = _setup(model, rewards, robust, seed, threads, None)
    trained = fit(gen, reward, kind=kind, conditions=conditions, config=_config(steps, batch, lr, reg, eval_every, seed),
                  out=out, resume=resume, watch=watch, base_name=model, progress=progress,
                  log=Logger(out / "train.jsonl", append=resume))
    _report(trained, out, f"rewardsteer run --model {model} --amortized {out} --class {conditions[-1]} --method best_of_n")


@click.command("finetune")
@_options
@click.option("--class", "target", type=click.IntRange(0, 9), default=7, show_default=True,
              help="the digit the rewards score")
@click.option("--rank", type=click.IntRange(min=1), default=4, show_default=True, help="LoRA rank (peft)")
@click.option("--reg", type=click.FloatRange(min=0), default=0.01, show_default=True, callback=finite_option,
              help="β: weight of the KL to the base model")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/finetune"), show_default=True,
              callback=writable_out_option)
def finetune(model, rewards, robust, steps, batch, lr, eval_every, seed, threads, resume, progress, target, rank, reg,
             out):
    """LoRA reward fine-tuning of a bundled generator (peft adapters, KL to the base); the adapter is saved as
    safetensors with its card and loads onto the base model (`rewardsteer run --amortized OUT`)."""
    from ..amortized import finetune as fit
    from ..bundled.training import Logger

    gen, reward, watch = _setup(model, rewards, robust, seed, threads, target)
    trained = fit(gen, reward, rank=rank, target=target, config=_config(steps, batch, lr, reg, eval_every, seed),
                  out=out, resume=resume, watch=watch, base_name=model, progress=progress,
                  log=Logger(out / "train.jsonl", append=resume))
    _report(trained, out, f"rewardsteer run --model {model} --amortized {out} --class {target}")


