"""`rewardsteer score-smiles`: RDKit oracles on a SMILES file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import RewardsteerError
from ..safety import writable_file_option


@click.command("score-smiles")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--reward", "rewards", multiple=True, default=["qed"], show_default=True,
              help="molecule reward, repeatable: qed, neg_sa, logp, penalized_logp, sa_ok, mw_ok, qed_sa_mw")
@click.option("--skip-invalid", is_flag=True, help="skip invalid SMILES (their lines listed) instead of stopping")
@click.option("--check-model/--no-check-model", default=True, show_default=True,
              help="also check that every molecule fits moses-mdlm's tokens and context")
@click.option("--out", type=click.Path(path_type=Path), default=None, callback=writable_file_option,
              help="write a CSV of properties and rewards")
def score_smiles(path, rewards, skip_invalid, check_model, out):
    """Score a SMILES file (one molecule per line) with RDKit oracles; print each reward's mean."""
    import csv

    from ..bundled.hub import model_card
    from ..molecules.data import Vocabulary, read_smiles_file
    from ..molecules.report import TABLE, property_rows
    from ..molecules.rewards import check_smiles_reward
    from ..molecules.rewards import score_smiles as score

    for name in rewards:
        check_smiles_reward(name)
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
