"""The SMC core on its own: resampling is unbiased, ESS is bounded, weights accumulate, log Ẑ folds epochs."""

import math

import pytest
import torch

from rewardsteer.errors import RewardsteerError
from rewardsteer.smc.core import SCHEMES, Weights, check_alpha, check_smc, ess, normalize, resample, take

W = torch.tensor([0.05, 0.4, 0.15, 0.3, 0.1], dtype=torch.float64)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_is_unbiased_over_seeds(scheme):
    # 20 seeds × 500 independent slots: the mean share of copies of particle k must be W_k.
    # Multinomial's standard error per share is sqrt(W(1−W)/(K·10⁴)) < 0.0023; tolerance 0.01 (> 4 s.e.).
    logw = W.log().expand(500, 5)
    counts = torch.zeros(5, dtype=torch.float64)
    for seed in range(20):
        idx = resample(logw, 5, scheme, torch.Generator().manual_seed(seed))
        assert idx.shape == (500, 5) and idx.min() >= 0 and idx.max() <= 4
        counts += torch.nn.functional.one_hot(idx, 5).sum((0, 1)).double()
    share = counts / counts.sum()
    assert (share - W).abs().max() < 0.01


def test_systematic_and_stratified_have_lower_variance_than_multinomial():
    logw = W.log().expand(4000, 5)
    spread = {}
    for scheme in SCHEMES:
        idx = resample(logw, 5, scheme, torch.Generator().manual_seed(0))
        copies = torch.nn.functional.one_hot(idx, 5).sum(1).double()  # (4000, 5)
        spread[scheme] = float(copies.var(0).sum())
    assert spread["systematic"] < spread["multinomial"] and spread["stratified"] < spread["multinomial"]
    # systematic resampling keeps floor(K·W_k) or ceil(K·W_k) copies of every particle
    copies = torch.nn.functional.one_hot(resample(logw, 5, "systematic", torch.Generator().manual_seed(1)), 5).sum(1)
    assert ((copies - 5 * W).abs() < 1 + 1e-9).all()


def test_ess_bounds_and_zero_weights_never_nan():
    k = 8
    assert torch.allclose(ess(torch.zeros(1, k)), torch.tensor([8.0]))
    one_hot = torch.full((1, k), -math.inf)
    one_hot[0, 3] = 0.0
    assert torch.allclose(ess(one_hot), torch.tensor([1.0]))
    dead = torch.full((2, k), -math.inf)
    assert torch.allclose(ess(dead), torch.full((2,), 8.0)) and torch.isfinite(normalize(dead)).all()
    assert torch.allclose(normalize(torch.randn(3, k)).exp().sum(1), torch.ones(3, dtype=torch.float32))


