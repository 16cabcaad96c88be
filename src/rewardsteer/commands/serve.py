"""The `rewardsteer serve` command (registered on the CLI group in rewardsteer.cli)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from ..errors import RewardsteerError


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (localhost only by default)")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's)")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="where runs write their files (default: a temporary folder)")
@click.option("--allow-path", "allow_paths", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="a folder whose files the page may name (bt:PATH rewards, amortized maps, pipelines), repeatable; "
                   "without it the page offers only the bundled models and rewards")
@click.option("--max-nfe-cap", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="the most generator evaluations one page run may spend (also its budget when none is given)")
@click.option("--max-seconds-cap", type=click.FloatRange(min=0, min_open=True, max=86_400), default=300.0,
              show_default=True, help="the most wall-clock seconds one page run may take")
@click.option("--max-steps-cap", type=click.IntRange(min=1), default=100, show_default=True,
              help="the most sampler steps a page run may ask for")
def serve(host, port, threads, workdir, allow_paths, max_nfe_cap, max_seconds_cap, max_steps_cap):
    """A web page for steering: pick generator, target, rewards and aggregate, held-out judges, method and budget;
    watch the trace live; see the before/after grid, the cost and the monitor; download result.json."""
    if importlib.util.find_spec("gradio") is None:
        raise RewardsteerError("rewardsteer serve needs Gradio: pip install 'rewardsteer[demo]'")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if workdir is not None:
        from ..safety import check_writable

        check_writable(workdir, "--workdir")
    from ..serve.app import serve as start
    from ..serve.policy import PagePolicy

    policy = PagePolicy(tuple(map(str, allow_paths)), max_nfe_cap, max_seconds_cap, max_steps_cap)
    click.echo(f"rewardsteer serve: http://{host}:{port} (Ctrl-C to stop)")
    if policy.allow_paths:
        click.echo(f"the page may read files under: {', '.join(policy.allow_paths)}")
    start(host, port, workdir, policy=policy)
