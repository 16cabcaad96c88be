"""Property tests (hypothesis): aggregates' orderings and invariances, resampling counts and unbiasedness, budgets
never exceeded and never wasted, Result save/load round trips. Small tensors and modest example counts: the whole
file runs in seconds."""

import math
import types

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewardsteer as rs
from rewardsteer.budget import Budget, Meter
from rewardsteer.bundled.toy import GaussianMixtureFlow, linear_reward
from rewardsteer.core import FunctionReward
from rewardsteer.result import Result
from rewardsteer.rewards import aggregates as agg
from rewardsteer.smc.core import SCHEMES, resample
from tests.conftest import Costly, Identity

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
RUNS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def member_scores(draw, min_k=1, max_k=6):
    """{name: (B,)} for k members and B samples, float64 so the orderings below hold exactly."""
    k, b = draw(st.integers(min_k, max_k)), draw(st.integers(1, 5))
    values = draw(st.lists(st.lists(finite, min_size=b, max_size=b), min_size=k, max_size=k))
    return {f"m{i}": torch.tensor(v, dtype=torch.float64) for i, v in enumerate(values)}


def reduce(transform, scores):
    return agg.reduce(transform, scores)


# ---- aggregates ---------------------------------------------------------------------------------------

@FAST
@given(member_scores(), st.floats(0, 5), st.floats(0.01, 1))
def test_aggregate_orderings(scores, lam, alpha):
    """min ≤ WCO-like aggregates ≤ mean ≤ max, with equality for WCO = min and every conservative aggregate ≤ mean."""
    r = torch.stack(list(scores.values()))
    lo, hi, mean = r.min(0).values, r.max(0).values, r.mean(0)
    eps = 1e-9 * (1 + r.abs().max())
    assert torch.equal(reduce(agg.wco(), scores), lo)
    torch.testing.assert_close(reduce(agg.mean(), scores), mean)
    assert (lo <= mean + eps).all() and (mean <= hi + eps).all()
    for conservative in (agg.uwo(lam), agg.mean_minus_std(lam), agg.cvar(alpha)):
        assert (reduce(conservative, scores) <= mean + eps).all(), conservative.name
    assert (reduce(agg.cvar(alpha), scores) >= lo - eps).all()
    assert (reduce(agg.quantile(alpha), scores) >= lo - eps).all()
    assert (reduce(agg.quantile(alpha), scores) <= hi + eps).all()


@FAST
@given(member_scores(), st.floats(0, 5))
def test_uwo_and_mean_std_equal_mean_when_members_agree(scores, lam):
    one = next(iter(scores.values()))
    agree = {k: one.clone() for k in scores}
    for t in (agg.uwo(lam), agg.mean_minus_std(lam), agg.wco(), agg.cvar(0.3), agg.quantile(0.7)):
        torch.testing.assert_close(reduce(t, agree), one)


@FAST
@given(member_scores(min_k=2), st.randoms(use_true_random=False), st.floats(0, 5), st.floats(0.01, 1))
def test_aggregates_are_invariant_under_member_permutation(scores, rnd, lam, alpha):
    names = list(scores)
    rnd.shuffle(names)
    shuffled = {k: scores[k] for k in names}
    for t in (agg.mean(), agg.total(), agg.wco(), agg.uwo(lam), agg.mean_minus_std(lam), agg.cvar(alpha),
              agg.quantile(alpha)):
        torch.testing.assert_close(reduce(t, shuffled), reduce(t, scores), atol=1e-9, rtol=1e-9)


@FAST
@given(member_scores(min_k=2), st.floats(0, 2), st.floats(0, 2))
def test_uwo_decreases_with_lambda_and_cvar_grows_with_alpha(scores, a, b):
    lo, hi = sorted((a, b))
    r = torch.stack(list(scores.values()))
    eps = 1e-9 * (1 + r.abs().max()) ** 2
    assert (reduce(agg.uwo(hi), scores) <= reduce(agg.uwo(lo), scores) + eps).all()
    assert (reduce(agg.cvar(max(lo, 0.01) / 2), scores) <= reduce(agg.cvar(max(hi, 0.02) / 2), scores) + eps).all()


