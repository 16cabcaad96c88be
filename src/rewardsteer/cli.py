"""The `rewardsteer` command line: list models, steer a generator toward a reward, run the demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import RewardsteerError
from .hooks import run_hooks
from .safety import SIGTERM_EXIT, sigterm_as_interrupt, writable_out_option


class SectionedCommand(click.Command):
    """A command whose --help lists its options under headings; unlisted options go under "Other options"."""

    sections: dict[str, tuple[str, ...]] = {}

    def format_options(self, ctx, formatter):
        help_option = self.get_help_option(ctx)  # named differently across click versions: call it "help"
        records = {"help" if p is help_option else p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        listed = {name for names in self.sections.values() for name in names}
        groups = list(self.sections.items())
        groups.append(("Other options", tuple(n for n in records if n not in listed)))
        for title, names in groups:
            rows = [records[n] for n in names if records.get(n)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class RunCommand(SectionedCommand):
    sections = {
        "Generator and task": ("model", "steps", "target", "condition", "device", "dtype"),
        "Rewards": ("rewards", "heldouts", "robust", "aggregate", "standardize"),
        "Method": ("method", "n", "iters", "candidates", "seed"),
        "ReNO (noise optimization)": ("reg", "lr", "optimizer"),
        "Particle methods (fk, das, svdd, trajectory_best_of_n, guidance)": (
            "particles", "potential", "lam", "alpha", "interval", "ess_threshold", "resampling", "scale"),
        "Budget (stop when any is spent)": ("max_nfe", "max_backward", "max_reward_calls", "max_seconds"),
        "Diffusers pipeline (instead of --model)": (
            "pipeline", "prompt", "negative_prompt", "guidance_scale", "height", "width", "checkpoint"),
        "Amortized (a trained noise map or LoRA adapter)": ("amortized",),
        "Output": ("out", "progress", "help"),
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rewardsteer")
def cli():
    """rewardsteer: make a pretrained generator's samples score higher under a reward, without retraining,
    at a known compute cost, with held-out rewards watching for reward hacking.

    \b
    Start here:
      rewardsteer models                       the bundled MNIST generators and classifiers
      rewardsteer run --method reno --class 7  steer mnist-onestep toward a 7 (see run --help)
      rewardsteer demo                         samples from both generators, then a steering run
    """


@cli.command()
def models():
    """List the bundled models with their cards (size, data, metrics)."""
    from .hub import list_models

    for card in list_models():
        arch = card["architecture"]
        click.echo(f"{card['name']:<15} {card['kind']:<10} {arch['class']} {arch['parameters'] / 1e6:.2f}M params, "
                   f"{card['size_mb']} MB")
        click.echo(f"    data: {card['data'].get('subset', card['data']['dataset'])} ({card['data']['license']})")
        if card.get("metrics"):
            click.echo("    metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in card["metrics"].items()))


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


METHOD_CHOICES = ["best_of_n", "random_search", "zero_order_search", "reno"]
GUIDANCE_SCALE = 100.0  # rewardsteer.smc.guidance.DEFAULT_SCALE (not imported: --help stays free of torch)
# particle methods (issue 5): CLI name -> rewardsteer.METHODS name; they steer mnist-flow's stochastic sampler
PARTICLE_METHODS = {"fk": "fk_steering", "das": "das", "svdd": "svdd", "trajectory_best_of_n": "trajectory_best_of_n",
                    "guidance": "reward_guidance"}
METHOD_CHOICES += list(PARTICLE_METHODS)


@cli.command(cls=RunCommand)
@click.option("--model", default="mnist-onestep", show_default=True,
              help="mnist-onestep, mnist-flow, or moses-mdlm (molecules: --reward qed|neg_sa|logp|penalized_logp|"
                   "qed_sa_mw, --method svdd|fk|best_of_n; see docs/molecules.md)")
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True,
              help="ODE steps when --model mnist-flow (unrolled, checkpointed)")
@click.option("--class", "target", type=click.IntRange(0, 9), default=7, show_default=True,
              help="the digit the classifier rewards score (log p(class | image))")
@click.option("--condition", default="none", show_default=True,
              help="what the generator is asked for: none (any digit: the most room to steer), class (= --class) or 0-9")
@click.option("--reward", "rewards", multiple=True, default=["proxies-mixed"], show_default=True,
              help="reward spec, repeatable (mean of all): proxies[:k], proxies-mixed (CNN + MLP), proxy:mnist-proxy-0, "
                   "mnist-judge")
@click.option("--heldout", "heldouts", multiple=True, default=["judges"], show_default=True,
              help="held-out judge or reward, repeatable; watched, never optimized. 'judges' = mnist-judge, "
                   "mnist-judge-vit and mnist-judge-rff (three model families); 'none' to disable")
@click.option("--robust", default="default", show_default=True,
              help="average the reward over random transformations (EOT, against reward hacking): a preset "
                   "(default, light) or shift=2,rotate=10,scale=0.1,noise=0.05,n=8; 'none' for the raw reward")
@click.option("--aggregate", default=None,
              help="reduce the reward's members: mean, wco, uwo[:lambda], mean_std[:c], quantile:q, cvar:alpha")
@click.option("--standardize/--raw", default=False, show_default=True,
              help="standardize each member on 256 unsteered samples (mean 0, sd 1) before aggregating")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="reno", show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=4, show_default=True,
              help="outputs kept, for every method (Python: n=): reno/search noises, the best n of best_of_n's "
                   "candidates, particle methods' independent slots")
@click.option("--iters", type=click.IntRange(min=1), default=50, show_default=True,
              help="iterations: reno, zero_order_search; rounds of random_search (Python: iters=)")
@click.option("--candidates", type=click.IntRange(min=1), default=64, show_default=True,
              help="candidates drawn: best_of_n's N; random_search: per round (Python: candidates=)")
@click.option("--reg", type=float, default=0.01, show_default=True, help="reno: prior weight lambda")
@click.option("--lr", type=float, default=5.0, show_default=True, help="reno: learning rate")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--max-nfe", type=int, default=None, help="budget: generator evaluations")
@click.option("--max-backward", type=int, default=None, help="budget: backward passes")
@click.option("--max-reward-calls", type=int, default=None, help="budget: reward evaluations")
@click.option("--max-seconds", type=float, default=None, help="budget: wall-clock seconds")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True,
              callback=writable_out_option)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--amortized", type=click.Path(path_type=Path), default=None,
              help="a noise network, learned noise or LoRA adapter from `rewardsteer train-noise` / `finetune`, "
                   "put in front of (or into) --model for --class; every method then steers the result")
@click.option("--pipeline", default=None, help="a diffusers pipeline (hub name or folder) instead of --model; "
              "rewards: clip:PATH_OR_ID, head:FILE.safetensors[@CLIP], suppress:CONCEPT[@CLIP], jpeg[:Q]")
@click.option("--prompt", default=None, help="--pipeline: the text prompt (also what clip: rewards score against)")
@click.option("--negative-prompt", default=None, help="--pipeline: negative prompt (used when --guidance-scale > 1)")
@click.option("--guidance-scale", type=float, default=None,
              help="--pipeline: classifier-free guidance, or FLUX-dev's embedded guidance (default: the family's own: "
                   "0 for one-step SD/SD3, 7.5 / 7.0 for their samplers, 3.5 for FLUX)")
@click.option("--height", type=click.IntRange(min=8), default=None, help="--pipeline: image height (default: the model's)")
@click.option("--width", type=click.IntRange(min=8), default=None, help="--pipeline: image width (default: the model's)")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="the generator's weights (fp16/bf16 on a GPU); bundled rewards and judges stay fp32 and read its "
                   "samples cast (--pipeline: the pipeline and CLIP rewards)")
@click.option("--device", default=None,
              help="torch device for the generator, rewards and judges, e.g. cuda, cuda:1, cpu (default: cpu for the "
                   "bundled models; cuda if available for --pipeline)")
@click.option("--checkpoint/--no-checkpoint", default=False, show_default=True,
              help="--pipeline: gradient checkpointing of the UNet, VAE and CLIP (less memory, more time)")
@click.option("--particles", type=click.IntRange(min=1), default=8, show_default=True,
              help="fk, das, trajectory_best_of_n: particles per sample; svdd: candidates per step")
@click.option("--potential", type=click.Choice(["max", "diff", "sum", "current"]), default="max", show_default=True,
              help="fk: potential on the x0-prediction's reward")
@click.option("--lam", type=float, default=10.0, show_default=True, help="fk: lambda, target p(x)·exp(lambda·r(x))")
@click.option("--alpha", type=float, default=None,
              help="das: temperature, target p(x)·exp(r(x)/alpha) (default 0.1); svdd: soft selection (default argmax)")
@click.option("--interval", type=click.IntRange(min=1), default=5, show_default=True, help="fk: steps between potentials")
@click.option("--ess-threshold", type=float, default=0.5, show_default=True,
              help="fk, das: resample when ESS < threshold·particles")
@click.option("--resampling", type=click.Choice(["systematic", "stratified", "multinomial"]), default="systematic",
              show_default=True)
@click.option("--scale", type=click.FloatRange(min=0), default=None,
              help=f"guidance: λ of the step's shift s²·λ·∇r(x̂0) added to each step's mean (default {GUIDANCE_SCALE:g})")
def run(model, steps, target, condition, rewards, heldouts, method, n, iters, candidates, reg, lr, optimizer, max_nfe,
        max_backward, max_reward_calls, max_seconds, seed, out, progress, robust=None, aggregate=None, standardize=False,
        pipeline=None, prompt=None, negative_prompt=None, guidance_scale=None, height=None, width=None, dtype="fp32",
        device=None, checkpoint=False, particles=8, potential="max", lam=10.0, alpha=None, interval=5,
        ess_threshold=0.5, resampling="systematic", scale=None, amortized=None):
    """Steer a bundled generator toward a reward; write grid.png, trace.png and result.json to --out."""
    from . import methods as m
    from .budget import Budget
    from .errors import UnknownNameError
    from .models import GENERATORS, generator, reward_from_spec
    from .report import summary_lines, write_report
    from .rewards import Ensemble

    budget = Budget(max_nfe, max_backward, max_reward_calls, max_seconds)
    ctx = click.get_current_context()
    if model == "moses-mdlm":
        return _molecule_run(ctx, method, rewards, heldouts, steps, n, particles, budget, seed, out, progress,
                             dict(potential=potential, lam=lam, alpha=alpha, interval=interval,
                                  ess_threshold=ess_threshold, resampling=resampling))
    if pipeline is not None:  # a diffusers pipeline steered toward transformers rewards (rewardsteer.hf)
        if aggregate or standardize or ctx.get_parameter_source("robust") != click.core.ParameterSource.DEFAULT:
            raise RewardsteerError("--aggregate/--standardize/--robust are not wired for --pipeline yet")
        gen, reward, heldout = _pipeline_setup(ctx, pipeline, prompt, negative_prompt,
                                               guidance_scale, steps, height, width, dtype, device, checkpoint,
                                               rewards, heldouts, particle=method in PARTICLE_METHODS)
        target, place = None, None
    else:
        if model not in GENERATORS:  # check every name before loading any weights
            raise UnknownNameError("generator", model, GENERATORS)
        place = _placement(device, dtype)  # a bad --device fails before any weights load
        cond = _condition(condition, target)
        members = [reward_from_spec(s, target) for s in rewards]
        reward = members[0] if len(members) == 1 else Ensemble(members, name="+".join(rewards))
        heldout = _heldout(heldouts, target)
        transforms = _transforms(robust)  # a bad spec fails before any weights load
        gen = generator(model, steps=steps)
        if amortized is not None:
            gen = _amortized(amortized, gen, target, method)
        _to(place, gen, reward, *heldout.values())
        reward, heldout = _ensemble_options(reward, heldout, gen, cond, aggregate, standardize)
        _to(place, None, *heldout.values())
        if transforms is not None:
            from .robust import TransformedReward

            reward = TransformedReward(reward, transforms, seed=seed)
        target = cond
    common = dict(cond=target, budget=budget, seed=seed, heldout=heldout, progress=progress, **run_hooks())
    if method == "best_of_n":
        call = lambda: m.best_of_n(gen, reward, n=n, candidates=candidates, **common)  # noqa: E731
    elif method == "random_search":
        call = lambda: m.random_search(gen, reward, n=n, iters=iters, candidates=candidates, **common)  # noqa: E731
    elif method == "zero_order_search":
        call = lambda: m.zero_order_search(gen, reward, n=n, iters=iters, **common)  # noqa: E731
    else:
        call = lambda: m.reno(gen, reward, n=n, iters=iters, reg=reg, lr=lr, optimizer=optimizer, **common)  # noqa: E731
    if method in PARTICLE_METHODS:
        call = _particle_call(m.METHODS[PARTICLE_METHODS[method]], model, pipeline, steps, reward, n, particles,
                              dict(potential=potential, lam=lam, alpha=alpha, interval=interval,
                                   ess_threshold=ess_threshold, resampling=resampling, scale=scale), common,
                              sampler=gen if pipeline is not None else None, place=place)
    try:
        result = call()
    except Exception as e:
        partial = getattr(e, "partial_result", None)
        if partial is not None:
            write_report(partial, out)
            click.echo(f"partial result saved to {out}", err=True)
        raise
    paths = write_report(result, out)
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {paths['grid']}, {paths['trace']}, {paths['result']}")
    if result.stopped == "interrupted":
        sys.exit(130)


def _molecule_run(ctx, method, rewards, heldouts, steps, n, particles, budget, seed, out, progress, knobs):
    """--model moses-mdlm: steer masked diffusion over molecules toward RDKit rewards (rewardsteer.molecules)."""
    from .molecules import DEFAULT_STEPS, steer
    from .molecules.report import write_molecule_report
    from .report import summary_lines

    default = click.core.ParameterSource.DEFAULT
    for name in ("robust", "aggregate", "standardize", "pipeline", "condition"):
        if ctx.get_parameter_source(name) != default:
            raise RewardsteerError(f"--{name} is an image option; molecule runs take --reward, --heldout, --method")
    for name in ("device", "dtype"):
        if ctx.get_parameter_source(name) != default:
            raise RewardsteerError(f"--{name} is not wired for --model moses-mdlm yet (it runs on the CPU in fp32)")
    rewards = [steer.DEFAULT_REWARD] if ctx.get_parameter_source("rewards") == default else list(rewards)
    heldouts = [steer.DEFAULT_HELDOUT] if ctx.get_parameter_source("heldouts") == default else list(heldouts)
    steps = DEFAULT_STEPS if ctx.get_parameter_source("steps") == default else steps
    if ctx.get_parameter_source("method") == default:
        method = "svdd"
    sampler, call = steer.setup(method, rewards, heldouts, steps, n, particles, knobs,
                                dict(budget=budget, seed=seed, progress=progress, **run_hooks()))
    try:
        result = call()
    except Exception as e:
        partial = getattr(e, "partial_result", None)
        if partial is not None:
            write_molecule_report(partial, sampler.vocab, out)
            click.echo(f"partial result saved to {out}", err=True)
        raise
    paths = write_molecule_report(result, sampler.vocab, out)
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"wrote {paths['smiles']}, {paths['table']}, {paths['grid']}, {paths['result']}")
    if result.stopped == "interrupted":
        sys.exit(130)


def _amortized(path: Path, gen, target: int, method: str):
    """--amortized: the saved noise map or adapter applied to the bundled generator, for --class."""
    from .amortized import load_amortized
    from .amortized.command import describe

    if method in PARTICLE_METHODS:
        raise RewardsteerError("--amortized wraps a one-step generator: use it with reno, best_of_n or the searches")
    click.echo(f"using {describe(path)}", err=True)
    return load_amortized(path, gen, target)


def _heldout(specs, target: int) -> dict:
    """--heldout specs -> {name: reward}; 'judges' expands to every bundled held-out judge."""
    from .models import judges, reward_from_spec

    out = {}
    for s in specs:
        if s == "judges":
            out.update(judges(target))
        elif s != "none":
            out[s] = reward_from_spec(s, target)
    return out


def _transforms(spec):
    """--robust: None (off) or a parsed TransformSpec; a spec that does not parse is a one-line error."""
    if spec is None or spec == "none":
        return None
    from .robust import parse_transforms

    return parse_transforms(spec)


def _condition(condition: str, target: int) -> int | None:
    """--condition: none -> unconditional (None), class -> the rewarded class, or an explicit digit."""
    if condition == "none":
        return None
    if condition == "class":
        return target
    if condition.isdigit() and 0 <= int(condition) <= 9:
        return int(condition)
    raise RewardsteerError(f"--condition must be none, class or a digit 0-9; got '{condition}'")


def _particle_call(method, model, pipeline, steps, reward, n, particles, knobs, common, sampler=None, place=None):
    """A particle method (fk, das, svdd, trajectory_best_of_n, guidance) on mnist-flow's stochastic sampler
    (eta = 1), or on `sampler` when given (a --pipeline's diffusers sampler)."""
    from .models import flow_sampler

    if sampler is None and (pipeline is not None or model != "mnist-flow"):
        raise RewardsteerError(f"{method.__name__} steers a multi-step stochastic sampler: use --model mnist-flow")
    wanted = {"fk_steering": ("potential", "lam", "interval", "ess_threshold", "resampling"),
              "das": ("alpha", "ess_threshold", "resampling"), "svdd": ("alpha",),
              "reward_guidance": ("scale",)}.get(method.__name__, ())
    knobs = {k: knobs[k] for k in wanted if knobs[k] is not None}
    if sampler is None:
        sampler = flow_sampler(steps, eta=1.0)
        _to(place, sampler)
    return lambda: method(sampler, reward, n=n, particles=particles, **knobs, **common)


def _placement(device, dtype):
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


def _to(place, generator, *rewards) -> None:
    """Move the generator (weights and dtype) and the rewards (device only: they read its samples cast)."""
    if place is None:
        return
    device, dtype = place
    if generator is not None:
        generator.to(device=device, dtype=dtype)
    for r in rewards:
        r.to(device)


def _pipeline_setup(ctx, pipeline, prompt, negative_prompt, guidance_scale, steps, height, width, dtype, device,
                    checkpoint, rewards, heldouts, particle=False):
    """(generator, reward, held-out) for --pipeline: reward specs are rewardsteer.hf.specs's, not the MNIST ones.
    Particle methods get the stochastic sampler (eta = 1, 50 steps unless --steps), the others a one-step generator."""
    import torch

    from .hf import diffusers_sampler, from_diffusers, parse_dtype
    from .hf.specs import SpecParser

    default = click.core.ParameterSource.DEFAULT
    if not prompt:
        raise RewardsteerError("--pipeline needs --prompt \"...\"")
    if ctx.get_parameter_source("rewards") == default:
        raise RewardsteerError("--pipeline needs --reward: clip:PATH_OR_ID, head:FILE.safetensors, suppress:CONCEPT or jpeg")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = parse_dtype(dtype)
    parser = SpecParser(prompt, torch_dtype, device, checkpoint)
    reward = parser.rewards(rewards)  # rewards first: a bad spec fails before the pipeline loads
    from .models import CLASSIFIERS

    for s in heldouts:
        if s == "judges" and ctx.get_parameter_source("heldouts") != default or s in CLASSIFIERS:
            raise RewardsteerError(f"--heldout {s}: the bundled judges were trained on 1x28x28 MNIST digits, not "
                                   "--pipeline images; use clip:, head: or jpeg held-out rewards")
    heldout = {} if ctx.get_parameter_source("heldouts") == default else \
        {s: parser.reward(s) for s in heldouts if s != "none"}
    if ctx.get_parameter_source("steps") == default:
        steps = 50 if particle else 1  # one step: SD-Turbo style
    kw = dict(negative_prompt=negative_prompt, guidance_scale=guidance_scale, steps=steps, height=height, width=width,
              dtype=torch_dtype, device=device, checkpoint=checkpoint)
    gen = diffusers_sampler(pipeline, prompt, eta=1.0, **kw) if particle else from_diffusers(pipeline, prompt, **kw)
    return gen, reward, heldout


def _ensemble_options(reward, heldout, gen, target, aggregate, standardize):
    """--aggregate / --standardize on the reward, and the diversity monitor beside the held-out rewards."""
    from .aggregates import aggregate_from_spec
    from .models import diversity_monitor, realism_monitor
    from .rewards import Ensemble

    if (aggregate or standardize) and not isinstance(reward, Ensemble):
        raise RewardsteerError(f"--aggregate/--standardize need an ensemble reward (e.g. proxies, bt:DIR); "
                               f"'{reward.name}' has one member")
    if aggregate:
        reward = reward.with_transform(aggregate_from_spec(aggregate))
    if standardize:
        reward = reward.calibrated(gen, n=256, cond=target)
    if heldout:  # monitors beside the judges: batch diversity and realism (distance to real digits)
        heldout["realism"] = realism_monitor()
        heldout["diversity"] = diversity_monitor()
    return reward, heldout


@cli.command("score-smiles")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--reward", "rewards", multiple=True, default=["qed"], show_default=True,
              help="molecule reward, repeatable: qed, neg_sa, logp, penalized_logp, sa_ok, mw_ok, qed_sa_mw")
