"""`rewardsteer hf ...`: Hugging Face helpers; `hf tiny-pipeline DIR` writes a tiny offline pipeline to try `--pipeline`."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from ..errors import RewardsteerError

KINDS = ("sd", "sdxl", "flux", "flux-dev", "sd3")  # rewardsteer.hf.tiny.KINDS (not imported: no diffusers at start-up)


@click.group("hf")
def hf():
    """Hugging Face pipelines: offline helpers (needs pip install "rewardsteer[hf]")."""


@hf.command("tiny-pipeline")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), default="sd", show_default=True,
              help="sd: SD-Turbo style (Euler, trailing); sdxl; flux (schnell); flux-dev; sd3")
def tiny_pipeline(out, kind):
    """Write a tiny pipeline (OUT/pipeline) and a tiny CLIP model (OUT/clip), built from configs with random
    weights and in-memory tokenizers: nothing is downloaded. Every --pipeline path then runs offline in seconds
    (docs/diffusers.md); the images are noise-like, for trying the plumbing, not for quality."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RewardsteerError(f"cannot write to {out}: {e.strerror or e}") from None
    try:
        from ..hf.tiny import save_tiny
    except ImportError as e:
        raise RewardsteerError(f"hf tiny-pipeline needs diffusers and transformers: pip install \"rewardsteer[hf]\" "
                               f"({e})") from None
    paths = save_tiny(out, kind)
    pipe, clip = (shlex.quote(str(paths[k])) for k in ("pipeline", "clip"))
    click.echo(f"wrote a tiny {kind} pipeline to {paths['pipeline']} and a tiny CLIP model to {paths['clip']}; try:")
    click.echo(f"  rewardsteer run --pipeline {pipe} --prompt 'a red cat' --reward clip:{clip} --method reno --iters 5 "
               "--n 2 --height 16 --width 16 --device cpu")
    click.echo(f"  rewardsteer run --pipeline {pipe} --prompt 'a red cat' --reward jpeg --method fk --particles 2 "
               "--steps 4 --height 16 --width 16 --device cpu")
