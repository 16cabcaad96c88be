"""The `rewardsteer` command line: the group, `models` and `demo`, and the entry point. Every other command lives in
`rewardsteer.commands` (a steering run: `commands.run`, which hands a RunSpec to the run layer); nothing imports
this module but the console script."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import RewardsteerError
from .safety import SIGTERM_EXIT, sigterm_as_interrupt, writable_out_option


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
    from .bundled.hub import list_models

    for card in list_models():
        arch = card["architecture"]
        click.echo(f"{card['name']:<15} {card['kind']:<10} {arch['class']} {arch['parameters'] / 1e6:.2f}M params, "
                   f"{card['size_mb']} MB")
        click.echo(f"    data: {card['data'].get('subset', card['data']['dataset'])} ({card['data']['license']})")
        if card.get("metrics"):
            click.echo("    metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in card["metrics"].items()))


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              callback=writable_out_option)
@click.option("--class", "target", type=click.IntRange(0, 9), default=8, show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=30, show_default=True)
def demo(out, target, iters):
    """The default job: per-class samples from both generators scored by the judge, then ReNO steering of
    mnist-onestep toward one class with the proxy ensemble while mnist-judge watches as held-out."""
    from .demo import run_demo

    for line in run_demo(out, target, iters):
        click.echo(line)


def add_commands():
    """Commands defined in rewardsteer.commands, one module per concern."""
    from .commands.amortized import finetune, train_noise
    from .commands.batch import batch
    from .commands.bench import bench
    from .commands.hf import hf
    from .commands.molecules import score_smiles
    from .commands.run import run
    from .commands.serve import serve
    from .commands.training import train_reward

    for command in (run, score_smiles, train_reward, bench, batch, serve, train_noise, finetune, hf):
        cli.add_command(command)


add_commands()


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
