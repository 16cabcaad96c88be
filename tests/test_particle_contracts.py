"""Particle-method contracts (smc/: the driver under FK, DAS, trajectory best-of-N and reward guidance; SVDD; the
masked sampler): conditions that follow their particles through chunks, budgets per kind of step, non-finite
rewards and gradients, seeds, what a run stopped early returns. The one-step methods and the knobs every method
shares: test_method_contracts.py."""

import math
import types

import pytest
import torch

import rewardsteer as rs
from rewardsteer.bundled.toy import GaussianMixtureFlow
from rewardsteer.core import FunctionReward
from rewardsteer.rewards.base import Ensemble
from tests.conftest import TOY

# ---- SVDD and the particle driver (smc/) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_svdd_trace_initial_samples_and_nan_candidates(alpha):
    """The trace's ESS is that of softmax(v/α) (α = None: of softmax(v)) and "kept" the mean kept value; the initial
    samples are plain samples at the run's seed; a NaN candidate is skipped and never kept."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)

    def holey(x, c=None):
        return torch.where(x[:, 0] > 0.3, torch.full_like(x[:, 0], float("nan")), x[:, 0])

    seen = []
    result = rs.svdd(toy, FunctionReward(holey, "holey"), n=6, particles=5, alpha=alpha, seed=3, progress=False,
                     callback=lambda s: seen.append({k: s[k].clone() for k in ("scores", "selected", "x0_pred")}))
    assert len(seen) == 3 and len(result.trace) == 4 and result.trace[-1]["final"]
    nans = 0
    for s, row in zip(seen, result.trace):
        v = s["scores"]  # NaN values arrive as −inf (weight 0)
        bad = ~torch.isfinite(v)
        assert (v[bad] == -math.inf).all()
        nans += int(bad.sum())
        logw = v / (alpha or 1.0)
        w = torch.softmax(logw, 1)
        assert row["ess"] == pytest.approx(float((1 / (w**2).sum(1)).mean()), rel=1e-6)
        assert row["ess_min"] == pytest.approx(float((1 / (w**2).sum(1)).min()), rel=1e-6)
        kept = v[torch.arange(6), s["selected"]]
        assert torch.isfinite(kept).all() and row["kept"] == pytest.approx(float(kept.mean()), rel=1e-6)
    assert nans > 0 and result.spent["skipped"] == nans + int(torch.isnan(holey(result.samples)).sum())
    plain = rs.trajectory_best_of_n(toy, FunctionReward(holey, "holey"), n=6, particles=1, seed=3, progress=False)
    torch.testing.assert_close(result.initial_samples, plain.samples)  # the before: plain samples, same seed
    torch.testing.assert_close(result.initial_scores, holey(plain.samples).float(), equal_nan=True)


def test_svdd_passes_conditions_keeps_members_and_is_seeded():
    toy = GaussianMixtureFlow(**TOY, num_steps=3)  # steps 0 and 1 stochastic, the last lands on x̂0
    cond = torch.tensor([3, 7])
    seen = {"reward": [], "judge": []}

    def first(x, c):
        seen["reward"].append(c.clone())
        return x[:, 0]

    ens = Ensemble({"a": FunctionReward(first, "a"), "b": FunctionReward(lambda x, c: -x[:, 0].abs(), "b")})
    judge = {"judge": lambda x, c: seen["judge"].append(c.clone()) or x[:, 0]}
    result = rs.svdd(toy, ens, cond=cond, n=2, particles=3, alpha=0.5, seed=4, progress=False, heldout=judge)
    per_candidate = cond.repeat_interleave(3)
    # the plain samples of the before, two steps of candidates, the final samples
    assert [c.tolist() for c in seen["reward"]] == [cond.tolist()] + [per_candidate.tolist()] * 2 + [cond.tolist()]
    assert seen["judge"] and all(torch.equal(c, cond) for c in seen["judge"])
    torch.testing.assert_close(result.member_scores["a"], result.samples[:, 0].float())
    torch.testing.assert_close(result.member_scores["b"], -result.samples[:, 0].abs().float())
    assert [row["iteration"] for row in result.trace] == [0, 1, 3]
    again = rs.svdd(toy, ens, cond=cond, n=2, particles=3, alpha=0.5, seed=4, progress=False)
    other = rs.svdd(toy, ens, cond=cond, n=2, particles=3, alpha=0.5, seed=5, progress=False)
    assert torch.equal(again.samples, result.samples) and not torch.equal(other.samples, result.samples)


@pytest.mark.parametrize("budget, stopped", [(dict(nfe=13), "budget:nfe"), (dict(reward_calls=11), "budget:reward_calls")])
def test_svdd_stops_before_a_step_it_cannot_pay_for(budget, stopped):
    """n = 2 chains, 3 candidates: the start costs 2 NFE, a step 6 NFE and 6 reward calls; these budgets pay for
    the start and one step, not a second."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    result = rs.svdd(toy, FunctionReward(lambda x, c: x[:, 0], "x"), n=2, particles=3, budget=rs.Budget(**budget),
                     progress=False)
    assert result.stopped == stopped and (result.spent["nfe"], result.spent["reward_calls"]) == (8, 6)
    with pytest.raises(rs.RewardsteerError, match=r"^svdd: the budget \(nfe=7\) .*: the start and one step of "
                                                  r"n·particles = 6 candidates costs 8 nfe"):
        rs.svdd(toy, FunctionReward(lambda x, c: x[:, 0], "x"), n=2, particles=3, budget=rs.Budget(nfe=7))
    with pytest.raises(rs.RewardsteerError, match=r"^svdd stopped \(budget:seconds\) before any candidate was scored"):
        rs.svdd(toy, FunctionReward(lambda x, c: x[:, 0], "x"), n=2, particles=3, budget=rs.Budget(seconds=1e-9),
                progress=False)
    with pytest.raises(rs.RewardsteerError, match="^svdd: chunk must be a positive integer, got 0"):
        rs.svdd(toy, FunctionReward(lambda x, c: x[:, 0], "x"), chunk=0, progress=False)


