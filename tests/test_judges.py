"""The independent judges (ViT, RFF kernel machine), the MLP proxies, the realism monitor and AUROC.

Bar: >= 97.5% on the 10k test set; the cards hold the full numbers (ViT 98.93%, RFF 98.60%, MLP proxies
96.6-96.7%). Re-checked here on the first 2,000 test images, harder than the rest (ViT 98.75%, RFF 97.90%).
"""

import json

import pytest
import torch

from rewardsteer import models
from rewardsteer.bundled import hub
from rewardsteer.bundled.data import load_mnist
from rewardsteer.bundled.evaluation import auroc
from rewardsteer.rewards.base import Ensemble
from rewardsteer.train import judges as train_judges
from rewardsteer.train.classifiers import noisy_subset

NEW_CLASSIFIERS = ("mnist-judge-vit", "mnist-judge-rff", "mnist-proxy-mlp-0", "mnist-proxy-mlp-1", "mnist-proxy-mlp-2")


@pytest.fixture(scope="module")
def test_slice():
    test = load_mnist().test
    return test.images[:2000], test.labels[:2000]


def test_judges_never_see_the_proxies_images():
    idx, _, _ = noisy_subset(torch.arange(60_000), torch.zeros(60_000, dtype=torch.long))  # images := indices
    train, val = train_judges.judge_split(60_000)
    assert len(train) == 45_000 and len(val) == 5_000
    together = torch.cat([idx, train, val])
    assert together.unique().numel() == 60_000  # disjoint, and together all of MNIST train


def test_quick_training_writes_loadable_cards(tmp_path):
    torch.set_num_threads(1)
    train_judges.main(["--quick", "--out", str(tmp_path), "--threads", "1"])
    for name in ("mnist-judge-vit", "mnist-judge-rff", "mnist-proxy-mlp-0", "mnist-realism"):
        card = json.loads((tmp_path / f"{name}.json").read_text())
        assert card["name"] == name and "seed" in card["training"]
        assert "python -m rewardsteer.train.judges" in card["command"]
        assert hub.load_network(name, tmp_path) is not None
    vit = json.loads((tmp_path / "mnist-judge-vit.json").read_text())
    assert vit["role"] == "independent held-out judge (other family, other data)"
    assert "minus the proxies'" in vit["data"]["subset"]
    assert {"test_accuracy", "test_confident_0.9", "wall_seconds"} <= set(vit["metrics"])


@pytest.mark.parametrize("name", NEW_CLASSIFIERS)
def test_new_classifiers_load_and_give_log_probabilities(name):
    net = hub.load_network(name)
    x = torch.rand(4, 1, 28, 28)
    assert net(x).shape == (4, 10) and net.features(x).shape[0] == 4
    assert net.input_shape == (1, 28, 28)
    logp = torch.stack([models.classifier_reward(name, target=c)(x) for c in range(10)])  # (10, B)
    assert torch.allclose(logp.exp().sum(0), torch.ones(4), atol=1e-5)
    assert models.reward_from_spec(name, target=3)(x).shape == (4,)


@pytest.mark.parametrize("name", ["mnist-judge-vit", "mnist-judge-rff"])
def test_judges_are_differentiable(name):
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    models.classifier_reward(name, target=3)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@torch.no_grad()
def test_bundled_judges_meet_the_accuracy_bar(test_slice):
    x, y = test_slice
    for name in ("mnist-judge-vit", "mnist-judge-rff"):
        assert (models.classifier(name)(x).argmax(1) == y).float().mean() >= 0.975, name
    for k in range(3):  # noisy labels: below the judges, but they read digits
        assert (models.classifier(f"mnist-proxy-mlp-{k}")(x).argmax(1) == y).float().mean() >= 0.90


def test_realism_ranks_real_digits_above_noise(test_slice):
    realism = models.realism_monitor()
    assert realism.name == "realism" and not realism.differentiable
    real = realism(test_slice[0][:500])
    assert -1.3 < float(real.median()) < -0.8  # normalized so a typical real digit scores about -1
    noise = realism(torch.rand((500, 1, 28, 28), generator=torch.Generator().manual_seed(0)))
    assert auroc(real, noise) > 0.99


def test_the_real_data_band_holds_real_digits_of_the_target_class_and_not_noise(test_slice):
    """`realism_monitor(target)`'s band: its lower edge is the 1st percentile of real test digits of that class (the
    card's real_band), so nearly every real digit of the class is in it; uniform noise never is. Held out, the band
    reaches the trace as `realism/in_band`."""
    from rewardsteer.budget import Meter
    from rewardsteer.plumbing import score_heldout

    x, y = test_slice
    for target in (1, 7, None):
        monitor = models.realism_monitor(target)
        real = x if target is None else x[y == target]
        _, band = monitor.score_and_band(real)
        assert band.float().mean() >= 0.95, target
        _, noise = monitor.score_and_band(torch.rand((64, 1, 28, 28), generator=torch.Generator().manual_seed(0)))
        assert not noise.any()
    held = score_heldout({"realism": models.realism_monitor(7)}, x[:8], None, Meter())
    assert set(held) == {"realism", "realism/in_band"}


def test_mixed_ensemble_equals_the_loop(test_slice):
    """Real digits as input: on uniform noise, folding BatchNorm alone (no stacking) already moves the CNN's
    input gradients by a few % (rounding flips ReLU / max-pool choices that noise puts right at a kink)."""
    ens = models.mixed_proxy_ensemble(target=3)
    assert set(ens.members) == {*(f"mnist-proxy-{k}" for k in range(3)), *(f"mnist-proxy-mlp-{k}" for k in range(3))}
    assert models.reward_from_spec("proxies-mixed", target=3).members.keys() == ens.members.keys()
    loop = Ensemble(ens.members, name="loop", vectorize=False)
    x = test_slice[0][:10]  # 10 > the stack's chunk of 8 with gradients: two chunks
    grads, scores = [], []
    for reward in (ens, loop):
        xi = x.clone().requires_grad_(True)
        total, members = reward.evaluate(xi, None)
        total.sum().backward()
        scores.append((total.detach(), {k: v.detach() for k, v in members.items()}))
        grads.append(xi.grad)
    assert len(ens._stacks) == 2  # one stack per family
    assert torch.allclose(scores[0][0], scores[1][0], atol=1e-4)
    assert all(torch.allclose(scores[0][1][k], scores[1][1][k], atol=1e-4) for k in ens.members)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-3)


def test_auroc_is_mann_whitney():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(300, generator=g).round(decimals=1), torch.randn(200, generator=g).round(decimals=1) - 0.5
    brute = (pos[:, None] > neg[None]).double().mean() + 0.5 * (pos[:, None] == neg[None]).double().mean()
    assert auroc(pos, neg) == pytest.approx(float(brute), abs=1e-12)
    assert auroc([2.0, 3.0], [1.0]) == 1.0 and auroc([1.0], [1.0]) == 0.5
    with pytest.raises(ValueError):
        auroc([], [1.0])
