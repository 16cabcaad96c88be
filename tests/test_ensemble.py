"""Reward ensembles: each aggregate against its formula, chains, calibration, the vectorized path, all methods."""

import math

import pytest
import torch

import rewardsteer as rs
from rewardsteer.bundled.nets import Classifier
from rewardsteer.core import FunctionReward, OneStepGenerator
from rewardsteer.errors import RewardsteerError
from rewardsteer.rewards import aggregates as agg
from rewardsteer.rewards.base import ClassifierReward, Ensemble, WeightedSum

R = torch.tensor([[1.0, -2.0, 0.5, 3.0],  # (k=3 members, B=4 samples)
                  [2.0, 0.0, 0.5, -1.0],
                  [6.0, -1.0, 0.5, 1.0]])
SCORES = {"a": R[0], "b": R[1], "c": R[2]}


def by_hand(fn):
    """Apply fn to each sample's list of member scores, in plain Python."""
    return torch.tensor([fn([float(v) for v in R[:, j]]) for j in range(R.shape[1])])


def pmean(v):
    return sum(v) / len(v)


def pvar(v):
    m = pmean(v)
    return sum((x - m) ** 2 for x in v) / len(v)


@pytest.mark.parametrize("transform, formula", [
    (agg.mean(), pmean),
    (agg.total(), sum),
    (agg.wco(), min),
    (agg.uwo(0.5), lambda v: pmean(v) - 0.5 * pvar(v)),
    (agg.uwo(0.1), lambda v: pmean(v) - 0.1 * pvar(v)),
    (agg.mean_minus_std(), lambda v: pmean(v) - math.sqrt(pvar(v))),
    (agg.quantile(0.5), lambda v: sorted(v)[1]),
    (agg.quantile(0.0), min),
    (agg.quantile(0.25), lambda v: sorted(v)[0] + 0.5 * (sorted(v)[1] - sorted(v)[0])),
    (agg.cvar(0.5), lambda v: pmean(sorted(v)[:2])),
    (agg.cvar(1.0), pmean),
    (agg.only("b"), lambda v: v[1]),
])
def test_aggregate_matches_its_formula(transform, formula):
    assert transform.aggregate
    torch.testing.assert_close(agg.reduce(transform, SCORES), by_hand(formula))


def test_uwo_worked_example():
    # members 1, 2, 6: mean 3, population variance (4 + 1 + 9)/3 = 14/3
    out = agg.reduce(agg.uwo(0.5), {"a": torch.tensor([1.0]), "b": torch.tensor([2.0]), "c": torch.tensor([6.0])})
    assert out.item() == pytest.approx(3 - 0.5 * 14 / 3)


def test_chain_equals_the_manual_sequence():
    stats = {"a": (1.0, 2.0), "b": (-1.0, 0.5), "c": (0.0, 4.0)}
    ref = {"a": 0.5, "b": -0.2, "c": 0.0}
    chained = agg.reduce(agg.chain(agg.standardize(stats), agg.log_sigmoid(ref), agg.uwo(0.3)), SCORES)
    z = {k: (v - stats[k][0]) / stats[k][1] for k, v in SCORES.items()}
    u = torch.stack([torch.nn.functional.logsigmoid(z[k] - ref[k]) for k in "abc"])
    torch.testing.assert_close(chained, u.mean(0) - 0.3 * u.var(0, correction=0))
    weighted = agg.reduce(agg.chain(agg.weighted({"a": 2.0, "b": -1.0, "c": 0.5}), agg.total()), SCORES)
    torch.testing.assert_close(weighted, 2 * R[0] - R[1] + 0.5 * R[2])


def test_bad_chains_and_specs_fail_clearly():
    with pytest.raises(RewardsteerError, match="must come last"):
        agg.chain(agg.mean(), agg.standardize({"a": (0, 1)}))
    with pytest.raises(RewardsteerError, match="end the chain with an aggregate"):
        agg.reduce(agg.log_sigmoid(), SCORES)
    with pytest.raises(RewardsteerError, match="no parameter for member 'c'"):
        agg.weighted({"a": 1.0, "b": 1.0})(SCORES)
    with pytest.raises(RewardsteerError, match="unknown aggregate"):
        agg.aggregate_from_spec("median")
    assert agg.aggregate_from_spec("uwo:0.1").name == "uwo" and agg.aggregate_from_spec("cvar:0.4").name == "cvar0.4"
    with pytest.raises(RewardsteerError, match="distinct names"):
        Ensemble([FunctionReward(lambda x, c: x.mean((1, 2, 3)), "same")] * 2)


