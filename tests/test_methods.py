"""The steering methods on tiny models: shared signature, exact accounting, determinism, faults."""

import math

import pytest
import torch

import rewardsteer as rs
from rewardsteer.core import FunctionReward
from rewardsteer.errors import RewardsteerError
from rewardsteer.methods.reno import prior_nll

RUNS = {  # method -> (knobs, expected spend per sample-slot given generator nfe_per_call npc)
    "best_of_n": (dict(n=3, candidates=40, batch_size=16), lambda npc: dict(nfe=40 * npc, backward=0, reward_calls=40)),
    "random_search": (dict(iters=3, candidates=8), lambda npc: dict(nfe=24 * npc, backward=0, reward_calls=24)),
    "zero_order_search": (dict(n=2, iters=3, neighbours=4),
                          lambda npc: dict(nfe=(2 + 3 * 2 * 4) * npc, backward=0, reward_calls=2 + 24)),
    "reno": (dict(n=2, iters=5), lambda npc: dict(nfe=2 * 6 * npc, backward=2 * 5, reward_calls=12)),
}


def run(name, gen, reward, **extra):
    knobs, _ = RUNS[name]
    return rs.METHODS[name](gen, reward, cond=3, progress=False, **{**knobs, **extra})


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("gen_fixture", ["tiny_onestep", "tiny_unrolled"])
def test_counts_are_exact(name, gen_fixture, brightness, request):
    gen = request.getfixturevalue(gen_fixture)
    result = run(name, gen, brightness)
    expected = RUNS[name][1](gen.nfe_per_call)
    assert {k: result.spent[k] for k in expected} == expected
    assert result.stopped == "completed"
    assert result.trace[-1]["nfe"] == expected["nfe"]


@pytest.mark.parametrize("name", list(RUNS))
def test_same_seed_same_output_and_improves(name, tiny_onestep, brightness):
    a, b = run(name, tiny_onestep, brightness, seed=5), run(name, tiny_onestep, brightness, seed=5)
    c = run(name, tiny_onestep, brightness, seed=6)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.noises, b.noises)
    assert not torch.equal(a.samples, c.samples)
    if name in ("best_of_n", "random_search"):  # the best n of every candidate scored, by definition
        seen = []
        run(name, tiny_onestep, brightness, seed=5, callback=lambda s: seen.append(s["scores"]))
        assert torch.equal(a.scores, torch.cat(seen).topk(len(a.scores)).values)
    else:  # search moves: an improvement over the start (0.006 or more on each of 8 seeds tried), not a tie
        assert a.scores.mean() > a.initial_scores.mean() + 1e-3
    # the stored samples really are the generator's output for the stored noises, with the stored scores
    regenerated = tiny_onestep(a.noises, 3)
    assert torch.allclose(regenerated, a.samples, atol=1e-5)
    assert torch.allclose(brightness(regenerated), a.scores, atol=1e-5)


@pytest.mark.parametrize("name", list(RUNS))
def test_budget_stops_without_overspending(name, tiny_onestep, brightness):
    result = run(name, tiny_onestep, brightness, budget=rs.Budget(nfe=10))
    assert result.spent["nfe"] <= 10
    assert result.stopped == "budget:nfe"
    assert torch.isfinite(result.scores).all()


@pytest.mark.parametrize("name", list(RUNS))
def test_budget_below_one_evaluation_is_a_clear_error(name, tiny_unrolled, brightness):
    with pytest.raises(RewardsteerError, match="smaller than one evaluation"):
        run(name, tiny_unrolled, brightness, budget=rs.Budget(nfe=2))  # one call costs 3 NFE


def test_best_of_n_spends_budget_exactly_and_returns_argmax(tiny_onestep, brightness):
    seen = []
    result = rs.best_of_n(tiny_onestep, brightness, cond=1, n=2, candidates=100, batch_size=16, budget=rs.Budget(nfe=30),
                          callback=lambda s: seen.append(s["scores"]), progress=False)
    assert result.spent["nfe"] == 30 and result.stopped == "budget:nfe"
    everything = torch.cat(seen)
    assert everything.numel() == 30
    assert torch.equal(result.scores, everything.topk(2).values)


def test_reno_raises_score_and_keeps_best_iterate(tiny_onestep, brightness):
    result = rs.reno(tiny_onestep, brightness, cond=2, n=3, iters=15, progress=False)
    per_iter = torch.tensor([row["score"] for row in result.trace])
    assert result.scores.mean() > result.initial_scores.mean()
    assert result.scores.mean() >= per_iter.max() - 1e-6  # best per sample is at least the best mean iterate