def test_weights_accumulate_where_resampling_is_skipped():
    g = torch.Generator().manual_seed(0)
    w = Weights(4, 6, "cpu")
    incs = [0.1 * torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    for inc in incs:
        w.add(inc, torch.zeros(4, 6, dtype=torch.bool))
        idx, mask = w.maybe_resample(0.5, "systematic", g)
        assert idx is None and not mask.any()  # small increments: ESS stays above K/2
    assert torch.allclose(w.logw, sum(incs))  # the FK reference's issue #12 would leave only incs[-1]
    assert torch.equal(w.log_z, torch.zeros(4, dtype=torch.float64))


def test_log_z_folds_each_epoch_and_dead_particles_stay_zero():
    g = torch.Generator().manual_seed(0)
    w = Weights(1, 4, "cpu")
    first = torch.tensor([[0.0, -5.0, -5.0, -5.0]], dtype=torch.float64)
    dead = torch.tensor([[False, False, False, True]])
    w.add(first, dead)
    assert w.logw[0, 3] == -math.inf and not torch.isnan(w.logw).any()
    expected = float(first[0, :3].logsumexp(0)) - math.log(4)
    idx, mask = w.maybe_resample(0.9, "multinomial", g)
    assert mask.all() and (idx != 3).all() and torch.equal(w.logw, torch.zeros(1, 4, dtype=torch.float64))
    second = torch.tensor([[1.0, 2.0, 3.0, float("nan")]], dtype=torch.float64)
    w.add(second, torch.zeros(1, 4, dtype=torch.bool))  # a NaN increment is a zero weight, not a NaN
    assert w.logw[0, 3] == -math.inf
    w.close()
    expected += float(second[0, :3].logsumexp(0)) - math.log(4)
    assert abs(float(w.log_z[0]) - expected) < 1e-12


def test_take_gathers_per_slot():
    t = torch.arange(2 * 3 * 2).view(2, 3, 2)
    idx = torch.tensor([[2, 2, 0], [1, 0, 0]])
    assert take(t, idx).tolist() == [[[4, 5], [4, 5], [0, 1]], [[8, 9], [6, 7], [6, 7]]]


@pytest.mark.parametrize("bad, match", [(dict(particles=0), "particles"), (dict(ess_threshold=0.0), "ess_threshold"),
                                        (dict(ess_threshold=1.5), r"\(0, 1\]"), (dict(resampling="residual"), "systematic")])
def test_bad_knobs_are_named(bad, match):
    with pytest.raises(RewardsteerError, match=match):
        check_smc(**{"particles": 4, **bad})
    for alpha in (0.0, -1.0, float("inf")):
        with pytest.raises(RewardsteerError, match="^alpha must be a finite number > 0"):
            check_alpha(alpha)


def test_resampling_is_pinned_to_its_generator():
    """Fixed values (a CPU regression), the same draws whatever the global RNG, and low-precision weights whose CDF
    ends below 1 still give valid ancestors (the last index, never K)."""
    logw = W.log().expand(2, 5)
    pinned = {"multinomial": [[4, 3, 2, 4, 3], [3, 1, 1, 2, 1]], "systematic": [[1, 1, 2, 3, 4], [1, 1, 2, 3, 4]],
              "stratified": [[1, 1, 2, 3, 4], [1, 1, 2, 3, 3]]}
    for scheme, expected in pinned.items():
        torch.manual_seed(123)
        a = resample(logw, 5, scheme, torch.Generator().manual_seed(0))
        torch.manual_seed(456)
        assert a.tolist() == expected == resample(logw, 5, scheme, torch.Generator().manual_seed(0)).tolist(), scheme
    low = torch.randn(2000, 7, generator=torch.Generator().manual_seed(0)).half()
    for scheme in SCHEMES:
        idx = resample(low, 7, scheme, torch.Generator().manual_seed(1))
        assert idx.min() >= 0 and idx.max() == 6, scheme


def test_systematic_keeps_exactly_one_copy_where_stratified_may_not():
    """W = (1/6, 1/3, 1/2), K = 3: the middle particle's interval [1/6, 1/2) holds exactly one systematic point
    ((u)/3 and (1 + u)/3: one of them) but zero, one or two stratified ones."""
    logw = torch.tensor([1 / 6, 1 / 3, 1 / 2], dtype=torch.float64).log().expand(1000, 3)
    copies = {s: (resample(logw, 3, s, torch.Generator().manual_seed(0)) == 1).sum(1) for s in SCHEMES}
    assert (copies["systematic"] == 1).all()
    assert (copies["stratified"] != 1).any() and (copies["multinomial"] != 1).any()
    w = Weights(1000, 3, "cpu")
    w.add(logw.clone(), torch.zeros(1000, 3, dtype=torch.bool))
    idx, _ = w.maybe_resample(1.0, "systematic", torch.Generator().manual_seed(0))
    assert ((idx == 1).sum(1) == 1).all()


def test_weights_shapes_thresholds_and_reproducibility():
    w = Weights(3, 4, "cpu")
    assert w.logw.shape == (3, 4) and w.log_z.shape == (3,) and w.log_z.dtype == w.logw.dtype == torch.float64
    assert torch.equal(w.ess(), torch.full((3,), 4.0, dtype=torch.float64))
    assert w.maybe_resample(1.0, "systematic", torch.Generator())[0] is None  # ESS = K is not below 1.0·K
    w.add(torch.tensor([[0.0, -1.0, -2.0, -3.0]] * 3), torch.zeros(3, 4, dtype=torch.bool))
    assert w.logw.dtype == torch.float64
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        again = Weights(3, 4, "cpu")
        again.add(w.logw.clone(), torch.zeros(3, 4, dtype=torch.bool))
        runs.append(again.maybe_resample(1.0, "multinomial", torch.Generator().manual_seed(7))[0])
    assert torch.equal(runs[0], runs[1])


def test_knob_edges_are_accepted():
    check_smc(1, 1.0, "multinomial")  # one particle, always resampling
    check_smc(3)  # the defaults: threshold 0.5, systematic
    check_smc(2, 1e-6, "stratified")
    for alpha in (0.5, 1, 1e-3):
        check_alpha(alpha)
    with pytest.raises(RewardsteerError, match="particles"):
        check_smc(2.0)


def test_check_alpha_names_the_temperature():
    with pytest.raises(RewardsteerError, match=r"^alpha must be a finite number > 0 \(the target is p\(x\)·exp\(r\(x\)/alpha\)"):
        check_alpha(-1.0)
