"""What reward objects promise beyond their formulas: names, defaults, the condition passed through, the network's
dtype, one vectorized call for an ensemble, and a clear error for a wrong image size."""

import warnings

import pytest
import torch

from rewardsteer.bundled.nets import Classifier
from rewardsteer.core import FunctionReward, OneStepGenerator
from rewardsteer.errors import RewardsteerError
from rewardsteer.rewards import aggregates as agg
from rewardsteer.rewards.base import ClassifierReward, Ensemble, WeightedSum, as_reward


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Classifier(width=4, feature_dim=8).eval().requires_grad_(False)


def test_as_reward_names_callables_and_keeps_the_flag():
    def bright(x, c):
        return x.flatten(1).mean(1)

    class Scorer:  # a callable object has no __name__
        def __call__(self, x, c):
            return x.flatten(1).sum(1)

    r = as_reward(bright)
    assert isinstance(r, FunctionReward) and r.name == "bright" and r.differentiable is True
    assert as_reward(bright, "b").name == "b" and as_reward(r) is r
    anon = as_reward(Scorer(), differentiable=False)
    assert anon.name == "reward" and anon.differentiable is False
    with pytest.raises(RewardsteerError, match="cannot use int as a reward"):
        as_reward(3)


def test_classifier_reward_alone_is_log_softmax_at_the_target(net):
    x = torch.rand(5, 1, 28, 28)
    labels = torch.tensor([0, 3, 9, 3, 1], dtype=torch.int32)  # an int32 condition works as the class index
    want = torch.log_softmax(net(x), 1)[torch.arange(5), labels.long()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. softmax's implicit-dimension warning
        got = ClassifierReward(net, "clf")(x, labels)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ClassifierReward(net, "clf", target=3)(x, labels), torch.log_softmax(net(x), 1)[:, 3])
    # a float64 network scores float32 samples in its own dtype
    net64 = Classifier(width=4, feature_dim=8).eval().requires_grad_(False)
    net64.load_state_dict(net.state_dict())
    net64 = net64.double()
    torch.testing.assert_close(ClassifierReward(net64, "clf64")(x, labels), want.double(), atol=1e-5, rtol=1e-5,
                               check_dtype=False)


def test_classifier_reward_names_a_wrong_image_size_and_accepts_nets_without_one(net):
    with pytest.raises(RewardsteerError) as info:
        ClassifierReward(net, "clf", target=1)(torch.rand(2, 1, 32, 30))
    assert str(info.value).startswith("'clf' was trained on 1x28x28 images; these samples are 1x32x30")
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))  # no input_shape attribute
    x = torch.rand(3, 1, 3, 4)
    torch.testing.assert_close(ClassifierReward(plain, "plain", target=2)(x), torch.log_softmax(plain(x), 1)[:, 2])


def test_an_ensemble_of_one_architecture_runs_one_vectorized_call_by_default(net):
    calls = []
    members = []
    for i in range(3):
        m = Classifier(width=4, feature_dim=8).eval().requires_grad_(False)
        m.register_forward_hook(lambda *_: calls.append(1))
        members.append(ClassifierReward(m, f"c{i}", target=1))
    x = torch.rand(4, 1, 28, 28)
    fast = Ensemble(members)
    assert fast.name == "ensemble"
    a = fast(x)
    assert calls == []  # the members' own networks never ran: one stacked network did
    b = Ensemble(members, vectorize=False)(x)
    assert len(calls) == 3
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class Shifted(OneStepGenerator):
    """G(z, c) = z + c: the calibration samples depend on the condition."""

    def __init__(self):
        super().__init__()
        self.noise_shape = (4,)
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, z, cond=None):
        return z + self.anchor + torch.as_tensor(cond, dtype=z.dtype)


def test_calibration_and_new_chains_keep_the_name_and_pass_the_condition():
    seen = []

    def times_cond(x, c):
        seen.append(c)
        return x.mean(1) * torch.as_tensor(c, dtype=x.dtype)

    ens = Ensemble({"a": FunctionReward(times_cond, "a"), "b": FunctionReward(lambda x, c: x.sum(1), "b")},
                   name="pair")
    cal = ens.calibrated(Shifted(), n=32, cond=2.0, seed=3)
    assert cal.name == "pair" and set(seen) == {2.0}
    x = agg.unsteered_samples(Shifted(), 32, 2.0, seed=3)
    for key, fn in (("a", lambda: x.mean(1) * 2.0), ("b", lambda: x.sum(1))):
        v = fn()
        assert cal.calibration[key] == pytest.approx((float(v.mean()), float(v.std(correction=0))), rel=1e-5)
    default = ens.calibrated(Shifted(), cond=2.0)  # the documented defaults: 256 samples, seed 12345
    v = agg.unsteered_samples(Shifted(), 256, 2.0, seed=12345).sum(1)
    assert default.calibration["b"] == pytest.approx((float(v.mean()), float(v.std(correction=0))), rel=1e-5)
    wco = ens.with_transform(agg.wco())
    assert wco.name == "pair" and ens.with_transform(agg.wco(), name="worst").name == "worst"
    y = torch.randn(6, 4)
    torch.testing.assert_close(wco(y, 1.0), torch.minimum(y.mean(1), y.sum(1)))


def test_weighted_sum_is_named():
    members = {"a": (FunctionReward(lambda x, c: x.sum(1), "a"), 2.0)}
    assert WeightedSum(members).name == "weighted_sum" and WeightedSum(members, name="mix").name == "mix"
    torch.testing.assert_close(WeightedSum(members)(torch.ones(2, 3)), torch.full((2,), 6.0))