class Pixels(OneStepGenerator):
    """G(z) = sigmoid(z) on 28x28 noise: images with no network, so method runs cost almost nothing."""

    def __init__(self):
        super().__init__()
        self.noise_shape = (1, 28, 28)
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, z, cond=None):
        return torch.sigmoid(z + self.anchor)


def shifted(name, shift, scale):
    return FunctionReward(lambda x, c: scale * x.flatten(1).mean(1) + shift, name)


def test_standardized_members_have_mean_0_sd_1_on_the_calibration_set():
    ens = Ensemble([shifted("a", 3.0, 10.0), shifted("b", -1.0, 0.5)])
    cal = ens.calibrated(Pixels(), n=64, cond=2, seed=7)
    x = agg.unsteered_samples(Pixels(), 64, 2, seed=7)  # the same calibration samples
    z = cal.transform.fn(cal.member_scores(x, 2))  # member-wise part + mean aggregate
    members = agg.standardize(cal.calibration)(cal.member_scores(x, 2))
    for v in members.values():
        assert abs(float(v.mean())) < 1e-4 and float(v.std(correction=0)) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(z["mean"], torch.stack(list(members.values())).mean(0))
    raw = ens.member_scores(x, 2)  # raw mode untouched
    assert float(raw["a"].mean()) > 3.0


def classifiers(k=5, width=8, seed=0):
    nets = []
    for i in range(k):
        torch.manual_seed(seed + i)
        net = Classifier(width=width, feature_dim=16)
        for m in net.modules():  # non-trivial BatchNorm statistics, so folding them is really tested
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
        nets.append(net.eval().requires_grad_(False))
    return [ClassifierReward(n, f"clf-{i}") for i, n in enumerate(nets)]


def test_vectorized_members_equal_the_loop_with_gradients():
    members = classifiers()
    fast, slow = Ensemble(members, agg.uwo(0.1), vectorize=True), Ensemble(members, agg.uwo(0.1), vectorize=False)
    x = torch.rand(11, 1, 28, 28, requires_grad=True)  # 11 > the stack's chunk of 8: two chunks
    cond = torch.arange(11) % 10
    (a, ma), (b, mb) = fast.evaluate(x, cond), slow.evaluate(x, cond)
    names, stack = fast._stacks[0]
    assert len(names) == 5 and stack.wide is not None  # one wide network of 5 (11 samples: in chunks)
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], atol=1e-5, rtol=1e-5)
    ga, = torch.autograd.grad(a.sum(), x)
    gb, = torch.autograd.grad(b.sum(), x)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, 3), slow(x, 3), atol=1e-5, rtol=1e-5)


def _mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.GELU(), torch.nn.Linear(32, 3))


def _strided_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, stride=2, bias=False), torch.nn.SiLU(), torch.nn.Conv2d(4, 6, 3, padding=2, dilation=2),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(6 * 6 * 6, 2))


class Residual(torch.nn.Module):
    """conv → conv with a skip connection: arithmetic between two stacked activations."""

    def __init__(self, skip_from_input: bool = False):
        super().__init__()
        self.skip_from_input = skip_from_input  # x + conv(x): stacked + shared, a layout the wide net refuses
        self.a, self.b = torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 3, padding=1)
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 2))

    def forward(self, x):
        h = self.a(x)
        return self.head((x if self.skip_from_input else h) + self.b(h))