@click.option("--skip-invalid", is_flag=True, help="skip invalid SMILES (their lines listed) instead of stopping")
@click.option("--check-model/--no-check-model", default=True, show_default=True,
              help="also check that every molecule fits moses-mdlm's tokens and context")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write a CSV of properties and rewards")
def score_smiles(path, rewards, skip_invalid, check_model, out):
    """Score a SMILES file (one molecule per line) with RDKit oracles; print each reward's mean."""
    import csv

    from .hub import model_card
    from .molecules.data import Vocabulary, read_smiles_file
    from .molecules.report import TABLE, property_rows
    from .molecules.rewards import score_smiles as score
    from .molecules.steer import check_names

    check_names("svdd", list(rewards), [])
    smiles, skipped = read_smiles_file(path, "skip" if skip_invalid else "stop")
    if skipped:
        click.echo(f"skipped {len(skipped)} invalid line(s): {', '.join(map(str, skipped[:20]))}", err=True)
    if not smiles:
        raise RewardsteerError(f"{path}: no valid SMILES to score")
    if check_model:  # an unknown token or a molecule longer than the context: one line naming it
        Vocabulary(**model_card("moses-mdlm")["vocabulary"]).encode(smiles)
    scores = {name: score(name, smiles) for name in rewards}
    for name, v in scores.items():
        click.echo(f"{name}: mean {sum(v) / len(v):.4f}, min {min(v):.4f}, max {max(v):.4f} over {len(v)} molecules")
    if out is not None:
        with Path(out).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=(*TABLE, *rewards), restval="")
            writer.writeheader()
            for i, row in enumerate(property_rows(smiles)):
                writer.writerow({**row, **{k: round(v[i], 4) for k, v in scores.items()}})
        click.echo(f"wrote {out}")


