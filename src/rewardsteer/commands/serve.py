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
def serve(host, port, threads, workdir):
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

    click.echo(f"rewardsteer serve: http://{host}:{port} (Ctrl-C to stop)")
    start(host, port, workdir)