@pytest.mark.parametrize("make", [_mlp, _strided_cnn, Residual], ids=["mlp", "strided_cnn", "residual"])
def test_wide_network_matches_each_member_with_gradients(make):
    from rewardsteer.rewards.stacked import StackedNets

    torch.manual_seed(0)
    nets = [make().eval().requires_grad_(False) for _ in range(3)]
    stack = StackedNets(nets)
    assert stack.wide is not None
    x = torch.rand(10, 1, 28, 28, requires_grad=True)
    x0 = x.detach().clone()
    out, ref = stack(x), torch.stack([n(x) for n in nets])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g_out, = torch.autograd.grad(out.square().sum(), x)
    g_ref, = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_out, g_ref, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(stack(x), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(x.detach(), x0)  # in-place activations never touch the caller's input
    assert stack.wide is not None  # the wide network ran every call (no fallback to vmap)


def test_a_layout_the_wide_network_cannot_follow_falls_back_to_vmap_on_first_call():
    from rewardsteer.rewards.stacked import StackedNets

    torch.manual_seed(0)
    nets = [Residual(skip_from_input=True).eval().requires_grad_(False) for _ in range(3)]
    stack = StackedNets(nets)
    assert stack.wide is not None  # traceable, every layer known: only running it finds the mixed layouts
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(stack(x), torch.stack([n(x) for n in nets]), atol=1e-5, rtol=1e-5)
    assert stack.wide is None


class Normed(torch.nn.Module):
    """A net with layers the wide-network tracer does not handle (LayerNorm, torch.tanh): must use vmap."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lin, self.norm = torch.nn.Linear(784, 10), torch.nn.LayerNorm(10)

    def forward(self, x):
        return torch.tanh(self.norm(self.lin(x.flatten(1))))


def test_untraceable_members_fall_back_to_vmap():
    from rewardsteer.rewards.stacked import StackedNets

    nets = [Normed(i).eval() for i in range(3)]
    stack = StackedNets(nets)
    x = torch.rand(4, 1, 28, 28)
    assert stack.wide is None
    torch.testing.assert_close(stack(x), torch.stack([n(x) for n in nets]), atol=1e-5, rtol=1e-5)


def test_weighted_sum_and_proxy_style_ensemble_keep_their_api(brightness):
    dark = FunctionReward(lambda x, c: -x.flatten(1).mean(1), "dark")
    ws = WeightedSum({"bright": (brightness, 2.0), "dark": (dark, 0.5)})
    x = torch.rand(3, 1, 28, 28)
    obj, members = ws.evaluate(x)
    torch.testing.assert_close(obj, 1.5 * x.flatten(1).mean(1))
    assert set(members) == {"bright", "dark"} and ws.weights == {"bright": 2.0, "dark": 0.5}
    ens = Ensemble(classifiers(3))
    torch.testing.assert_close(ens(x, 4), torch.stack([r(x, 4) for r in ens.members.values()]).mean(0))
    assert isinstance(ens.with_transform(agg.wco()), Ensemble) and ens.transform.name == "mean"


@pytest.mark.parametrize("transform", [agg.wco(), agg.uwo(0.5)], ids=["wco", "uwo"])
@pytest.mark.parametrize("method", ["best_of_n", "random_search", "zero_order_search", "reno"])
def test_every_method_runs_with_a_conservative_ensemble(method, transform):
    ens = Ensemble(classifiers(3), transform)
    knobs = {"best_of_n": dict(n=2, candidates=8), "random_search": dict(iters=2, candidates=4),
             "zero_order_search": dict(n=2, iters=2, neighbours=2), "reno": dict(n=2, iters=2)}[method]
    result = rs.METHODS[method](Pixels(), ens, cond=3, progress=False, **knobs)
    assert set(result.member_scores) == {"clf-0", "clf-1", "clf-2"}
    recomputed = agg.reduce(transform, result.member_scores)
    torch.testing.assert_close(recomputed, result.scores, atol=1e-5, rtol=1e-5)
    assert set(result.trace[-1]["members"]) == set(result.member_scores)


def test_cli_ensemble_options(brightness):
    from rewardsteer.runs.images import ensemble_options as _ensemble_options

    with pytest.raises(RewardsteerError, match="need an ensemble reward"):
        _ensemble_options(brightness, {}, Pixels(), 7, "wco", False)
    ens, held = _ensemble_options(Ensemble(classifiers(2)), {"b": brightness}, Pixels(), 7, "uwo:0.1", True)
    assert ens.transform.name == "standardize > uwo" and set(held) == {"b", "realism", "diversity"}


def test_transform_defaults_and_names():
    """log_sigmoid's reference 0, mean_minus_std's c = 1, and the names a chain reports. (The parametrized formula
    test builds its transforms at collection, outside any test, so mutation testing needs these calls here.)"""
    torch.testing.assert_close(agg.log_sigmoid().fn(SCORES)["a"], torch.nn.functional.logsigmoid(R[0]))
    torch.testing.assert_close(agg.reduce(agg.mean_minus_std(), SCORES), R.mean(0) - R.std(0, correction=0))
    assert (agg.log_sigmoid().name, agg.weighted({"a": 1.0, "b": 2.0, "c": 1.0}).name) == ("log_sigmoid", "weighted")