def test_aggregates_by_hand_names_specs_and_bounds():
    """Built inside the test (the parametrized formula tests build theirs at collection time): exact values on five
    members, the output names the results show, spec parsing, and the bounds on each knob."""
    s = {k: torch.tensor(v) for k, v in {"a": [1.0, 5.0, 0.0], "b": [2.0, 0.0, 0.0], "c": [6.0, 1.0, 0.0],
                                         "d": [-1.0, 2.0, 0.0], "e": [3.0, 4.0, 0.0]}.items()}
    expected = {"mean": agg.mean(), "total": agg.total(), "wco": agg.wco(), "uwo": agg.uwo(0.1),
                "mean_std": agg.mean_minus_std(2.0), "q0.25": agg.quantile(0.25), "cvar0.4": agg.cvar(0.4),
                "only:c": agg.only("c")}
    values = {k: agg.reduce(t, s) for k, t in expected.items()}
    assert [list(t(s)) for t in expected.values()] == [[k] for k in list(expected)[:-1]] + [["c"]]  # output names
    assert [t.name for t in expected.values()] == list(expected)
    r = torch.stack(list(s.values()))
    torch.testing.assert_close(values["mean"], torch.tensor([2.2, 2.4, 0.0]))
    torch.testing.assert_close(values["total"], torch.tensor([11.0, 12.0, 0.0]))
    torch.testing.assert_close(values["wco"], torch.tensor([-1.0, 0.0, 0.0]))
    torch.testing.assert_close(values["uwo"], r.mean(0) - 0.1 * r.var(0, correction=0))
    torch.testing.assert_close(values["mean_std"], r.mean(0) - 2.0 * r.std(0, correction=0))
    torch.testing.assert_close(values["q0.25"], torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(values["cvar0.4"], torch.tensor([0.0, 0.5, 0.0]))  # mean of the ⌈0.4·5⌉ = 2 lowest
    torch.testing.assert_close(values["only:c"], s["c"])
    assert all(t.aggregate for t in expected.values())
    for t in (agg.standardize({k: (0.0, 2.0) for k in s}), agg.log_sigmoid(), agg.weighted(dict.fromkeys(s, 2.0))):
        assert not t.aggregate and set(t(s)) == set(s)
    assert [agg.standardize({"a": (0, 1)}).name, agg.log_sigmoid().name, agg.weighted({}).name] == \
        ["standardize", "log_sigmoid", "weighted"]
    chained = agg.chain(agg.weighted(dict.fromkeys(s, 2.0)), agg.log_sigmoid(1.0), agg.wco())
    assert chained.name == "weighted > log_sigmoid > wco" and chained.aggregate
    torch.testing.assert_close(agg.reduce(chained, s), torch.nn.functional.logsigmoid(2 * r - 1.0).min(0).values)
    assert not agg.chain(agg.log_sigmoid()).aggregate
    with pytest.raises(rs.RewardsteerError, match="no member 'z'"):
        agg.only("z")(s)
    for spec, name in (("wco", "wco"), ("uwo", "uwo"), ("mean_std:0.5", "mean_std"), ("quantile:0.5", "q0.5"),
                       ("cvar:1", "cvar1")):
        assert agg.aggregate_from_spec(spec).name == name
    torch.testing.assert_close(agg.reduce(agg.aggregate_from_spec("uwo"), s), r.mean(0) - 0.5 * r.var(0, correction=0))
    with pytest.raises(rs.RewardsteerError, match="expected uwo:<number>"):
        agg.aggregate_from_spec("uwo:0.1:2")
    for bad in (lambda: agg.cvar(0.0), lambda: agg.cvar(1.01), lambda: agg.quantile(-0.01), lambda: agg.quantile(1.01),
                lambda: agg.uwo(-0.1), lambda: agg.standardize({"a": (0.0, 0.0)})):
        with pytest.raises(rs.RewardsteerError):
            bad()
    torch.testing.assert_close(agg.reduce(agg.mean_minus_std(), s), r.mean(0) - r.std(0, correction=0))  # c = 1
    torch.testing.assert_close(agg.log_sigmoid()(s)["a"], torch.nn.functional.logsigmoid(s["a"]))  # reference 0
    torch.testing.assert_close(agg.reduce(agg.quantile(1.0), s), r.max(0).values)
    torch.testing.assert_close(agg.reduce(agg.quantile(0.0), s), r.min(0).values)
    torch.testing.assert_close(agg.reduce(agg.cvar(1.0), s), r.mean(0))


# ---- resampling ---------------------------------------------------------------------------------------

@FAST
@given(st.lists(st.floats(-8, 8), min_size=1, max_size=7), st.sampled_from(SCHEMES), st.integers(1, 9),
       st.integers(0, 2**31))
def test_resampling_draws_num_valid_ancestors(logw, scheme, num, seed):
    lw = torch.tensor([logw, logw[::-1]], dtype=torch.float64)
    idx = resample(lw, num, scheme, torch.Generator().manual_seed(seed))
    k = lw.shape[1]
    assert idx.shape == (2, num) and idx.dtype == torch.long
    assert (idx >= 0).all() and (idx < k).all()
    counts = torch.nn.functional.one_hot(idx, k).sum(1)
    assert (counts.sum(1) == num).all()  # copies sum to the number drawn
    if scheme == "systematic":  # floor(num·W) or ceil(num·W) copies of every particle
        w = torch.softmax(lw, 1)
        assert ((counts - num * w).abs() < 1 + 1e-9).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resampling_is_unbiased_for_random_weights(scheme):
    """E[copies of k] = K·W_k. 4000 slots of one random weight vector; the mean copies per particle has
    standard error ≤ sqrt(K·W(1−W)/4000) ≤ 0.025 for K = 6, so a 0.1 tolerance is a 4-s.e. test; an
    off-by-one stratum (points j/K without the uniform) or an unnormalized CDF fails it by far more."""
    g = torch.Generator().manual_seed(11)
    for _ in range(3):
        w = torch.distributions.Dirichlet(torch.ones(6)).sample().double()
        logw = (w.log() + 3.0).expand(4000, 6)  # unnormalized on purpose
        idx = resample(logw, 6, scheme, g)
        mean_copies = torch.nn.functional.one_hot(idx, 6).sum(1).double().mean(0)
        assert (mean_copies - 6 * w).abs().max() < 0.1, (scheme, mean_copies, 6 * w)


# ---- budgets ------------------------------------------------------------------------------------------

@FAST
@given(st.lists(st.one_of(st.none(), st.integers(1, 50)), min_size=3, max_size=3),
       st.lists(st.integers(0, 60), min_size=3, max_size=3), st.lists(st.integers(0, 7), min_size=3, max_size=3),
       st.integers(0, 40))
def test_meter_stop_reason_and_units_that_fit(bounds, spent, cost, wanted):
    names = ("nfe", "backward", "reward_calls")
    budget = Budget(**dict(zip(names, bounds)))
    meter = Meter(budget)
    meter.charge(**dict(zip(names, spent)))
    fits = all(b is None or s + c <= b for b, s, c in zip(bounds, spent, cost))
    reason = meter.stop_reason(**dict(zip(names, cost)))
    assert (reason is None) == fits
    if reason is not None:  # the first bound that would be exceeded is named
        first = next(n for n, b, s, c in zip(names, bounds, spent, cost) if b is not None and s + c > b)
        assert reason == f"budget:{first}"
    m = meter.units_that_fit(wanted, **dict(zip(names, cost)))
    already_over = any(b is not None and s > b for b, s in zip(bounds, spent))
    if already_over:
        assert m == 0
    else:  # the largest count of units whose total cost still fits, at most `wanted`
        assert 0 <= m <= wanted
        assert all(b is None or s + m * c <= b for b, s, c in zip(bounds, spent, cost))
        assert m == wanted or any(b is not None and s + (m + 1) * c > b for b, s, c in zip(bounds, spent, cost))
    assert meter.spent()["nfe"] == spent[0] and meter.spent()["backward"] == spent[1]
    assert meter.spent()["reward_calls"] == spent[2]


def test_meter_edges_defaults_and_spent(monkeypatch):
    from rewardsteer import budget as budget_module

    meter = Meter(Budget(nfe=3, backward=2, reward_calls=4))
    meter.charge(nfe=3, backward=2, reward_calls=4)  # spent exactly the budget: nothing more fits, nothing is over
    assert meter.stop_reason() is None and meter.units_that_fit(5) == 5  # unpriced work always fits
    assert meter.stop_reason(nfe=1) == "budget:nfe" and meter.stop_reason(backward=1) == "budget:backward"
    assert meter.stop_reason(reward_calls=1) == "budget:reward_calls"
    fresh = Meter(Budget(nfe=10, backward=2, reward_calls=3))
    counts = [fresh.units_that_fit(5, nfe=1), fresh.units_that_fit(5, backward=1), fresh.units_that_fit(5, reward_calls=1),
              fresh.units_that_fit(5, nfe=3)]
    assert counts == [5, 2, 3, 3] and all(type(c) is int for c in counts)
    clock = types.SimpleNamespace(now=100.0)
    monkeypatch.setattr(budget_module, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(budget_module, "peak_memory_mb", lambda device: 12.3456)
    timed = Meter(Budget(seconds=1.0))
    assert timed.stop_reason() is None  # 0 s elapsed
    clock.now = 101.23456789
    spent = timed.spent()
    assert spent["seconds"] == 1.2346 and spent["peak_memory_mb"] == 12.3
    assert timed.stop_reason() == "budget:seconds"  # 1.2346 s >= 1 s
    assert set(spent) == {"nfe", "backward", "reward_calls", "heldout_calls", "skipped", "seconds", "peak_memory_mb"}
    exact = Meter(Budget(seconds=2.0))
    clock.now += 2.0
    assert exact.stop_reason() == "budget:seconds"  # reaching the bound stops
    assert Meter().stop_reason(nfe=10**9) is None
    for bad in (0, -1):
        with pytest.raises(rs.RewardsteerError, match="must be positive"):
            Budget(backward=bad)


def test_peak_memory_reads_the_right_counter(monkeypatch):
    import resource
    import sys

    from rewardsteer import budget as budget_module

    class Usage:
        ru_maxrss = 3 * 2**20

    monkeypatch.setattr(resource, "getrusage", lambda who: Usage())
    monkeypatch.setattr(sys, "platform", "linux")  # ru_maxrss in KiB
    assert budget_module.peak_memory_mb(torch.device("cpu")) == 3 * 2**10
    monkeypatch.setattr(sys, "platform", "darwin")  # ru_maxrss in bytes
    assert budget_module.peak_memory_mb(torch.device("cpu")) == 3.0
    calls = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: calls.append(device) or 5 * 2**20)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(("reset", device)))
    gpu = torch.device("cuda", 1)
    assert budget_module.peak_memory_mb(gpu) == 5.0 and calls == [gpu]
    Meter(device=gpu)
    assert calls[-1] == ("reset", gpu)


