"""The `rewardsteer` command line: list models, steer a generator toward a reward, run the demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import RewardsteerError


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


@cli.command()
@click.option("--model", default="mnist-onestep", show_default=True, help="mnist-onestep or mnist-flow")
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True,
              help="ODE steps when --model mnist-flow (unrolled, checkpointed)")
@click.option("--class", "target", type=click.IntRange(0, 9), default=7, show_default=True, help="digit to generate")
@click.option("--reward", "rewards", multiple=True, default=["proxies"], show_default=True,
              help="reward spec, repeatable (mean of all): proxies[:k], proxy:mnist-proxy-0, mnist-judge")
@click.option("--heldout", "heldouts", multiple=True, default=["mnist-judge"], show_default=True,
              help="held-out reward spec, repeatable; watched, never optimized ('none' to disable)")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="reno", show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=4, show_default=True,
              help="samples: independent noises (reno, search) or candidates kept (best_of_n k)")
@click.option("--iters", type=click.IntRange(min=1), default=50, show_default=True,
              help="iterations (reno, zero_order_search, random_search rounds)")
@click.option("--candidates", type=click.IntRange(min=1), default=64, show_default=True,
              help="best_of_n: N drawn; random_search: per round")
@click.option("--reg", type=float, default=0.01, show_default=True, help="reno: prior weight lambda")
@click.option("--lr", type=float, default=5.0, show_default=True, help="reno: learning rate")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--max-nfe", type=int, default=None, help="budget: generator evaluations")
@click.option("--max-backward", type=int, default=None, help="budget: backward passes")
@click.option("--max-reward-calls", type=int, default=None, help="budget: reward evaluations")
@click.option("--max-seconds", type=float, default=None, help="budget: wall-clock seconds")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def run(model, steps, target, rewards, heldouts, method, n, iters, candidates, reg, lr, optimizer, max_nfe,
        max_backward, max_reward_calls, max_seconds, seed, out, progress):
    """Steer a bundled generator toward a reward; write grid.png, trace.png and result.json to --out."""
    from . import methods as m
    from .budget import Budget
    from .errors import UnknownNameError
    from .models import GENERATORS, generator, reward_from_spec
    from .report import summary_lines, write_report
    from .rewards import Ensemble

    budget = Budget(max_nfe, max_backward, max_reward_calls, max_seconds)
    if model not in GENERATORS:  # check every name before loading any weights
        raise UnknownNameError("generator", model, GENERATORS)
    members = [reward_from_spec(s) for s in rewards]
    reward = members[0] if len(members) == 1 else Ensemble(members, name="+".join(rewards))
    heldout = {s: reward_from_spec(s) for s in heldouts if s != "none"}
    gen = generator(model, steps=steps)
    common = dict(cond=target, budget=budget, seed=seed, heldout=heldout, progress=progress)
    if method == "best_of_n":
        call = lambda: m.best_of_n(gen, reward, n=candidates, k=n, **common)  # noqa: E731
    elif method == "random_search":
        call = lambda: m.random_search(gen, reward, rounds=iters, candidates_per_round=candidates, k=n, **common)  # noqa: E731
    elif method == "zero_order_search":
        call = lambda: m.zero_order_search(gen, reward, n=n, iters=iters, **common)  # noqa: E731
    else:
        call = lambda: m.reno(gen, reward, n=n, iters=iters, reg=reg, lr=lr, optimizer=optimizer, **common)  # noqa: E731
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


def main(argv=None):
    """Entry point: user errors print one line and exit 2, never a traceback."""
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