PARTICLE_METHODS = ["fk_steering", "das", "trajectory_best_of_n", "reward_guidance"]


@pytest.mark.parametrize("name", [*PARTICLE_METHODS, "svdd"])
def test_the_before_of_every_particle_method_is_plain_samples_at_its_seed(name):
    """initial_* are plain samples of the same sampler at the same seed (= trajectory_best_of_n with one particle),
    scored by the reward and the judges; their NFE is reported as baseline_nfe, never charged; the method's own
    samples and cost are what they were without it."""
    toy, cond = GaussianMixtureFlow(**TOY, num_steps=4), torch.tensor([3, 7])
    reward = FunctionReward(lambda x, c: x[:, 0], "x")
    judge = {"judge": lambda x, c: 2 * x[:, 0]}
    knobs = dict(particles=3, scale=0.5) if name == "reward_guidance" else dict(particles=3)
    result = rs.METHODS[name](toy, reward, cond=cond, n=2, seed=5, heldout=judge, progress=False, **knobs)
    plain = rs.trajectory_best_of_n(toy, reward, cond=cond, n=2, particles=1, seed=5, progress=False)
    torch.testing.assert_close(result.initial_samples, plain.samples)
    torch.testing.assert_close(result.initial_scores, plain.samples[:, 0].float())
    torch.testing.assert_close(result.initial_heldout["judge"], 2 * plain.samples[:, 0].float())
    assert result.spent["baseline_nfe"] == 2 * 4 and "not charged" in result.summary()
    again = rs.METHODS[name](toy, reward, cond=cond, n=2, seed=5, progress=False, **knobs)
    assert torch.equal(again.samples, result.samples) and again.spent["nfe"] == result.spent["nfe"]