def linear(d):
    direction = torch.linspace(-1, 1, d)
    return FunctionReward(lambda z, c: z @ direction, "linear")


@RUNS
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 60),
       st.one_of(st.none(), st.integers(1, 20)), st.one_of(st.none(), st.integers(1, 30)))
def test_reno_budget_never_exceeded_never_wasted(n, npc, iters, nfe, backward, calls):
    budget = Budget(nfe=nfe, backward=backward, reward_calls=calls)
    gen = Costly(8, npc)
    if nfe < n * npc or (calls is not None and calls < n):
        with pytest.raises(rs.RewardsteerError, match="^reno: the budget"):
            rs.reno(gen, linear(8), n=n, iters=iters, budget=budget, progress=False)
        return
    result = rs.reno(gen, linear(8), n=n, iters=iters, budget=budget, progress=False)
    spent = result.spent
    assert spent["nfe"] <= nfe and (backward is None or spent["backward"] <= backward)
    assert calls is None or spent["reward_calls"] <= calls
    evaluations = spent["reward_calls"] // n
    assert spent["nfe"] == n * npc * evaluations and spent["reward_calls"] == n * evaluations
    assert spent["backward"] == n * (evaluations - 1)  # every backward pass is followed by an evaluation
    assert len(result.trace) == evaluations
    if result.stopped == "completed":
        assert evaluations == iters + 1
    else:  # stopped early: one more step and its evaluation would not have fit
        assert evaluations < iters + 1 and result.stopped.startswith("budget:")
        assert spent["nfe"] + n * npc > nfe or (backward is not None and spent["backward"] + n > backward) or \
            (calls is not None and spent["reward_calls"] + n > calls)


