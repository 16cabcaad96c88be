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


@bench.command()
@click.option("--domain", type=click.Choice(["images", "molecules"]), default="images", show_default=True)
@click.option("--quick", is_flag=True, help="a smoke version in under a minute (1 target, 2 budgets, 3 methods)")
@click.option("--method", "methods", multiple=True, help="a method on the board, repeatable (default: all)")
@click.option("--target", "targets", multiple=True, help="a target, repeatable (default: all of the domain)")
@click.option("--budget", "budgets", type=click.IntRange(min=1), multiple=True,
              help="per-output budget in NFE-equivalents, repeatable (default: 16 ... 4096)")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="number of seeds (default 3)")
@click.option("--outputs", type=click.IntRange(min=1), default=None, help="outputs per cell (default 8)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's)")
@click.option("--report-only", is_flag=True, help="write the report of the cells already in --out; run none")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/leaderboard"), show_default=True,
              callback=writable_out_option, help="cells.jsonl (resumable), leaderboard.{md,png,json}")
def leaderboard(domain, quick, methods, targets, budgets, seeds, outputs, threads, report_only, out):
    """Every method at equal compute on rare targets whose success is judged by gold (judges, analytic
    attributes and realism for images; RDKit for molecules); resumes from --out/cells.jsonl."""
    import dataclasses

    import torch

    from ..bench import board

    if threads:
        torch.set_num_threads(threads)
    cfg = board.quick(domain) if quick else board.Config(domain=domain)
    changes = {"methods": tuple(methods) or cfg.methods, "targets": tuple(targets) or cfg.targets,
               "budgets": tuple(budgets) or cfg.budgets, "report_only": report_only}
    if seeds:
        changes["seeds"] = tuple(range(seeds))
    if outputs:
        changes["outputs"] = outputs
    paths = board.run(dataclasses.replace(cfg, **changes), out, log=lambda line: click.echo(line, err=True))
    click.echo(paths["md"].read_text())
    click.echo(f"wrote {paths['md']}, {paths['png']}, {paths['json']}")
