"""`rewardsteer train-reward`: Bradley-Terry reward models from preference pairs."""

from __future__ import annotations

from pathlib import Path

import click

from ..safety import file_name_option, finite_option, writable_out_option


@click.command("train-reward")
@click.argument("pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/reward"), show_default=True,
              callback=writable_out_option, help="folder for NAME[-i].safetensors + NAME[-i].json; use it as --reward bt:OUT")
@click.option("--name", default="bt", show_default=True, callback=file_name_option,
              help="file name of the model(s) in --out (no folders)")
@click.option("--members", type=click.IntRange(min=1), default=1, show_default=True,
              help="ensemble size; members differ by seed (seed, seed+1, ...)")
@click.option("--bootstrap/--no-bootstrap", default=False, show_default=True,
              help="each member trains on a bootstrap resample of the pairs")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True,
              callback=finite_option)
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
      from rewardsteer.rewards.preference import make_pairs, save_pairs
      preferred, rejected = make_pairs(images, score_fn, flip=0.1)  # score_fn(images) -> (N,)
      save_pairs("pairs.safetensors", preferred, rejected)

    Use the trained models as --reward bt:OUT, or in Python as rewardsteer.models.load_bt(OUT).
    """
    from ..rewards.preference import load_pairs, train_and_save

    a, b = load_pairs(pairs)
    metrics = train_and_save(a, b, out, name, members=members, seed=seed, bootstrap=bootstrap,
                             heldout_fraction=heldout_fraction, source=str(pairs), epochs=epochs, batch=batch, lr=lr,
                             width=width)
    for k, m in enumerate(metrics):
        acc = (f"held-out pairwise accuracy {m['heldout_accuracy_untrained']:.3f} -> {m['heldout_accuracy']:.3f} "
               f"({m['heldout_pairs']} pairs)" if "heldout_accuracy" in m else "no held-out pairs")
        click.echo(f"member {k}: train accuracy {m['train_accuracy']:.3f}, {acc}")
    click.echo(f"wrote {members} model(s) to {out}; use them with --reward bt:{out}")