@RUNS
@given(st.integers(1, 3), st.integers(1, 30), st.integers(1, 40), st.integers(1, 8))
def test_best_of_n_spends_exactly_what_fits(n, candidates, nfe, batch):
    candidates = max(candidates, n)
    budget = Budget(nfe=nfe)
    if nfe < n:
        with pytest.raises(rs.RewardsteerError):
            rs.best_of_n(Identity(4), linear(4), n=n, candidates=candidates, batch_size=batch, budget=budget,
                         progress=False)
        return
    result = rs.best_of_n(Identity(4), linear(4), n=n, candidates=candidates, batch_size=batch, budget=budget,
                          progress=False)
    assert result.spent["nfe"] == min(nfe, candidates) == result.spent["reward_calls"]
    assert result.stopped == ("completed" if candidates <= nfe else "budget:nfe")


@RUNS
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 60))
def test_zero_order_search_stops_only_when_an_iteration_would_not_fit(n, neighbours, nfe):
    budget = Budget(nfe=nfe)
    if nfe < n:
        with pytest.raises(rs.RewardsteerError):
            rs.zero_order_search(Identity(4), linear(4), n=n, iters=5, neighbours=neighbours, budget=budget,
                                 progress=False)
        return
    result = rs.zero_order_search(Identity(4), linear(4), n=n, iters=5, neighbours=neighbours, budget=budget,
                                  progress=False)
    spent = result.spent["nfe"]
    assert spent <= nfe and (spent - n) % (n * neighbours) == 0
    assert len(result.trace) == 1 + (spent - n) // (n * neighbours)
    if result.stopped != "completed":
        assert spent + n * neighbours > nfe