@pytest.mark.parametrize("name", PARTICLE_METHODS)
def test_particle_runs_pass_each_slots_condition_and_report_what_they_saw(name):
    """Per-output conditions follow their slot's particles through chunked scoring, the final scoring and the judges;
    trace rows carry the callback's ESS and log Z; the final callback shows the decoded samples; members and the
    initial held-out scores belong to the samples they describe."""
    toy = GaussianMixtureFlow(**TOY, num_steps=3)
    cond = torch.tensor([3, 7])
    calls, judged, states = [], [], []

    def scored(x, c):
        calls.append(c.clone())
        return x[:, 0] * 0.1

    ens = Ensemble({"a": FunctionReward(scored, "a"), "b": FunctionReward(lambda x, c: -x[:, 0] ** 2, "b")})
    knobs = dict(particles=3) if name != "reward_guidance" else dict(particles=3, scale=0.5)
    result = rs.METHODS[name](toy, ens, cond=cond, n=2, chunk=4, seed=1, progress=False,
                              heldout={"judge": lambda x, c: judged.append(c.clone()) or x[:, 0]},
                              callback=lambda s: states.append({k: (v.clone() if torch.is_tensor(v) else v)
                                                                for k, v in s.items() if k != "meter"}), **knobs)
    flat, seen = cond.repeat_interleave(3), torch.cat(calls[1:])  # calls[0]: the plain samples of the before
    assert torch.equal(calls[0], cond) and len(seen) % 6 == 0
    assert torch.equal(seen, flat.repeat(len(seen) // 6))  # chunks of 4 + 2, in order
    assert judged and all(torch.equal(c, cond) for c in judged)
    rows = [row for row in result.trace]
    assert [row["iteration"] for row in rows] == [s["iteration"] for s in states]
    for row, s in zip(rows, states):
        assert row["ess"] == pytest.approx(float(s["ess"].mean())) and row["ess_min"] == pytest.approx(float(s["ess"].min()))
        assert row["log_z"] == pytest.approx(float(s["log_z"].mean())) and row["final"] == s["final"]
    assert [s["final"] for s in states][-1] and not any(s["final"] for s in states[:-1])
    final = states[-1]["particles"]  # (B, K, d): the decoded samples, one of which each slot returns
    assert all(any(torch.equal(result.samples[j], final[j, m]) for m in range(3)) for j in range(2))
    torch.testing.assert_close(result.member_scores["b"], -result.samples[:, 0].float() ** 2)
    torch.testing.assert_close(result.initial_heldout["judge"], result.initial_samples[:, 0], check_dtype=False)


def test_particle_budgets_name_the_run_and_count_only_scored_work():
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    r = FunctionReward(lambda x, c: x[:, 0], "x")
    with pytest.raises(rs.RewardsteerError, match=r"^trajectory_best_of_n: the budget \(nfe=7\) .*: the full run of "
                                                  r"n·particles = 6 particles costs 24 nfe"):
        rs.trajectory_best_of_n(toy, r, n=2, particles=3, budget=rs.Budget(nfe=7), progress=False)
    with pytest.raises(rs.RewardsteerError, match=r"^das: the budget \(backward=5\) .*: the first scored step of "
                                                  r"n·particles = 6 particles costs 6 backward"):
        rs.das(toy, r, n=2, particles=3, budget=rs.Budget(backward=5), progress=False)
    with pytest.raises(rs.RewardsteerError, match="^resampling must be one of"):
        rs.fk_steering(toy, r, n=2, particles=3, resampling="bogus", progress=False)
    # FK scoring every second step (interval 2: steps 0 and 2, then the final samples) needs 3 · 6 reward calls, not 5
    fk = rs.fk_steering(toy, r, n=2, particles=3, interval=2, budget=rs.Budget(reward_calls=18), progress=False)
    assert fk.stopped == "completed" and fk.spent["reward_calls"] == 18
    # DAS differentiates on every scored step: 4 steps · 6 = 24 backward passes complete the run
    das = rs.das(toy, r, n=2, particles=3, budget=rs.Budget(backward=24), progress=False)
    assert das.stopped == "completed" and das.spent["backward"] == 24


def test_particle_resampling_scheme_pick_and_seed_reach_the_run():
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    r = FunctionReward(lambda x, c: x[:, 0], "x")
    knobs = dict(n=64, particles=8, lam=1.0, interval=1, seed=2, progress=False)
    runs = {s: rs.fk_steering(toy, r, resampling=s, **knobs) for s in ("systematic", "multinomial")}
    assert not torch.equal(runs["systematic"].samples, runs["multinomial"].samples)
    again = rs.fk_steering(toy, r, resampling="systematic", **knobs)
    assert torch.equal(again.samples, runs["systematic"].samples)  # resampling draws are seeded too
    picks = {p: rs.das(toy, r, n=64, particles=4, alpha=0.3, pick=p, seed=5, progress=False) for p in ("best", "sample")}
    assert not torch.equal(picks["best"].samples, picks["sample"].samples)  # "sample" draws from the final weights
    assert (picks["best"].scores >= picks["sample"].scores).all()
    for name in ("trajectory_best_of_n", "reward_guidance"):  # these never resample
        result = rs.METHODS[name](toy, r, n=2, particles=3, progress=False)
        assert all(row.get("resampled", 0.0) == 0.0 for row in result.trace)

# ---- masked diffusion sampler --------------------------------------------------------------------------------------------


def test_masked_sampler_calls_the_denoiser_only_for_rows_that_changed():
    from rewardsteer.bundled.toy import IndependentTokensToy

    toy = IndependentTokensToy([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], num_steps=6)
    rows = []
    toy.denoiser.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    start = toy.initial_state(50, None)
    start[:25, 0] = 2  # a given, partly unmasked start is kept
    first = toy.sample(start.clone(), generator=torch.Generator().manual_seed(1))
    assert (first[:25, 0] == 2).all()
    calls = list(rows)
    changed, x, gen = [50], start.clone(), torch.Generator().manual_seed(1)
    for i in range(6):  # the plain loop: a fresh x̂0 for every row at every step
        dist = toy.distribution(x, i, toy.predict_x0(x, i))
        nxt = dist.sample(None if dist.deterministic else dist.draw_noise(gen))
        moved = int((nxt != x).any(1).sum())
        if i < 5 and moved:  # after the last step there is nothing left to predict
            changed.append(moved)
        x = nxt
    assert torch.equal(first, x) and not (first == toy.mask_id).any()
    assert calls == changed and len(calls) > 2  # the first call, then only the rows that changed


class CondRecording(GaussianMixtureFlow):
    """The toy flow, recording the condition each x̂0-prediction receives."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.conds = []

    def predict_x0(self, x, i, cond=None):
        self.conds.append(cond)
        return super().predict_x0(x, i, cond)


@pytest.mark.parametrize("eta", [1.0, 0.0], ids=["stochastic", "ode"])
def test_svdd_predicts_with_the_condition_and_reports_the_start(eta):
    """Every x̂0-prediction sees the chains' condition; the initial samples carry their scores and judges' scores
    (on an ODE sampler nothing is chosen: the initial samples are the returned ones); a Generator seed is
    recorded as None; NaN rewards of the final scoring are counted as skipped."""
    toy = CondRecording(**TOY, num_steps=3, eta=eta)
    cond = torch.tensor([3, 7])
    judge = {"judge": lambda x, c: 2 * x[:, 0]}
    result = rs.svdd(toy, FunctionReward(lambda x, c: x[:, 0], "x"), cond=cond, n=2, particles=3, alpha=0.5,
                     seed=torch.Generator().manual_seed(0), progress=False, heldout=judge)
    assert toy.conds and all(c is not None for c in toy.conds) and torch.equal(toy.conds[0], cond)
    torch.testing.assert_close(result.initial_scores, result.initial_samples[:, 0].float())
    torch.testing.assert_close(result.initial_heldout["judge"], 2 * result.initial_samples[:, 0], check_dtype=False)
    if eta == 0.0:
        assert torch.equal(result.initial_samples, result.samples)
    assert result.config["seed"] is None
    nan_last = FunctionReward(lambda x, c: torch.where(x[:, 0] == x[:, 0], torch.nan, x[:, 0])
                              if x.shape[0] == 2 else x[:, 0], "nan_at_the_end")  # final scoring: 2 rows
    assert rs.svdd(toy, nan_last, n=2, particles=3, progress=False).spent["skipped"] == 2


def test_svdd_selection_draws_follow_the_seed():
    """With a flat reward softmax(v/α) is uniform, so which candidate is kept depends on the seed alone."""
    picks = []
    for seed in range(4):
        kept = []
        rs.svdd(GaussianMixtureFlow(**TOY, num_steps=4), FunctionReward(lambda x, c: 0 * x[:, 0], "flat"), n=8,
                particles=4, alpha=1.0, seed=seed, progress=False, callback=lambda s: kept.append(s["selected"].tolist()))
        picks.append(kept)
    assert len({str(p) for p in picks}) == 4


def test_svdd_stopped_early_keeps_the_members_of_what_it_returns():
    ens = Ensemble({"a": FunctionReward(lambda x, c: x[:, 0], "a"), "b": FunctionReward(lambda x, c: -x[:, 0], "b")})
    result = rs.svdd(GaussianMixtureFlow(**TOY, num_steps=4), ens, n=2, particles=3, budget=rs.Budget(nfe=8),
                     progress=False)
    assert result.stopped == "budget:nfe"
    torch.testing.assert_close(result.member_scores["a"], result.samples[:, 0].float())
    torch.testing.assert_close(result.member_scores["b"], -result.samples[:, 0].float())


def test_svdd_on_an_ode_sampler_stops_before_a_prediction_it_cannot_pay_for():
    """6 deterministic steps: the start and each moved state cost n = 2 NFE (12 in all); 8 pay for 4 of them."""
    toy = GaussianMixtureFlow(**TOY, num_steps=6, eta=0.0)
    reward = FunctionReward(lambda x, c: x[:, 0], "x")
    assert rs.svdd(toy, reward, n=2, particles=3, progress=False).spent["nfe"] == 12
    with pytest.raises(rs.RewardsteerError, match=r"^svdd stopped \(budget:nfe\) before any candidate was scored"):
        rs.svdd(toy, reward, n=2, particles=3, budget=rs.Budget(nfe=8), progress=False)


class Decoded(GaussianMixtureFlow):
    """The toy flow with a decoder that is not the identity (so decoded samples and states differ) and that
    records the condition rows each x̂0-prediction receives beside its batch size."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def predict_x0(self, x, i, cond=None):
        self.seen.append((x.shape[0], cond))
        return super().predict_x0(x, i, cond)

    def decode(self, x):
        return 2 * x + 1

    def check_cond(self, cond, batch):  # any condition: the toy ignores it, the test only follows its rows
        pass


@pytest.mark.parametrize("name", ["fk_steering", "das"])
def test_particle_conditions_follow_their_rows_through_chunks(name):
    """Per-slot conditions (a 2-D embedding per slot, and a 0-d shared one) reach every chunk of x̂0-predictions
    and rewards with exactly one row per particle; the final callback shows decoded samples, earlier ones x_i."""
    toy = Decoded(**TOY, num_steps=3)
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (B, 2): one row per slot
    calls, states = [], []

    def reward(x, c):
        calls.append((x.shape[0], c))
        return x[:, 0] + c[:, 0]

    result = rs.METHODS[name](toy, FunctionReward(reward, "r"), cond=emb, n=2, particles=3, chunk=4, seed=0,
                              progress=False, callback=lambda s: states.append(s))
    flat = emb.repeat_interleave(3, 0)
    for rows_, c in calls + toy.seen:
        assert c.shape == (rows_, 2)
    assert calls[0][0] == 2 and torch.equal(calls[0][1], emb)  # the plain samples of the before: one per slot
    assert torch.equal(torch.cat([c for _, c in calls[1:3]]), flat)  # the first scored step's two chunks, in order
    final = states[-1]
    assert final["final"] and torch.equal(result.samples, final["particles"][torch.arange(2), final["scores"].argmax(1)])
    assert not torch.equal(states[0]["particles"], toy.decode(states[0]["particles"]))
    shared = rs.METHODS[name](Decoded(**TOY, num_steps=3), FunctionReward(lambda x, c: x[:, 0] + c, "r"),
                              cond=torch.tensor(0.5), n=2, particles=3, seed=0, progress=False)
    assert shared.samples.shape == (2, 1)


class BadGradRows(torch.autograd.Function):
    """r = x[:, 0] with a gradient of +inf, −inf and NaN on rows 0, 1, 2 (the others: 1)."""

    @staticmethod
    def forward(ctx, x):
        return x[:, 0].clone()

    @staticmethod
    def backward(ctx, g):
        out = torch.zeros(g.shape[0], 1, dtype=g.dtype)
        out[:, 0] = g
        out[0, 0], out[1, 0], out[2, 0] = math.inf, -math.inf, math.nan
        return out


def test_guidance_zeroes_non_finite_gradients_and_survives_rewards_without_one():
    """A particle whose reward gradient is ±inf or NaN moves as if unguided; a reward that does not depend on the
    sample (or is NaN everywhere) leaves every particle unguided instead of failing."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    runs = {}
    for scale in (0.0, 0.5):
        states = []
        rs.reward_guidance(toy, FunctionReward(lambda x, c: BadGradRows.apply(x), "bad"), n=4, scale=scale, seed=2,
                           progress=False, callback=lambda s: states.append(s["particles"].clone()))
        runs[scale] = states
    moved = (runs[0.5][2] - runs[0.0][2]).flatten().abs()
    assert torch.equal(moved[:3], torch.zeros(3, dtype=moved.dtype)) and float(moved[3]) > 1e-3
    w = torch.ones((), requires_grad=True)
    plain = rs.reward_guidance(toy, FunctionReward(lambda x, c: x[:, 0], "x"), n=2, scale=0.0, seed=2, progress=False)
    for reward in (FunctionReward(lambda x, c: w * torch.ones(len(x)), "constant"),
                   FunctionReward(lambda x, c: x[:, 0] * math.nan, "nan")):
        result = rs.reward_guidance(toy, reward, n=2, seed=2, progress=False)
        torch.testing.assert_close(result.samples, plain.samples)


@pytest.mark.parametrize("name", ["fk_steering", "das", "reward_guidance"])
def test_particle_budgets_are_checked_per_kind_of_step(name):
    """The smallest budget that pays for the first scored step is accepted; a backward bound binds guided methods
    only, and only on scored steps; an unscored step costs no reward call."""
    toy = GaussianMixtureFlow(**TOY, num_steps=6)
    reward = FunctionReward(lambda x, c: x[:, 0], "x")
    knobs = dict(particles=3, seed=0, progress=False)
    if name == "fk_steering":
        knobs.update(interval=3)  # scored at steps 0 and 3; 1, 2, 4, 5 unscored
    full = rs.METHODS[name](toy, reward, n=2, **knobs)
    assert full.stopped == "completed"
    first_step = rs.METHODS[name](toy, reward, n=2, budget=rs.Budget(nfe=6), **knobs)  # (first + 1)·B·K
    assert first_step.spent["nfe"] == 6
    if name == "fk_steering":
        bounded = rs.METHODS[name](toy, reward, n=2, budget=rs.Budget(backward=1), **knobs)
        assert bounded.stopped == "completed" and bounded.spent["nfe"] == full.spent["nfe"]
        one = rs.METHODS[name](toy, reward, n=2, budget=rs.Budget(reward_calls=6), **knobs)
        assert one.stopped == "budget:reward_calls" and one.spent["nfe"] == 3 * 6  # ran on to step 3, scored 0 only
    else:
        two = rs.METHODS[name](toy, reward, n=2, budget=rs.Budget(backward=12), **knobs)
        assert two.stopped == "budget:backward" and two.spent["backward"] == 12


def test_particle_runs_refuse_a_zero_chunk_and_say_so_when_stopped_before_scoring():
    toy = GaussianMixtureFlow(**TOY, num_steps=3)
    reward = FunctionReward(lambda x, c: x[:, 0], "x")
    with pytest.raises(rs.RewardsteerError, match="^fk_steering: chunk must be a positive integer, got 0"):
        rs.fk_steering(toy, reward, chunk=0, progress=False)
    with pytest.raises(rs.RewardsteerError, match=r"^fk_steering stopped \(budget:seconds\) before any particle"):
        rs.fk_steering(toy, reward, budget=rs.Budget(seconds=1e-9), progress=False)


def test_particle_runs_record_seeds_pick_by_seed_and_never_resample_guidance():
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    flat = FunctionReward(lambda x, c: 0 * x[:, 0], "flat")
    picked = set()
    for seed in range(4):  # flat reward: pick="sample" is uniform, so which particle is returned follows the seed
        states = []
        result = rs.fk_steering(toy, flat, n=8, particles=4, pick="sample", seed=seed, progress=False,
                                callback=lambda s: states.append(s))
        final = states[-1]["particles"]
        picked.add(str([next(m for m in range(4) if torch.equal(final[j, m], result.samples[j])) for j in range(8)]))
    assert len(picked) == 4
    generator = rs.fk_steering(toy, flat, n=2, seed=torch.Generator().manual_seed(3), progress=False)
    assert generator.config["seed"] is None
    guided = rs.reward_guidance(toy, FunctionReward(lambda x, c: x[:, 0], "x"), n=2, particles=3, scale=0.5,
                                progress=False)
    assert all(row.get("resampled", 0.0) == 0.0 for row in guided.trace)


def test_a_run_stopped_before_the_end_returns_each_slots_best_of_its_last_scored_step():
    """Without final weights there is nothing to draw from: pick="sample" falls back to the highest reward."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    states = []
    result = rs.fk_steering(toy, FunctionReward(lambda x, c: x[:, 0], "x"), n=3, particles=4, pick="sample",
                            interval=1, budget=rs.Budget(nfe=24), seed=0, progress=False,
                            callback=lambda s: states.append(s))
    assert result.stopped == "budget:nfe"
    last = states[-1]
    torch.testing.assert_close(result.samples, last["x0_pred"][torch.arange(3), last["scores"].argmax(1)])


def test_svdd_stops_before_a_final_scoring_it_cannot_pay_for():
    """2 chains, 3 candidates, 3 steps (2 stochastic): 12 reward calls for the candidates, 2 for the final samples."""
    toy = GaussianMixtureFlow(**TOY, num_steps=3)
    reward = FunctionReward(lambda x, c: x[:, 0], "x")
    assert rs.svdd(toy, reward, n=2, particles=3, progress=False).spent["reward_calls"] == 14
    cut = rs.svdd(toy, reward, n=2, particles=3, budget=rs.Budget(reward_calls=12), progress=False)
    assert cut.stopped == "budget:reward_calls" and cut.spent["reward_calls"] == 12 and cut.samples.shape == (2, 1)


def test_driver_gradients_are_zero_where_not_finite_and_reference_defaults_to_cpu_float32():
    """evaluate's ∇_x r: +inf, −inf and NaN entries become 0 (they would throw a particle off the path), finite
    ones pass; with no finite reward the gradient is 0. A sampler with no tensors is placed as CPU float32."""
    from rewardsteer.budget import Meter
    from rewardsteer.smc.driver import evaluate, reference

    identity = types.SimpleNamespace(predict_x0=lambda x, i, c: x, decode=lambda x: x)
    x = torch.zeros(4, 1)
    out = evaluate(identity, FunctionReward(lambda x, c: BadGradRows.apply(x), "bad"), x, 0, None, Meter(), 4,
                   scored=True, grad=True)
    torch.testing.assert_close(out.grad, torch.tensor([[0.0], [0.0], [0.0], [1.0]]))
    nan = evaluate(identity, FunctionReward(lambda x, c: x[:, 0] * math.nan, "nan"), x, 0, None, Meter(), 4,
                   scored=True, grad=True)
    assert torch.equal(nan.grad, torch.zeros(4, 1))
    ref = reference(torch.nn.Module())
    assert (ref.shape, ref.dtype, ref.device.type) == ((), torch.float32, "cpu")


def test_guided_particles_keep_their_gradient_through_resampling(monkeypatch):
    """DAS proposes every step from N(m + s²·c·∇r, s²) and corrects by p/q, also right after a resampling, where
    each particle's gradient must follow its ancestor."""
    import rewardsteer.smc.driver as driver

    calls, real = [], driver.log_p_over_q
    monkeypatch.setattr(driver, "log_p_over_q", lambda eps, std, h: calls.append(h.clone()) or real(eps, std, h))
    result = rs.das(GaussianMixtureFlow(**TOY, num_steps=4), FunctionReward(lambda x, c: 3 * x[:, 0], "x"), n=2,
                    particles=4, ess_threshold=1.0, seed=0, progress=False)
    assert sum(row["resampled"] for row in result.trace[:-1]) > 0  # resampling did happen before a proposal
    assert len(calls) == 4 and all(float(h.abs().max()) > 0 for h in calls[1:])  # step 0: x̂0 has no gradient


def test_a_backward_bound_counts_only_guided_steps():
    """reward_guidance scores (and backpropagates) inside its window only: steps 0 and 1 of 4 here."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward = FunctionReward(lambda x, c: x[:, 0], "x")
    full = rs.reward_guidance(toy, reward, n=2, window=(0, 2), progress=False)
    assert full.spent["backward"] == 4
    bounded = rs.reward_guidance(toy, reward, n=2, window=(0, 2), budget=rs.Budget(backward=4), progress=False)
    assert bounded.stopped == "completed" and bounded.spent == {**full.spent, "seconds": bounded.spent["seconds"]}