@cli.command("train-reward")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/reward"), show_default=True,
              help="folder for NAME[-i].safetensors + NAME[-i].json; use it as --reward bt:OUT")
@click.option("--name", default="bt", show_default=True)
@click.option("--members", type=click.IntRange(min=1), default=1, show_default=True,
              help="ensemble size; members differ by seed (seed, seed+1, ...)")
@click.option("--bootstrap/--no-bootstrap", default=False, show_default=True,
              help="each member trains on a bootstrap resample of the pairs")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--width", type=click.IntRange(min=1), default=8, show_default=True, help="CNN base width")
@click.option("--heldout-fraction", type=click.FloatRange(0, 0.5), default=0.1, show_default=True,
              help="pairs kept out of training to measure pairwise accuracy")
@click.option("--seed", type=int, default=0, show_default=True)
def train_reward(pairs, out, name, members, bootstrap, epochs, batch, lr, width, heldout_fraction, seed):
    """Train a Bradley-Terry reward model (small CNN) on preference pairs.

    PAIRS is a safetensors file with two float tensors of one shape, 'preferred' and 'rejected', each
    (N, C, H, W) images in [0, 1] with N >= 2: row j of 'preferred' was preferred to row j of 'rejected'.
    Build one from samples and any scoring function (here 10% of the labels flipped, as noisy annotators):

    \b
      from rewardsteer.preference import make_pairs, save_pairs
      preferred, rejected = make_pairs(images, score_fn, flip=0.1)  # score_fn(images) -> (N,)
      save_pairs("pairs.safetensors", preferred, rejected)

    Use the trained models as --reward bt:OUT, or in Python as rewardsteer.models.load_bt(OUT).
    """
    from .preference import load_pairs, train_and_save

    a, b = load_pairs(pairs)
    metrics = train_and_save(a, b, out, name, members=members, seed=seed, bootstrap=bootstrap,
                             heldout_fraction=heldout_fraction, source=str(pairs), epochs=epochs, batch=batch, lr=lr,
                             width=width)
    for k, m in enumerate(metrics):
        acc = (f"held-out pairwise accuracy {m['heldout_accuracy_untrained']:.3f} -> {m['heldout_accuracy']:.3f} "
               f"({m['heldout_pairs']} pairs)" if "heldout_accuracy" in m else "no held-out pairs")
        click.echo(f"member {k}: train accuracy {m['train_accuracy']:.3f}, {acc}")
    click.echo(f"wrote {members} model(s) to {out}; use them with --reward bt:{out}")