@RUNS
@given(st.sampled_from(["fk_steering", "das", "svdd", "trajectory_best_of_n", "reward_guidance"]), st.integers(1, 40),
       st.integers(1, 40))
def test_particle_budgets_never_exceeded(name, nfe, calls):
    toy = GaussianMixtureFlow(weights=[0.5, 0.5], means=[-1.0, 1.0], stds=[0.5, 0.5], num_steps=4)
    knobs = dict(n=2, particles=2, progress=False, budget=Budget(nfe=nfe, reward_calls=calls))
    knobs.update({"fk_steering": dict(interval=1), "das": dict(alpha=1.0), "reward_guidance": dict(scale=0.1)}.get(name, {}))
    try:
        result = rs.METHODS[name](toy, linear_reward([1.0]), **knobs)
    except rs.RewardsteerError:
        return  # too small for one scored step: refused before any compute
    spent = result.spent
    assert spent["nfe"] <= nfe and spent["reward_calls"] <= calls
    if result.stopped != "completed":  # the next step (4 NFE, 4 reward calls when scored) would not have fit
        assert spent["nfe"] + 4 > nfe or spent["reward_calls"] + 4 > calls


# ---- Result round trip --------------------------------------------------------------------------------

names = st.text("abcxyz_-/", min_size=1, max_size=6).filter(lambda s: not s.startswith("/") and "//" not in s)


@FAST
@given(st.integers(1, 3), st.dictionaries(names, finite, max_size=3), st.dictionaries(names, finite, max_size=3),
       st.lists(finite, min_size=1, max_size=3), st.sampled_from(["completed", "budget:nfe", "error: x"]))
def test_result_save_load_round_trip(tmp_path_factory, n, members, heldout, trace_scores, stopped):
    g = torch.Generator().manual_seed(n)
    member = {k: torch.full((n,), v) for k, v in members.items()}
    held = {k: torch.full((n,), v) for k, v in heldout.items()}
    trace = [{"iteration": i, "nfe": 2 * i, "score": s, "members": {}, "heldout": {}} for i, s in
             enumerate(trace_scores)]
    result = Result("reno", torch.rand(n, 1, 4, 4, generator=g), torch.randn(n, 1, 4, 4, generator=g),
                    torch.randn(n, generator=g), member, held, torch.rand(n, 1, 4, 4, generator=g),
                    torch.randn(n, generator=g), {k: v - 1 for k, v in held.items()}, trace,
                    {"nfe": 3, "backward": 1, "reward_calls": 3}, stopped, {"n": n, "iters": 2, "seed": None})
    out = result.save(tmp_path_factory.mktemp("r"))
    again = Result.load(out)
    for field in ("samples", "noises", "scores", "initial_samples", "initial_scores"):
        assert torch.equal(getattr(again, field), getattr(result, field)), field
    for field in ("member_scores", "heldout_scores", "initial_heldout"):
        a, b = getattr(again, field), getattr(result, field)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), field
    assert (again.method, again.stopped, again.config, again.spent) == (result.method, stopped, result.config,
                                                                        result.spent)
    assert again.trace == trace
    assert all(math.isfinite(row["score"]) for row in again.trace)