def test_chi_regularizer_holds_norm_and_lambda_zero_drifts(identity):
    d = identity.noise_shape[0]
    direction = torch.randn(d, generator=torch.Generator().manual_seed(0))
    direction /= direction.norm()
    linear = FunctionReward(lambda z, c: 0.01 * (z @ direction), "linear")
    kept = rs.reno(identity, linear, n=4, iters=50, reg=0.01, progress=False)
    free = rs.reno(identity, linear, n=4, iters=50, reg=0.0, progress=False)
    root_d = math.sqrt(d)
    assert abs(kept.trace[-1]["z_norm"] - root_d) < 1.5
    assert free.trace[-1]["z_norm"] - root_d > 10
    # the regularizer is the chi negative log-density: minimal at sqrt(d - 1)
    r = torch.linspace(20, 40, 401)
    nll = prior_nll(r[:, None] * torch.nn.functional.normalize(torch.ones(1, d), dim=1))
    assert abs(r[nll.argmin()] - math.sqrt(d - 1)) < 0.06


def test_adam_option_and_bad_knobs(tiny_onestep, brightness):
    result = rs.reno(tiny_onestep, brightness, cond=0, n=2, iters=3, optimizer="adam", lr=0.05, progress=False)
    assert result.config["optimizer"] == "adam" and result.spent["backward"] == 6
    for bad in (dict(iters=0), dict(lr=-1.0), dict(optimizer="lbfgs"), dict(n=0)):
        with pytest.raises(RewardsteerError):
            rs.reno(tiny_onestep, brightness, cond=0, progress=False, **bad)
    with pytest.raises(RewardsteerError, match="differentiable"):
        rs.reno(tiny_onestep, FunctionReward(lambda x, c: x.mean((1, 2, 3)), "jpeg", differentiable=False),
                cond=0, progress=False)
    with pytest.raises(RewardsteerError):
        rs.Budget(nfe=0)


class Flaky(FunctionReward):
    """Brightness that turns NaN for sample 0 from call `nan_from` on, and raises at call `fail_at`."""

    def __init__(self, nan_from=2, fail_at=None, exc=RuntimeError):
        self.calls = 0
        self.nan_from, self.fail_at, self.exc = nan_from, fail_at, exc
        super().__init__(self.fn, "flaky")

    def fn(self, x, c):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise self.exc("reward server went away")
        s = x.flatten(1).mean(1)
        if self.calls >= self.nan_from:
            s = torch.cat([s[:1] * float("nan"), s[1:]])
        return s


def test_nan_scores_are_skipped_and_best_survives(tiny_onestep):
    result = rs.reno(tiny_onestep, Flaky(nan_from=3), cond=4, n=2, iters=8, progress=False)
    assert torch.isfinite(result.scores).all() and torch.isfinite(result.samples).all()
    # sample 0 is skipped at every evaluation from the third on: evaluations 3..9 of iters + 1 = 9
    assert result.spent["skipped"] == 7 and [row["skipped"] for row in result.trace] == [0, 0] + [1] * 7
    first_two = [row["score"] for row in result.trace[:2]]
    assert not any(math.isnan(v) for v in first_two)


def test_exception_and_interrupt_keep_partial_result(tiny_onestep):
    with pytest.raises(RuntimeError) as info:
        rs.reno(tiny_onestep, Flaky(nan_from=99, fail_at=4), cond=4, n=2, iters=8, progress=False)
    partial = info.value.partial_result
    assert partial is not None and partial.stopped.startswith("error") and torch.isfinite(partial.scores).all()
    result = rs.reno(tiny_onestep, Flaky(nan_from=99, fail_at=4, exc=KeyboardInterrupt), cond=4, n=2, iters=8,
                     progress=False)
    assert result.stopped == "interrupted" and len(result.trace) == 3


def test_wrong_reward_shape_names_the_reward(tiny_onestep):
    bad = FunctionReward(lambda x, c: x.flatten(1).mean(1, keepdim=True), "wide")
    with pytest.raises(RewardsteerError, match="'wide' returned shape"):
        rs.best_of_n(tiny_onestep, bad, cond=0, candidates=4, progress=False)


def test_dtype_follows_the_generator(tiny_onestep, brightness):
    gen = tiny_onestep.double()
    result = rs.reno(gen, brightness, cond=0, n=2, iters=2, progress=False)
    assert result.samples.dtype == torch.float64 and result.noises.dtype == torch.float64


def test_result_round_trip(tmp_path, tiny_onestep, brightness):
    result = rs.reno(tiny_onestep, brightness, cond=0, n=2, iters=2, heldout={"dark": lambda x, c: -x.mean((1, 2, 3))},
                     progress=False)
    result.save(tmp_path)
    again = rs.Result.load(tmp_path)
    assert torch.equal(again.samples, result.samples.float()) and again.trace == result.trace
    assert again.summary() == result.summary() and again.summary_dict() == result.summary_dict()
    assert set(again.heldout_scores) == {"dark"}
