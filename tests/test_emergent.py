"""`models.emergent_sampler`: its contracts (cond=None draws any digit from a proper class posterior, an int cond is
the guided conditional, `rows` counts the UNet's rows, gradients reach the state) and the benchmark's quick mode."""

import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch

import rewardsteer as rs
from rewardsteer import models
from rewardsteer.bundled.flow import FlowSampler

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sampler():
    torch.set_num_threads(1)
    return models.emergent_sampler(num_steps=6, eta=0.0)


def test_class_posterior_is_a_distribution_and_cond_none_draws_any_digit(sampler):
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for t in (0.0, 0.03, 0.4, 0.95):  # on and between the log Z_c(t) grid points
        p = sampler.class_posterior(x, t)
        assert p.shape == (5, 10) and (p >= 0).all()
        torch.testing.assert_close(p.sum(1), torch.ones(5))
    assert sampler.normalized  # the card's table matches the default guidance
    with torch.no_grad():
        images = sampler.sample(sampler.initial_state(20, torch.Generator().manual_seed(1)), None)
        classes = models.classifier("mnist-judge")(images).argmax(1)
    assert images.shape == (20, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert len(classes.unique()) >= 4, classes  # not one digit fixed up front: many digits from one sampler


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_a_class_cond_is_the_guided_conditional_of_the_flow_sampler(sampler, eta):
    flow = FlowSampler(sampler.model, sampler.num_steps, sampler.guidance, eta)  # 1-channel state: no class code
    noise = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    sampler.eta = eta
    try:
        for cond in (3, torch.tensor([0, 7, 7])):
            with torch.no_grad():
                torch.testing.assert_close(sampler.predict_x0(noise, 1, cond), flow.predict_x0(noise, 1, cond),
                                           rtol=0, atol=0)
                a = sampler.sample(noise, cond, torch.Generator().manual_seed(3))
                b = flow.sample(noise, cond, torch.Generator().manual_seed(3))
            assert torch.equal(a, b)
    finally:
        sampler.eta = 0.0


def test_rows_count_every_unet_evaluation(sampler):
    seen = []
    hook = sampler.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            before = sampler.rows
            sampler.sample(x, 5)
            assert sampler.rows - before == sum(seen) == 2 * 4 * sampler.num_steps  # guided: class + null rows
            seen.clear()
            before = sampler.rows
            sampler.sample(x, None)
        # cond=None: one row per kept (sample, class) pair plus a null row per sample, more than 2 per sample early on
        assert sampler.rows - before == sum(seen) > 2 * 4 * sampler.num_steps
    finally:
        hook.remove()


def test_gradients_flow_through_predict_x0_and_the_posterior(sampler):
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(5), requires_grad=True)
    sampler.predict_x0(x, 2, None).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    y = x.detach().clone().requires_grad_(True)
    sampler.class_posterior(y, 0.5)[:, 3].sum().backward()
    assert y.grad.abs().sum() > 0  # guidance and DAS see how the class weights move too


def test_das_runs_on_the_emergent_sampler():
    steered = models.emergent_sampler(num_steps=3, eta=1.0)
    res = rs.das(steered, models.classifier_reward("mnist-proxy-0", 7), n=1, particles=2, seed=0, progress=False)
    assert res.samples.shape == (1, 1, 28, 28) and res.noises.shape == (1, 1, 28, 28) and steered.rows > 0


def test_benchmark_quick_mode(tmp_path):
    spec = importlib.util.spec_from_file_location("emergent_bench", ROOT / "benchmarks" / "emergent.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    start = time.time()
    result = bench.main(["--quick", "--out", str(tmp_path)])
    seconds = time.time() - start
    assert json.loads((tmp_path / "emergent.json").read_text())["settings"].keys() == result["settings"].keys()
    assert (tmp_path / "emergent.png").stat().st_size > 0
    text = (tmp_path / "emergent.md").read_text()
    assert "python benchmarks/emergent.py --quick" in text and "bars met" in text
    assert list(result["settings"]) == ["ODE (eta=0), 4 steps", "SDE (eta=1), 4 steps"]
    for setting in result["settings"].values():
        assert setting["n"] == 30 and setting["conditional_source"] == "measured, n=30"
        assert set(setting["bars"]) == {"mnist-judge", "mnist-judge-vit", "mnist-judge-rff", "frechet"}
        assert isinstance(setting["all_bars_met"], bool) and setting["rows_per_sample"] > 8  # conditional: 2 × 4 steps
        curve = setting["decision_curve"]
        assert len(curve["t"]) == 4 and all(0 <= p <= 1 for p in curve["p_xt_class_is_final"])
    runs = result["particles"]["runs"]
    assert {(r["sampler"], r["method"]) for r in runs} == {(s, m) for s in ("emergent", "mixture prior")
                                                           for m in ("fk", "svdd")}
    for r in runs:
        assert 0 <= r["differs_from_step0_class"] <= 1 and len(r["returned_classes"]) == 2
    assert seconds < 120  # 45 s measured with both cores shared by four jobs; the bound leaves room for worse


def test_models_md_keeps_the_emergent_section_when_evaluate_rewrites_it(tmp_path):
    from rewardsteer.bundled.training import EMERGENT_BEGIN, EMERGENT_END, MOLECULES_BEGIN, MOLECULES_END, write_section
    from rewardsteer.train.evaluate import kept_sections

    path = tmp_path / "models.md"
    path.write_text(f"# Bundled models\n\n{MOLECULES_BEGIN}\nmolecules\n{MOLECULES_END}\n")
    write_section(path, "emergent v1", EMERGENT_BEGIN, EMERGENT_END)
    write_section(path, "emergent v2", EMERGENT_BEGIN, EMERGENT_END)  # replaced, not appended twice
    kept = kept_sections(path)
    assert "molecules" in kept and "emergent v2" in kept and "emergent v1" not in kept
    assert path.read_text().count(EMERGENT_BEGIN) == 1
