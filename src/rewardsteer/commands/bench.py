"""`rewardsteer bench ...`: benchmarks that reproduce published findings on the bundled models."""

from __future__ import annotations

from pathlib import Path

import click

from ..safety import writable_out_option


@click.group()
def bench():
    """Benchmarks that reproduce published findings on the bundled models."""


@bench.command()
@click.option("--quick", is_flag=True, help="a few-minute version (fewer seeds, samples and iterations)")
@click.option("--class", "target", type=click.IntRange(0, 9), default=7, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="override the number of seeds")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's)")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/overopt"), show_default=True,
              callback=writable_out_option)
def overopt(quick, target, seeds, threads, out):
    """Reward over-optimization: gold vs proxy reward under best-of-N and ReNO, single vs ensembles (mean, WCO,
    UWO); writes results.json, table.md, bon.png and reno.png to --out."""
    import dataclasses
    import json

    import torch

    from .. import models
    from ..bench import overopt as bench_overopt

    if threads:
        torch.set_num_threads(threads)
    cfg = bench_overopt.QUICK if quick else bench_overopt.Config()
    cfg = dataclasses.replace(cfg, target=target, **({"seeds": seeds} if seeds else {}))
    proxies = [models.classifier_reward(f"mnist-proxy-{i}", target) for i in range(5)]
    bench_overopt.run(models.onestep(), models.classifier("mnist-judge"), proxies, cfg, out,
                      log=lambda **rec: click.echo(json.dumps(rec), err=True))
    click.echo((out / "table.md").read_text())
    click.echo(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'bon.png'}, {out / 'reno.png'}")
