"""The MOSES sample metrics on hand-computable cases, and the evaluation script on the bundled model."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rdkit", reason="molecule metrics need RDKit: pip install 'rewardsteer[molecules]'")

from rewardsteer.errors import RewardsteerError  # noqa: E402
from rewardsteer.molecules import metrics  # noqa: E402

SAMPLES = ["CCO", "OCC", "", "C1CC", "c1ccccc1"]  # ethanol twice (two spellings), empty, unclosed ring, benzene
WEIGHTS = Path(__file__).parents[1] / "src" / "rewardsteer" / "weights" / "moses-mdlm.safetensors"


def test_validity_counts_empty_and_unparsable_as_invalid():
    assert metrics.validity(SAMPLES) == pytest.approx(3 / 5)


def test_uniqueness_counts_canonical_duplicates_once():
    assert metrics.uniqueness(SAMPLES) == pytest.approx(2 / 3)  # OCC is CCO
    assert metrics.uniqueness(["CCO", "OCC", "CCN"], k=2) == pytest.approx(1 / 2)  # unique@2: the first two valid


def test_novelty_is_over_distinct_valid_molecules():
    assert metrics.novelty(SAMPLES, {"CCO"}) == pytest.approx(1 / 2)  # {CCO, c1ccccc1}: benzene is new
    assert metrics.novelty(["OCC"], {"CCO"}) == 0.0  # compared canonically


def test_moses_train_smiles_are_canonical():
    from rewardsteer.molecules.chem import canonical
    from rewardsteer.molecules.data import load_moses

    try:
        train = load_moses("train", limit=200)
    except RewardsteerError as e:
        pytest.skip(str(e))
    assert all(canonical(s) == s for s in train)


def test_internal_diversity():
    assert metrics.internal_diversity(["CCO", "OCC", "CCO", ""]) == pytest.approx(0.0)  # identical molecules
    # no shared Morgan bits: similarity 1 on the 2 self-pairs, 0 on the 2 others (MOSES keeps self-pairs)
    assert metrics.internal_diversity(["CCO", "c1ccccc1"]) == pytest.approx(0.5)


def test_wasserstein():
    assert metrics.wasserstein([1.0, 2.0, 5.0], [5.0, 1.0, 2.0]) == pytest.approx(0.0)
    assert metrics.wasserstein([1.0, 2.0, 5.0], [3.5, 4.5, 7.5]) == pytest.approx(2.5)  # a shift by 2.5
    same = metrics.property_distances(SAMPLES, ["CCO", "CCO", "c1ccccc1"])  # the valid samples, reordered
    assert set(same) == {"wasserstein_qed", "wasserstein_logp", "wasserstein_sa", "wasserstein_mw"}
    assert all(v == pytest.approx(0.0) for v in same.values())
    # one molecule each: W1 is the gap between the two weights (benzene 78.11 Da, ethanol 46.07 Da)
    assert metrics.property_distances(["CCO"], ["c1ccccc1"])["wasserstein_mw"] == pytest.approx(78.114 - 46.069, abs=0.01)


def test_evaluate_samples():
    out = metrics.evaluate_samples(SAMPLES, {"CCO"}, ["CCO", "OCC", "c1ccccc1"], ks=(2, 1000), with_fcd=False)
    assert out["n"] == 5 and out["validity"] == pytest.approx(0.6) and out["uniqueness"] == pytest.approx(2 / 3)
    assert out["unique@2"] == pytest.approx(0.5) and "unique@1000" not in out  # only 3 valid molecules
    assert out["novelty"] == pytest.approx(0.5) and out["wasserstein_qed"] == pytest.approx(0.0)
    assert "fcd" not in out
    assert "novelty" not in metrics.evaluate_samples(SAMPLES, None, SAMPLES, with_fcd=False)  # no train set
    assert metrics.evaluate_samples(["", "C1CC"], None, SAMPLES, with_fcd=False) == {"n": 2, "validity": 0.0}


@pytest.mark.skipif(importlib.util.find_spec("fcd") is None, reason="FCD needs the fcd package: pip install fcd==1.2.2")
def test_fcd():
    a = ["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCl", "c1ccncc1", "CC(C)O", "OCC(O)CO"] * 4
    b = ["CCCCCCCC", "CCCCCCCCO", "CCCCCCCCN", "CCCCCCCCCl"] * 8
    same = metrics.fcd(a, metrics.Reference(a))
    assert abs(same) < 1e-3 and metrics.fcd(a, b) > 1.0


def test_evaluation_script_quick(tmp_path):
    assert WEIGHTS.is_file(), "moses-mdlm's weights ship in the repository"
    out = tmp_path / "eval.json"
    subprocess.run([sys.executable, "-m", "rewardsteer.train.evaluate_molecules", "--quick", "--threads", "1",
                    "--json", str(out)], check=True, timeout=300)
    report = json.loads(out.read_text())
    assert report["n"] == 50 and report["metrics"]["validity"] >= 0.96  # SELFIES: 1.000 measured on 10,000
    assert {"uniqueness", "novelty", "intdiv1", "wasserstein_qed"} <= set(report["metrics"])
    assert report["speed"]["seconds_per_1000"] > 0


def test_internal_diversity_over_distinct_pairs():
    """self_pairs=False drops the N diagonal similarities (each 1): IntDiv1 = (N − 1)/N × the distinct-pairs value."""
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC"]
    assert metrics.internal_diversity(smiles) == pytest.approx(0.75 * metrics.internal_diversity(smiles, self_pairs=False))
    assert metrics.internal_diversity(["CCO", "CCO"], self_pairs=False) == 0.0
    assert math.isnan(metrics.internal_diversity(["CCO"], self_pairs=False))
