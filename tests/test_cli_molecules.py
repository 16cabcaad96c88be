"""The command line on molecules: a steering run of moses-mdlm writes SMILES, drawings and a property table;
scoring a user's SMILES file; bad input is one line and exit 2."""

import csv
import json

import pytest

pytest.importorskip("rdkit", reason="molecule CLI tests need RDKit (pip install 'rewardsteer[molecules]')")


def test_molecule_run_writes_its_report(run_cli, tmp_path):
    out = run_cli("run", "--model", "moses-mdlm", "--reward", "qed_sa_mw", "--method", "fk", "--particles", "2",
                  "--n", "2", "--steps", "4", "--interval", "1", "--out", str(tmp_path / "r"), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "held-out valid:" in out.stdout and "cost:" in out.stdout
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["method"] == "fk_steering" and result["spent"]["nfe"] == 2 * 2 * 4
    assert set(result["member_scores"]) == {"qed", "sa_ok", "mw_ok"}  # the weighted sum's members stay visible
    rows = list(csv.DictReader((tmp_path / "r" / "properties.csv").open()))
    assert len(rows) == 4 and {r["set"] for r in rows} == {"steered", "unsteered"}
    assert len((tmp_path / "r" / "samples.smi").read_text().splitlines()) == 4
    assert (tmp_path / "r" / "grid.png").stat().st_size > 0


@pytest.mark.parametrize("args, fragment", [
    (["--reward", "tastiness"], "unknown molecule reward 'tastiness'; available:"),
    (["--method", "das"], "--method das needs a continuous generator; on molecules use one of svdd"),
    (["--heldout", "judges"], "unknown molecule held-out reward 'judges'"),
    (["--robust", "light"], "--robust is an image option"),
])
def test_molecule_run_bad_input(run_cli, tmp_path, args, fragment):
    out = run_cli("run", "--model", "moses-mdlm", *args, "--out", str(tmp_path / "r"), "--no-progress")
    assert out.returncode == 2 and fragment in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "r").exists()


def test_score_smiles(run_cli, tmp_path):
    path = tmp_path / "mine.smi"
    path.write_text("SMILES\nCCO\nnot_a_molecule\nc1ccccc1O phenol\n")
    out = run_cli("score-smiles", str(path))
    assert out.returncode == 2 and "mine.smi:3: invalid SMILES 'not_a_molecule'" in out.stderr
    out = run_cli("score-smiles", str(path), "--skip-invalid", "--reward", "qed", "--reward", "neg_sa",
                  "--out", str(tmp_path / "s.csv"))
    assert out.returncode == 0 and "skipped 1 invalid line(s): 3" in out.stderr
    assert "qed: mean" in out.stdout and "over 2 molecules" in out.stdout
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [r["smiles"] for r in rows] == ["CCO", "c1ccccc1O"] and float(rows[0]["qed"]) > 0


@pytest.mark.parametrize("smiles, fragment", [("C" * 60, "longer than the model's context"),
                                              ("C[Si](C)(C)C", "unknown token '[Si]'")])
def test_score_smiles_names_molecules_the_model_cannot_hold(run_cli, tmp_path, smiles, fragment):
    path = tmp_path / "odd.smi"
    path.write_text(f"{smiles}\n")
    out = run_cli("score-smiles", str(path))
    assert out.returncode == 2 and fragment in out.stderr and "molecule 0" in out.stderr, out.stderr
    assert run_cli("score-smiles", str(path), "--no-check-model").returncode == 0
