"""The shipped weights still meet their quality bars (on a small batch, slightly looser than the cards).

Bars (docs/models.md, 1,000 samples, 20 steps): mnist-flow >= 90% judged as the requested class,
mnist-onestep >= 80%, mnist-judge >= 99.0% test accuracy. Here: 200 samples, 10 steps, bounds 5 points looser.
"""

import pytest
import torch

from rewardsteer import models
from rewardsteer.evaluation import class_metrics

LABELS = torch.arange(10).repeat_interleave(20)


@pytest.fixture(scope="module")
def judge():
    return models.classifier("mnist-judge")


def noise(seed=123):
    return torch.randn((LABELS.numel(), 1, 28, 28), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_flow_ode_samples_are_the_requested_class(judge):
    images = models.flow_sampler(num_steps=10, eta=0.0).sample(noise(), LABELS)
    assert images.shape == (200, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert class_metrics(judge, images, LABELS)["judge_accuracy"] >= 0.85


@torch.no_grad()
def test_flow_stochastic_sampler_is_usable(judge):
    images = models.flow_sampler(num_steps=10, eta=1.0).sample(noise(), LABELS, torch.Generator().manual_seed(0))
    assert class_metrics(judge, images, LABELS)["judge_accuracy"] >= 0.80


@torch.no_grad()
def test_onestep_samples_are_the_requested_class(judge):
    images = models.onestep()(noise(), LABELS)
    assert class_metrics(judge, images, LABELS)["judge_accuracy"] >= 0.75


def test_onestep_is_differentiable_in_z():
    z = noise()[:4].requires_grad_(True)
    models.onestep()(z, 3).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_judge_and_proxies_accuracy():
    from rewardsteer.data import load_mnist

    test = load_mnist().test
    x, y = test.images[:2000], test.labels[:2000]
    with torch.no_grad():
        assert (models.classifier("mnist-judge")(x).argmax(1) == y).float().mean() >= 0.985
        proxy = (models.classifier("mnist-proxy-0")(x).argmax(1) == y).float().mean()
    assert 0.80 <= proxy < 0.995  # noisy labels hurt, but the proxy still reads digits
    assert models.classifier("mnist-judge").features(x[:5]).shape == (5, 128)


def test_reno_raises_the_proxy_score_on_the_bundled_model():
    """Unconditional mnist-onestep steered toward 5 by the proxies: the proxy score rises, and the held-out
    judge agrees that the samples moved toward 5."""
    import rewardsteer as rs

    result = rs.reno(models.onestep(), models.proxy_ensemble(target=5), cond=None, n=4, iters=10, seed=0,
                     progress=False, heldout={"judge": models.classifier_reward("mnist-judge", target=5)})
    assert result.scores.mean() > result.initial_scores.mean() + 1.0
    assert result.heldout_scores["judge"].mean() > result.initial_heldout["judge"].mean()
    assert result.spent["nfe"] == 4 * 11 and result.spent["backward"] == 4 * 10


@torch.no_grad()
def test_unconditional_onestep_draws_every_digit(judge):
    images = models.onestep()(noise(), None)
    counts = judge(images).argmax(1).bincount(minlength=10)
    assert (counts > 0).all()  # all ten digits appear among 200 unconditional samples
