"""What a molecule run leaves behind: SMILES, a grid of RDKit drawings, a property table, result.json."""

from __future__ import annotations

import csv
from pathlib import Path

from ..report import plot_trace
from ..result import Result
from . import chem
from .data import Vocabulary

TABLE = ("smiles", "valid", "qed", "logp", "sa", "mw", "penalized_logp", "rings")


def property_rows(smiles: list[str]) -> list[dict]:
    """One row per molecule: SMILES, validity and every RDKit property (empty for invalid molecules)."""
    rows = []
    for s in smiles:
        props = chem.properties(s)
        rows.append({"smiles": s, "valid": int(props is not None),
                     **{k: round(v, 4) for k, v in (props or {}).items()}})
    return rows


def molecule_grid(smiles: list[str], legends: list[str], path: Path, per_row: int = 4) -> Path:
    """RDKit drawings of the molecules (an empty frame for an invalid one), with a legend under each."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    mols = [chem.mol(s) or Chem.Mol() for s in smiles]
    Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(240, 200), legends=legends).save(path)
    return path


def write_molecule_report(result: Result, vocab: Vocabulary, out_dir: str | Path) -> dict[str, Path]:
    """result.json + tensors (Result.save), samples.smi (steered, then the unsteered plain samples), properties.csv,
    grid.png (plain samples on top, steered below, each with its objective score) and trace.png."""
    out = result.save(out_dir)
    after, before = vocab.decode(result.samples.long()), vocab.decode(result.initial_samples.long())
    smi = out / "samples.smi"
    smi.write_text("".join(f"{s}\tsteered_{i}\t{float(r):.4f}\n" for i, (s, r) in enumerate(zip(after, result.scores)))
                   + "".join(f"{s}\tunsteered_{i}\t{float(r):.4f}\n"
                             for i, (s, r) in enumerate(zip(before, result.initial_scores))))
    table = out / "properties.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("set", "reward", *TABLE), restval="")
        writer.writeheader()
        for name, smiles, scores in (("steered", after, result.scores), ("unsteered", before, result.initial_scores)):
            for row, r in zip(property_rows(smiles), scores.tolist()):
                writer.writerow({"set": name, "reward": round(r, 4), **row})
    k = min(len(after), len(before), 8)
    legends = [f"plain {float(r):.3f}" for r in result.initial_scores[:k]] + [f"steered {float(r):.3f}"
                                                                              for r in result.scores[:k]]
    grid = molecule_grid(before[:k] + after[:k], legends, out / "grid.png", per_row=k)
    return {"result": out / "result.json", "smiles": smi, "table": table, "grid": grid,
            "trace": plot_trace(result, out / "trace.png")}