@cli.group()
def bench():
    """Benchmarks that reproduce published findings on the bundled models."""


@bench.command()
@click.option("--quick", is_flag=True, help="a few-minute version (fewer seeds, samples and iterations)")
@click.option("--class", "target", type=click.IntRange(0, 9), default=7, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="override the number of seeds")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/overopt"), show_default=True)
def overopt(quick, target, seeds, threads, out):
    """Reward over-optimization: gold vs proxy reward under best-of-N and ReNO, single vs ensembles (mean, WCO,
    UWO); writes results.json, table.md, bon.png and reno.png to --out."""
    import dataclasses
    import json

    import torch

    from . import models
    from . import overopt as bench_overopt

    if threads:
        torch.set_num_threads(threads)
    cfg = bench_overopt.QUICK if quick else bench_overopt.Config()
    cfg = dataclasses.replace(cfg, target=target, **({"seeds": seeds} if seeds else {}))
    proxies = [models.classifier_reward(f"mnist-proxy-{i}", target) for i in range(5)]
    bench_overopt.run(models.onestep(), models.classifier("mnist-judge"), proxies, cfg, out,
                      log=lambda **rec: click.echo(json.dumps(rec), err=True))
    click.echo((out / "table.md").read_text())
    click.echo(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'bon.png'}, {out / 'reno.png'}")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--class", "target", type=click.IntRange(0, 9), default=8, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=30, show_default=True)
def demo(out, target, iters):
    """The default job: per-class samples from both generators scored by the judge, then ReNO steering of
    mnist-onestep toward one class with the proxy ensemble while mnist-judge watches as held-out."""
    from .demo import run_demo

    for line in run_demo(out, target, iters):
        click.echo(line)


def _add_commands():
    """Commands defined in their own packages (batch runs: rewardsteer.batch; the web demo: rewardsteer.serve)."""
    from .amortized.command import finetune, train_noise
    from .batch.command import batch
    from .serve.command import serve

    cli.add_command(batch)
    cli.add_command(serve)
    cli.add_command(train_noise)
    cli.add_command(finetune)


_add_commands()


def main(argv=None):
    """Entry point: user errors print one line and exit 2, never a traceback; SIGTERM (what job schedulers send)
    acts as Ctrl-C (the partial result is written) and exits 143."""
    with sigterm_as_interrupt() as term:
        try:
            _main(argv)
        except SystemExit as e:
            if term["signal"] and e.code == 130:
                sys.exit(SIGTERM_EXIT)
            raise


def _main(argv=None):
    try:
        cli.main(args=argv, prog_name="rewardsteer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except RewardsteerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
