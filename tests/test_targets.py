"""The hard targets (issue 28, item 2): the analytic attributes on shapes of known size and lean, the image gold rule
on real digits, the objectives' shape, the molecule targets' gold and objective, and a cheap re-run of
`benchmarks/targets.py` checked against the committed rates (docs/benchmarks/targets.json)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rewardsteer.bench import attributes as A
from rewardsteer.bench.rates import binomial_cdf, consistent, upper_bound
from rewardsteer.bench.targets import (
    IMAGE_TARGETS,
    PEAK_LOW,
    REALISM_LOW,
    ImageGold,
    Target,
    image_objective,
    image_target,
    within,
)
from rewardsteer.errors import UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
COMMITTED = json.loads((ROOT / "docs" / "benchmarks" / "targets.json").read_text())


# --- analytic attributes: synthetic strokes of known width and lean (no data, no networks) ---

@pytest.mark.parametrize("width", [1, 2, 3])
def test_vertical_bar_thickness_height_width(width):
    m = A.measure(A.bar(width, 19))
    assert m["width"].item() == width and m["height"].item() == 19
    assert abs(m["thickness"].item() - width) <= 0.6  # the ends shorten the skeleton by about width - 1
    assert abs(m["slant"].item()) < 1e-4


@pytest.mark.parametrize("deg", [-25.0, 25.0])
def test_slant_sign_and_size(deg):
    assert A.measure(A.bar(2, 19, deg))["slant_deg"].item() == pytest.approx(deg, abs=3.0)  # > 0 leans right


def test_thicker_bars_measure_thicker():
    t = [A.measure(A.bar(w, 19))["thickness"].item() for w in (1, 2, 3, 4, 5)]
    assert t == sorted(t)


def test_skeleton_is_one_pixel_wide():
    s = A.skeleton(A.bar(5, 19)[:, 0] > 0.5)
    assert s.sum(2).max().item() == 1  # at most one skeleton pixel per row


def test_shear_moves_slant_by_the_shear():
    x = (A.bar(3, 17) + A.bar(3, 9).roll(6, dims=3)).clamp(0, 1)  # a little two-stroke glyph
    assert (A.measure(A.shear(x, 0.3))["slant"] - A.measure(x)["slant"]).item() == pytest.approx(0.3, abs=0.05)


def test_dilation_thickens():
    x = A.bar(2, 19, 15.0)
    assert A.measure(F.max_pool2d(x, 3, 1, 1))["thickness"] > A.measure(x)["thickness"]


def test_blank_image_and_batch_shape():
    m = A.measure(torch.zeros(3, 1, 28, 28))
    assert all(v.shape == (3,) and (v == 0).all() for v in m.values())
    with pytest.raises(ValueError):
        A.measure(torch.zeros(28, 28))


# --- rates ---

def test_upper_bound_is_clopper_pearson():
    for n in (1, 20, 100_000):
        assert upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-6)  # the closed form at k = 0
    assert binomial_cdf(12, 100_000, upper_bound(12, 100_000)) == pytest.approx(0.05, rel=1e-6)
    assert upper_bound(5, 5) == 1.0 and consistent(3, 1000, 0.003) and not consistent(30, 1000, 0.003)


# --- the image gold rule and objective ---

@pytest.fixture(scope="module")
def gold():
    return ImageGold()


@pytest.fixture(scope="module")
def real_digits(gold):
    from rewardsteer.bundled.data import load_mnist

    test = load_mnist().test
    x, y = test.images[:2000], test.labels[:2000]
    return x, y, gold.measure(x)


def test_realism_rule_passes_about_95_percent_of_real_digits(real_digits):
    _, _, stats = real_digits
    assert 0.93 <= (stats["realism"] >= REALISM_LOW).float().mean().item() <= 0.97
    assert REALISM_LOW == pytest.approx(COMMITTED["images"]["realism_quantiles"]["real"]["q0.05"], abs=1e-3)


def test_gold_accepts_real_digits_that_meet_a_target_and_no_blank_or_saturated_image(gold, real_digits):
    x, y, stats = real_digits
    t = image_target("thin-0")
    ok = gold(x, t)
    assert torch.equal(ok, ImageGold.meets(stats, t)) and 10 <= int(ok.sum()) <= 50  # ~1.45% of these 2,000
    assert (y[ok] == 0).all() and (stats["thickness"][ok] <= 2.0).all()
    odd = torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28), torch.rand(1, 28, 28)])  # blank, saturated, noise
    assert not any(gold(odd, target).any() for target in IMAGE_TARGETS.values())
    # realism alone rejects the saturated and the noise image, but not the blank one (about -0.9: near the mean of
    # real digits in the monitor's PCA space); the judges reject it
    realism = gold.realism.score(odd)
    assert (realism[1:] < REALISM_LOW).all() and realism[0] >= REALISM_LOW and gold.judged_class(odd[:1]).item() == -1


def test_gold_rejects_dimmed_digits_that_the_attributes_read_as_thin(gold, real_digits):
    """Ink is pixels > 0.5, so a dimmed 0 reads thin; realism and the judges accept it; the peak gate does not."""
    x, y, stats = real_digits
    zeros, t = x[y == 0][:150], image_target("thin-0")
    as_bright = lambda s: {**s, "peak": torch.ones_like(s["peak"])}  # noqa: E731  the rule without its peak gate
    before = int(ImageGold.meets(as_bright(gold.measure(zeros)), t).sum())
    for scale in (0.7, 0.45):
        dim = gold.measure(zeros * scale)
        assert (dim["realism"] >= REALISM_LOW).float().mean() > 0.95
        assert int(ImageGold.meets(as_bright(dim), t).sum()) > 1.5 * before  # the hack the gate closes
        assert not ImageGold.meets(dim, t).any()
    assert (stats["peak"] >= PEAK_LOW).all()  # every real digit passes the gate


def test_target_errors_name_what_is_known():
    with pytest.raises(UnknownNameError, match="available: .*thin-0"):
        image_target("thin-7")
    with pytest.raises(UnknownNameError, match="unknown attribute 'curl'"):
        within({"slant": torch.zeros(2)}, {"curl": (0, 1)})
    assert Target("x", 1, {"slant": (0.1, None)}).in_range({"slant": torch.tensor([0.0, 0.2])}).tolist() == [False, True]


def test_image_objective_is_differentiable_and_its_members_are_visible(real_digits):
    x, y, _ = real_digits
    ones = x[y == 1][:4].clone()
    objective = image_objective(image_target("steep-right-1"))
    assert objective.differentiable and set(objective.members) == {"class", "slant"}
    inp = ones.clone().requires_grad_(True)
    total, members = objective.evaluate(inp)
    assert total.shape == (4,) and set(members) == {"class", "slant"}
    assert torch.allclose(total, members["class"] + members["slant"])
    (grad,) = torch.autograd.grad(total.sum(), inp)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():  # leaning the 1s to the right brings the slant member closer to its range (0 inside)
        leaned = objective.evaluate(A.shear(ones, 0.5))[1]["slant"]
    assert (leaned >= members["slant"].detach()).all() and (leaned <= 0).all()


# --- molecule targets ---

@pytest.fixture(scope="module")
def mol():
    pytest.importorskip("rdkit", reason="molecule targets need RDKit (pip install 'rewardsteer[molecules]')")
    pytest.importorskip("selfies", reason="molecule targets need selfies (pip install 'rewardsteer[molecules]')")
    from rewardsteer.bench import mol_targets

    return mol_targets


def test_property_table_and_gold_rule(mol):
    from rewardsteer.molecules import chem

    table = mol.property_table([chem.mol("CC(=O)Oc1ccccc1C(=O)O"), None])  # aspirin, an invalid molecule
    assert table["mw"][0].item() == pytest.approx(180.16, abs=0.01) and table["aromatic_rings"][0] == 1
    assert table["hbd"][0] == 1 and table["rings"][0] == 1 and table["tpsa"][0].item() == pytest.approx(63.6, abs=0.1)
    assert all(math.isnan(v[1].item()) for v in table.values())
    loose = mol.MoleculeTarget("loose", {"mw": (100, 200)})
    assert mol.meets(table, loose).tolist() == [True, False]  # an invalid molecule meets nothing
    with pytest.raises(UnknownNameError, match="molecule property"):
        mol.property_table([None], ["colour"])
    with pytest.raises(UnknownNameError, match="molecule target"):
        mol.molecule_target("cheap-and-cheerful")
    assert [n for n, t in mol.MOLECULE_TARGETS.items() if not t.rare] == ["issue-example"]


def test_molecule_task_scores_token_ids(mol):
    from rewardsteer.bench.leaderboard import Task
    from rewardsteer.molecules.data import load_moses
    from rewardsteer.molecules.oracles import bundled_vocabulary

    vocab = bundled_vocabulary()
    target = mol.molecule_target("issue-example")
    task = mol.molecule_task(target, vocab)
    assert isinstance(task, Task) and task.domain == "molecules" and not task.reward.differentiable
    assert set(task.reward.members) == set(target.ranges) and 0 < task.real_diversity < 64
    smiles = load_moses("test", limit=40)
    ids = torch.cat([vocab.encode(smiles), torch.full((1, vocab.length), vocab.pad_id)])  # the last row: no molecule
    ok = task.success(ids)
    total, members = task.reward.evaluate(ids)
    assert ok[:-1].any() and not ok[-1] and total.shape == (41,)
    assert (total[:-1][ok[:-1]] == 0).all() and (total[:-1][~ok[:-1]] < 0).all()  # 0 exactly inside every range
    assert total[-1].item() == -mol.INVALID_SPREADS * len(members)
    feats = task.features(ids[:3])
    assert feats.shape == (3, mol.FINGERPRINT_BITS) and set(feats.unique().tolist()) <= {0.0, 1.0}


def test_objective_units_are_the_committed_spreads(mol):
    committed = COMMITTED["molecules"]["properties"]
    assert {p: pytest.approx(committed[p]["spread_test_sd"], rel=2e-3) for p in mol.PROPERTIES} == mol.SPREAD


def test_committed_rates_cover_the_targets_in_code_and_certify_them(mol):
    images, mols = COMMITTED["images"]["targets"], COMMITTED["molecules"]["targets"]
    assert set(images) == set(IMAGE_TARGETS) and set(mols) == set(mol.MOLECULE_TARGETS)
    for name, t in IMAGE_TARGETS.items():
        assert images[name]["class"] == t.klass and images[name]["ranges"] == {a: list(r) for a, r in t.ranges.items()}
        assert images[name]["prior"]["n"] >= 100_000 and images[name]["prior"]["upper95"] <= 1e-3
    for name, t in mol.MOLECULE_TARGETS.items():
        assert mols[name]["ranges"] == {p: list(r) for p, r in t.ranges.items()}
        assert mols[name]["certified_rare"] == t.rare and mols[name]["test"]["rate"] >= 0.04


# --- a cheap re-run of the benchmark ---

@pytest.fixture(scope="module")
def quick(tmp_path_factory, mol):
    spec = importlib.util.spec_from_file_location("targets_bench", ROOT / "benchmarks" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("targets")
    module.main(["--quick", "--out", str(out)])
    assert "QUICK MODE" in (out / "targets.md").read_text()
    return json.loads((out / "targets.json").read_text())


def close(a: int, b: int) -> bool:
    """Counts on the same samples, allowing a few threshold flips from floating point on another machine."""
    return abs(a - b) <= max(2, 0.01 * max(a, b))


@pytest.mark.slow
def test_quick_run_is_cheap_and_repeats_the_committed_counts_on_the_same_samples(quick):
    assert quick["cpu_s"] < 60
    subset = COMMITTED["images"]["quick_subset"]
    for name, row in quick["images"]["targets"].items():
        ref = subset["targets"][name]
        assert close(row["prior"]["hits"], ref["prior"]["hits"]) and close(row["real"]["hits"], ref["real"]["hits"])
        assert close(row["prior_class_realistic"], ref["prior_class_realistic"])
        assert all(close(k, ref["prior_parts"][a]) for a, k in row["prior_parts"].items())
    for key in ("judges_agree", "realism_pass", "peak_pass", "real_judges_agree", "real_realism_pass", "real_peak_pass"):
        assert close(quick["images"]["summary"][key], subset["summary"][key]), key
    tested = {name: row["test"]["hits"] for name, row in quick["molecules"]["targets"].items()}
    assert tested == COMMITTED["molecules"]["quick_subset"]["test"]  # RDKit on the same molecules: exact


@pytest.mark.slow
def test_quick_prior_rates_are_consistent_with_the_committed_full_rates(quick):
    for domain in ("images", "molecules"):
        full = COMMITTED[domain]["targets"]
        for name, row in quick[domain]["targets"].items():
            ref = full[name]["prior"]
            p = ref["rate"] if ref["hits"] else ref["upper95"]
            assert consistent(row["prior"]["hits"], row["prior"]["n"], p), (domain, name)
            for part, k in row["prior_parts"].items():  # each range alone is common: a sharper check of the prior
                assert consistent(k, row["prior"]["n"], max(full[name]["prior_parts"][part] / ref["n"], 1e-6)), (name, part)
    assert quick["molecules"]["valid"] / quick["molecules"]["n"] >= 0.95
