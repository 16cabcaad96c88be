"""Method contracts: documented defaults, knobs that reach the run, budgets paid exactly, conditions carried per
slot, partial results kept, refusals that name the method, deprecated spellings. The maths itself is checked
against the papers in test_reference.py; the particle methods' own contracts are in test_particle_contracts.py."""

import math
import os
import types
import warnings

import pytest
import torch

import rewardsteer as rs
from rewardsteer.bundled.toy import GaussianMixtureFlow, linear_reward
from rewardsteer.core import FunctionReward
from rewardsteer.methods.search import sphere_neighbours
from rewardsteer.plumbing import BestPerSlot, finite_or_neg_inf, trace_entry
from tests.conftest import TOY, Costly, Identity

# ---- shared scaffolding (methods/common.py) ------------------------------------------------------------------------------


def test_best_per_slot_replaces_only_strict_improvements_and_never_with_nan():
    best = BestPerSlot()
    x = torch.arange(3.0)[:, None]
    first = best.update(torch.tensor([1.0, float("nan"), 0.0]), x, x, {"m": torch.tensor([1.0, 2.0, 3.0])},
                        {"h": torch.tensor([5.0, 6.0, 7.0])})
    assert first.dtype == torch.bool and first.all() and best.scores[1] == -math.inf
    better = best.update(torch.tensor([1.0, 0.5, float("nan")]), x + 10, x + 20, {"m": torch.zeros(3)},
                         {"h": torch.zeros(3)})
    assert better.tolist() == [False, True, False]  # a tie keeps the old best; NaN never replaces
    assert best.scores.tolist() == [1.0, 0.5, 0.0] and best.samples[:, 0].tolist() == [0.0, 11.0, 2.0]
    assert best.noises[:, 0].tolist() == [0.0, 21.0, 2.0]
    assert best.members["m"].tolist() == [1.0, 0.0, 3.0] and best.heldout["h"].tolist() == [5.0, 0.0, 7.0]
    low = BestPerSlot()  # a bfloat16 generator's samples, later float32 ones: the best keeps the first dtype
    low.update(torch.zeros(2), x[:2].bfloat16(), x[:2].bfloat16(), {}, {})
    low.update(torch.ones(2), x[:2] + 0.5, x[:2] + 0.5, {}, {})
    assert low.samples.dtype == low.noises.dtype == torch.bfloat16 and low.samples[:, 0].tolist() == [0.5, 1.5]


def test_trace_entry_means_leave_out_non_finite_scores():
    from rewardsteer.budget import Meter

    meter = Meter()
    meter.charge(nfe=7, backward=2, reward_calls=5)
    row = trace_entry(3, meter, torch.tensor([1.0, float("nan"), 3.0]), {"a": torch.tensor([2.0, 4.0, 6.0])},
                      {"h": torch.tensor([1.0, 2.0, 4.0])}, best=torch.tensor([5.0, 7.0]), label="x")
    assert (row["iteration"], row["nfe"], row["backward"], row["reward_calls"]) == (3, 7, 2, 5)
    assert row["score"] == 2.0 and row["score_max"] == 3.0 and row["members"] == {"a": 4.0}
    assert row["heldout"] == {"h": pytest.approx(7 / 3)} and row["heldout_n"] == 3
    assert row["heldout_sd"]["h"] == pytest.approx(float(torch.tensor([1.0, 2.0, 4.0]).std()))
    assert row["best"] == 6.0 and row["label"] == "x"
    assert set(row) == {"iteration", "nfe", "backward", "reward_calls", "seconds", "score", "score_max", "members",
                        "heldout", "heldout_sd", "heldout_n", "best", "label"}
    assert math.isnan(trace_entry(0, meter, torch.tensor([float("nan")]), {}, {})["score"])
    clock = types.SimpleNamespace(nfe=0, backward=0, reward_calls=0, seconds=1.23456789)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one held-out sample: its spread is NaN, not a degrees-of-freedom warning
        one = trace_entry(0, clock, torch.tensor([1.0]), {}, {"h": torch.tensor([2.0])})
    assert one["seconds"] == 1.2346 and isinstance(one["seconds"], float) and one["heldout_n"] == 1
    assert math.isnan(one["heldout_sd"]["h"])
    assert torch.equal(finite_or_neg_inf(torch.tensor([1.0, float("inf"), float("nan")])),
                       torch.tensor([1.0, -math.inf, -math.inf]))


def test_common_scaffolding_checks_and_partial_results():
    from rewardsteer.budget import Meter
    from rewardsteer.plumbing import build_result, check_noise, model_dtype, prepare, run_guarded
    from rewardsteer.wrap import RewardsteerWarning

    gen = Identity(4)
    z = torch.zeros(2, 4)
    assert check_noise(z, gen, "m") is z
    for bad in (torch.zeros(4), torch.zeros(2, 5), torch.zeros(0, 4), [[0.0] * 4]):
        with pytest.raises(rs.RewardsteerError, match=r"^m: noise must be a \(B, 4\) tensor"):
            check_noise(bad, gen, "m")
    reward, held = prepare(lambda x, c: x.sum(1), {"h": lambda x, c: x.mean(1)}, need_grad=True, method="m")
    assert reward.name == "<lambda>" and set(held) == {"h"} and held["h"].name == "h"
    assert prepare(reward, None, need_grad=False, method="m")[1] == {}
    for bad_reward in (None, 3):
        with pytest.raises(rs.RewardsteerError, match="^m needs a reward"):
            prepare(bad_reward, None, need_grad=False, method="m")
    with pytest.raises(rs.RewardsteerError, match="^m: heldout must be a dict"):
        prepare(reward, [reward], need_grad=False, method="m")
    frozen = FunctionReward(lambda x, c: x.sum(1), "frozen", differentiable=False)
    with pytest.raises(rs.RewardsteerError, match="^m needs a differentiable reward and 'frozen' is not"):
        prepare(frozen, None, need_grad=True, method="m")
    assert prepare(frozen, None, need_grad=False, method="m")[0] is frozen
    assert model_dtype(torch.nn.Linear(2, 2).double()) == torch.float64 and model_dtype(torch.nn.ReLU()) == torch.float32
    best = BestPerSlot()
    best.update(torch.tensor([1.0]), z[:1], z[:1], {}, {})
    initial = {"samples": z[:1], "scores": torch.tensor([1.0]), "heldout": {}}
    with pytest.warns(RewardsteerWarning, match="m returned 1 of the n=2 outputs asked for"):
        short = build_result("m", best, initial, [], Meter(), "budget:nfe", {"n": 2})
    assert short.shortfall == 1 and short.stopped == "budget:nfe" and short.method == "m"
    with pytest.raises(rs.RewardsteerError, match="m evaluated nothing"):
        build_result("m", BestPerSlot(), {}, [], Meter(), "budget", {"n": 1})

    def failing():
        raise ValueError("boom")

    with pytest.raises(ValueError) as info:
        run_guarded(failing, lambda stopped: stopped)
    assert info.value.partial_result == "error: ValueError: boom"

    def interrupted():
        raise KeyboardInterrupt

    assert run_guarded(interrupted, lambda stopped: stopped) == "interrupted"
    assert run_guarded(lambda: "completed", lambda stopped: stopped.upper()) == "COMPLETED"

    def no_result(stopped):
        raise rs.RewardsteerError("nothing")

    with pytest.raises(ValueError) as info:
        run_guarded(failing, no_result)
    assert info.value.partial_result is None


def test_class_labels_accept_none_ints_and_rows():
    from rewardsteer.bundled.flow import NULL_CLASS, class_labels

    assert class_labels(None, 3, "cpu").tolist() == [NULL_CLASS] * 3
    assert class_labels(4, 2, "cpu").tolist() == [4, 4]
    assert class_labels(torch.tensor([0, 10]), 2, "cpu").tolist() == [0, 10]
    floats = class_labels(torch.tensor([3.0, 7.0]), 2, "cpu")  # float classes index the embedding as longs
    assert floats.dtype == torch.long and floats.tolist() == [3, 7]
    for bad in (torch.tensor([1, 2, 3]), torch.tensor([-1, 2]), 11):
        with pytest.raises(rs.RewardsteerError, match="cond must be None"):
            class_labels(bad, 2, "cpu")

# ---- knobs reach the method: documented defaults, config, condition, chunking, progress, errors --------------------------


DEFAULTS = {  # the config a call with no knobs records: the defaults the docstrings and README state (the papers')
    "reno": dict(n=1, iters=50, lr=5.0, reg=0.01, optimizer="sgd", momentum=0.9, grad_clip=0.1, seed=0),
    "zero_order_search": dict(n=1, iters=10, neighbours=4, cosine=0.95, batch_size=64, seed=0),
    "best_of_n": dict(n=1, candidates=16, batch_size=64, seed=0),
    "random_search": dict(n=1, candidates=16, batch_size=16, seed=0, iters=4),
    "fk_steering": dict(n=1, particles=8, ess_threshold=0.5, resampling="systematic", pick="best", chunk=8, steps=4,
                        seed=0, lam=10.0, potential="max", interval=5, window=[0, 4]),
    "das": dict(n=1, particles=8, ess_threshold=0.5, resampling="systematic", pick="sample", chunk=8, steps=4, seed=0,
                alpha=0.1, gamma=0.008),
    "svdd": dict(n=1, particles=8, alpha=None, chunk=8, steps=4, seed=0),
    "trajectory_best_of_n": dict(n=1, particles=8, ess_threshold=1.0, resampling="systematic", pick="best", chunk=8,
                                 steps=4, seed=0),
    "reward_guidance": dict(n=1, particles=1, ess_threshold=1.0, resampling="systematic", pick="best", chunk=1, steps=4,
                            seed=0, scale=100.0, step="variance", window=[0, 4]),
}


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_documented_defaults(name, capsys):
    """Called with nothing but a model and a reward, each method runs its documented defaults (seed 0, a progress
    bar) and spends what they imply."""
    one_step = name in ("reno", "zero_order_search", "best_of_n", "random_search")
    model = Identity(4) if one_step else GaussianMixtureFlow(**TOY, num_steps=4)
    reward = FunctionReward(lambda x, c: x.sum(1), "sum")
    result = rs.METHODS[name](model, reward)
    assert result.config == DEFAULTS[name]
    assert f"{name}:" in capsys.readouterr().err and result.stopped == "completed"
    expected_nfe = {"reno": 51, "zero_order_search": 41, "best_of_n": 16, "random_search": 64, "svdd": 25,
                    "reward_guidance": 4}.get(name, 32)
    assert result.spent["nfe"] == expected_nfe and len(result.samples) == 1
    again = rs.METHODS[name](model, reward, seed=0, progress=False)
    assert torch.equal(again.samples, result.samples)


PARTICLE_KNOBS = {"fk_steering": dict(lam=3.0, potential="diff", interval=2, window=(1, 5)),
                  "das": dict(alpha=0.7, gamma=0.05), "svdd": dict(alpha=0.3),
                  "trajectory_best_of_n": dict(), "reward_guidance": dict(scale=0.5, step="constant", window=(0, 4))}


@pytest.fixture(scope="module")
def flow():
    from rewardsteer.bundled.flow import FlowSampler
    from tests.conftest import tiny_unet

    return FlowSampler(tiny_unet(2), num_steps=5, guidance=2.0, eta=1.0)


@pytest.mark.parametrize("name", list(PARTICLE_KNOBS))
def test_particle_knobs_reach_the_run(name, flow, capsys):
    """The condition steers the sampler, chunk bounds every reward batch, the knobs land in the config, the progress
    bar is named after the method and shown only when asked, and a wrong generator kind names the method."""
    sizes = []
    reward = FunctionReward(lambda x, c: sizes.append(x.shape[0]) or x.mean((1, 2, 3)), "bright")
    knobs = dict(n=2, particles=3, seed=1, **PARTICLE_KNOBS[name])
    method = rs.METHODS[name]
    calls = []
    a = method(flow, reward, cond=3, chunk=4, progress=False, callback=lambda s: calls.append(s["iteration"]), **knobs)
    last = flow.num_steps - (2 if name == "svdd" else 0)  # svdd's last callback: its last stochastic step
    assert max(sizes) <= 4 and capsys.readouterr().err == "" and calls[-1] == last
    assert {k: a.config[k] for k in ("n", "particles", "chunk")} == {"n": 2, "particles": 3, "chunk": 4}
    for k, v in PARTICLE_KNOBS[name].items():
        assert a.config[k] == (list(v) if isinstance(v, tuple) else v), k
    b = method(flow, reward, cond=7, chunk=6, progress=True, **knobs)
    assert not torch.equal(a.samples, b.samples)  # the condition reached the sampler
    assert torch.equal(a.noises, b.noises)  # the same seed: the same initial noise
    assert f"{name}:" in capsys.readouterr().err  # tqdm's bar, labelled
    with pytest.raises(rs.RewardsteerError, match=f"^{name} needs a multi-step sampler"):
        method(Identity(4), reward, progress=False)


@pytest.mark.parametrize("name", ["reno", "zero_order_search", "best_of_n", "random_search"])
def test_one_step_knobs_reach_the_run(name, tiny_onestep, brightness, capsys):
    knobs = {"reno": dict(n=2, iters=2, lr=0.5, reg=0.1, momentum=0.5, grad_clip=0.2),
             "zero_order_search": dict(n=2, iters=2, neighbours=3, cosine=0.8),
             "best_of_n": dict(n=2, candidates=6, batch_size=4),
             "random_search": dict(n=2, iters=2, candidates=3)}[name]
    method = rs.METHODS[name]
    a = method(tiny_onestep, brightness, cond=3, seed=1, progress=False, **knobs)
    assert capsys.readouterr().err == ""
    assert all(a.config[k] == v for k, v in knobs.items()) and a.config["seed"] == 1
    b = method(tiny_onestep, brightness, cond=7, seed=1, progress=True, **knobs)
    assert not torch.equal(a.samples, b.samples) and f"{name}:" in capsys.readouterr().err
    g = torch.Generator().manual_seed(1)
    c = method(tiny_onestep, brightness, cond=3, seed=g, progress=False, **knobs)
    assert torch.equal(c.samples, a.samples) and c.config["seed"] is None  # a Generator is used as given
    with pytest.raises(rs.RewardsteerError, match=f"^{name} needs a one-step generator"):
        method(GaussianMixtureFlow(**TOY, num_steps=2), brightness, progress=False)


@pytest.mark.parametrize("name, knobs, match", [
    ("das", dict(gamma=0.0), "^gamma must be > 0"), ("das", dict(alpha=0.0), "^alpha must be a finite"),
    ("svdd", dict(alpha=0.0), "^alpha must be a finite"), ("reward_guidance", dict(scale=-1.0), "scale must be"),
    ("reward_guidance", dict(scale=float("inf")), "scale must be"), ("reward_guidance", dict(step="ddim"), "step must"),
    ("reward_guidance", dict(window=(2, 2)), "window must"), ("reward_guidance", dict(window=(0, 9)), "window must"),
    ("fk_steering", dict(interval=0), "^interval must"), ("fk_steering", dict(interval=2.0), "^interval must"),
    ("fk_steering", dict(window=(-1, 3)), "^window must"), ("fk_steering", dict(window=(2, 2)), "^window must"),
    ("fk_steering", dict(window=(0, 6)), "^window must"), ("fk_steering", dict(window=(0, 2, 4)), "^window must"),
    ("fk_steering", dict(lam=-1.0), "^lam must be a finite"), ("fk_steering", dict(potential="mean"), "^potential must"),
])
def test_bad_particle_knobs_are_refused(name, knobs, match, flow):
    with pytest.raises(rs.RewardsteerError, match=match):
        rs.METHODS[name](flow, linear_reward([1.0] * 1), progress=False, **knobs)


@pytest.mark.parametrize("name, knobs, match", [
    ("zero_order_search", dict(cosine=1.0), "cosine"), ("zero_order_search", dict(cosine=-1.0), "cosine"),
    ("reno", dict(lr=0.0), "lr"), ("reno", dict(reg=-0.1), "reg"), ("reno", dict(optimizer="lbfgs"), "optimizer"),
    ("best_of_n", dict(n=3, candidates=2), "candidates"), ("random_search", dict(n=5, iters=2, candidates=2), "iters"),
])
def test_bad_one_step_knobs_are_refused(name, knobs, match, tiny_onestep, brightness):
    with pytest.raises(rs.RewardsteerError, match=match):
        rs.METHODS[name](tiny_onestep, brightness, progress=False, **knobs)


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_a_callback_can_stop_every_method(name, flow, tiny_onestep, brightness):
    model = flow if name in PARTICLE_KNOBS else tiny_onestep
    knobs = dict(n=2, particles=2) if name in PARTICLE_KNOBS else {  # small runs: "completed" needs the whole run
        "reno": dict(iters=3), "zero_order_search": dict(iters=2), "best_of_n": dict(candidates=4),
        "random_search": dict(iters=2, candidates=4)}[name]
    calls = []
    result = rs.METHODS[name](model, brightness, cond=3, progress=False, **knobs,
                              callback=lambda s: calls.append(s["iteration"]) or {"stop": True})
    # zero-order search's trace opens with the pivots' row, before the first callback
    assert result.stopped == "callback" and len(calls) == 1 and len(result.trace) == 1 + (name == "zero_order_search")
    again = rs.METHODS[name](model, brightness, cond=3, progress=False, **knobs, callback=lambda s: {"stop": False})
    assert again.stopped == "completed"


CALLBACK_KEYS = {
    "reno": {"method", "iteration", "z", "samples", "scores", "meter"},
    "zero_order_search": {"method", "iteration", "pivots", "scores", "meter"},
    "best_of_n": {"method", "iteration", "samples", "scores", "best_scores", "meter"},
    "random_search": {"method", "iteration", "samples", "scores", "best_scores", "meter"},
    "svdd": {"method", "iteration", "candidates", "x0_pred", "scores", "selected", "meter"},
    **{name: {"method", "iteration", "final", "particles", "x0_pred", "scores", "log_weights", "ess", "log_z", "meter"}
       for name in ("fk_steering", "das", "trajectory_best_of_n", "reward_guidance")},
}


@pytest.mark.parametrize("name", list(CALLBACK_KEYS))
def test_callback_state_names_the_method_and_counts_iterations(name):
    one_step = name in ("reno", "zero_order_search", "best_of_n", "random_search")
    model = Identity(4) if one_step else GaussianMixtureFlow(**TOY, num_steps=4)
    knobs = {"reno": dict(iters=3), "zero_order_search": dict(iters=3), "best_of_n": dict(candidates=12, batch_size=4),
             "random_search": dict(iters=3, candidates=4)}.get(name, dict(particles=3, n=2))
    if name == "fk_steering":
        knobs["interval"] = 1
    states = []
    result = rs.METHODS[name](model, FunctionReward(lambda x, c: x.sum(1), "sum"), progress=False,
                              callback=lambda s: states.append(dict(s)), **knobs)
    assert result.method == name and all(set(s) == CALLBACK_KEYS[name] and s["method"] == name for s in states)
    steps = [s["iteration"] for s in states]
    expected = {"reno": [0, 1, 2, 3], "zero_order_search": [1, 2, 3], "best_of_n": [0, 1, 2], "random_search": [0, 1, 2],
                "svdd": [0, 1, 2], "trajectory_best_of_n": [4]}.get(name, [0, 1, 2, 3, 4])
    assert steps == expected
    if "final" in CALLBACK_KEYS[name]:
        assert [s["final"] for s in states] == [False] * (len(states) - 1) + [True]


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_every_check_names_its_method(name, flow, tiny_unrolled, brightness):
    """Each refusal starts with the method's name: counts, conditions, the model's own condition check, a budget
    that cannot pay for the outputs (with what they cost), the reward, given noise."""
    one_step = name not in PARTICLE_KNOBS
    model = tiny_unrolled if one_step else flow  # 3 NFE per call / a 5-step sampler
    method = rs.METHODS[name]
    cases = [(dict(n=0), rf"^{name}: n must be a positive integer"),
             (dict(cond="3"), rf"^{name}: cond must be None, a number, or a tensor"),
             (dict(cond=12), rf"^{name}: cond must be None, a class in 0..9"),
             (dict(n=2, budget=rs.Budget(nfe=1)), rf"^{name}: the budget \(nfe=1\) is smaller than one evaluation"),
             (dict(n=2, budget=rs.Budget(reward_calls=1)), rf"^{name}: the budget \(reward_calls=1\) is smaller"),
             (dict(heldout=[brightness]), rf"^{name}: heldout must be a dict")]
    if name in ("reno", "zero_order_search"):
        cases.append((dict(noise=torch.zeros(2, 5)), rf"^{name}: noise must be a \(B, 2, 28, 28\) tensor.*got \(2, 5\)$"))
        cases.append((dict(noise=[0.0]), rf"^{name}: noise must be a .*got list$"))
    if name in ("reno", "das", "reward_guidance"):
        frozen = FunctionReward(lambda x, c: x.mean((1, 2, 3)), "frozen", differentiable=False)
        cases.append((dict(reward=frozen), rf"^{name} needs a differentiable reward and 'frozen' is not"))
    cases.append((dict(reward=None), rf"^{name} needs a reward"))
    extra = {"candidates": 4} if name == "best_of_n" else {}  # best_of_n(n=...) alone is the old spelling
    for knobs, match in cases:
        reward = knobs.pop("reward", brightness)
        knobs = {**extra, **knobs}
        with pytest.raises(rs.RewardsteerError, match=match):
            method(model, reward, progress=False, **knobs)
    if one_step:
        what = {"reno": "samples", "zero_order_search": "pivots"}.get(name, "candidates")
        with pytest.raises(rs.RewardsteerError, match=rf": n=2 {what} \(3 NFE each\) costs 6 nfe"):  # 2 outputs at 3 NFE
            method(model, brightness, n=2, budget=rs.Budget(nfe=5), progress=False, **extra)


@pytest.mark.parametrize("name", ["reno", "zero_order_search", "best_of_n", "random_search"])
def test_heldout_scores_belong_to_the_returned_samples(name, tiny_onestep, brightness):
    heldout = {"dark": lambda x, c: -x.mean((1, 2, 3)), "corner": lambda x, c: x[:, 0, 0, 0]}
    knobs = {"reno": dict(n=2, iters=3), "zero_order_search": dict(n=2, iters=3), "best_of_n": dict(n=2, candidates=8),
             "random_search": dict(n=2, iters=2, candidates=4)}[name]
    result = rs.METHODS[name](tiny_onestep, brightness, cond=torch.tensor([3, 7]) if name in ("reno", "zero_order_search")
                              else 3, heldout=heldout, progress=False, **knobs)
    for key, fn in heldout.items():
        torch.testing.assert_close(result.heldout_scores[key], fn(result.samples, None))
        torch.testing.assert_close(result.initial_heldout[key], fn(result.initial_samples, None))
    torch.testing.assert_close(result.scores, brightness(result.samples))
    torch.testing.assert_close(result.initial_scores, brightness(result.initial_samples))
    cond = torch.tensor([3, 7]) if name in ("reno", "zero_order_search") else 3
    torch.testing.assert_close(tiny_onestep(result.noises, cond), result.samples, atol=1e-5, rtol=0)
    assert result.spent["heldout_calls"] > 0 and result.member_scores["brightness"].shape == (2,)

# ---- deprecated spellings ------------------------------------------------------------------------------------------------


def test_old_spellings_warn_and_mean_what_they_meant():
    gen, reward = Identity(4), FunctionReward(lambda x, c: x.sum(1), "sum")
    with pytest.warns(FutureWarning, match="draws 8 candidates and keeps 1"):
        old = rs.best_of_n(gen, reward, n=8, progress=False)
    assert old.config["n"] == 1 and old.config["candidates"] == 8
    with pytest.warns(DeprecationWarning, match="deprecated"):
        k = rs.best_of_n(gen, reward, k=2, n=6, progress=False)
    assert (k.config["n"], k.config["candidates"]) == (2, 6)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        k2 = rs.best_of_n(gen, reward, k=2, candidates=5, progress=False)
    assert (k2.config["n"], k2.config["candidates"]) == (2, 5)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        k3 = rs.best_of_n(gen, reward, k=3, progress=False)
    assert (k3.config["n"], k3.config["candidates"]) == (3, 16)
    with pytest.raises(rs.RewardsteerError, match="k is the old name of n"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rs.best_of_n(gen, reward, k=2, n=3, candidates=5, progress=False)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        rounds = rs.random_search(gen, reward, rounds=2, candidates_per_round=3, k=2, progress=False)
    assert (rounds.config["iters"], rounds.config["candidates"], rounds.config["n"]) == (2, 3, 2)
    assert rounds.spent["nfe"] == 6
    for both in (dict(iters=2, rounds=2), dict(candidates=2, candidates_per_round=2), dict(n=1, k=1)):
        with pytest.raises(rs.RewardsteerError, match="pass only one of the new name and its old spelling"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rs.random_search(gen, reward, progress=False, **both)


DEPRECATED = [  # (method, old keywords, what the warning says to use instead)
    ("best_of_n", dict(k=2, n=6), "k", "n= (outputs kept) and candidates= (drawn)"),
    ("random_search", dict(rounds=2), "rounds", "iters"),
    ("random_search", dict(candidates_per_round=3), "candidates_per_round", "candidates"),
    ("random_search", dict(k=2), "k", "n"),
]


@pytest.mark.parametrize("name, knobs, old, new", DEPRECATED)
def test_old_spellings_name_the_new_ones_and_point_at_the_caller(name, knobs, old, new):
    with pytest.warns(DeprecationWarning) as caught:
        rs.METHODS[name](Identity(3), FunctionReward(lambda x, c: x.sum(1), "sum"), progress=False, **knobs)
    (w,) = [w for w in caught if w.category is DeprecationWarning]
    assert str(w.message) == f"{name}({old}=...) is deprecated and will be removed in the next release: use {new}"
    if "MUTANT_UNDER_TEST" not in os.environ:  # (mutmut's trampoline adds a frame between caller and method)
        assert w.filename == __file__  # the warning points at the line that used the old name


@pytest.mark.parametrize("old, new", [("rounds", "iters"), ("candidates_per_round", "candidates"), ("k", "n")])
def test_random_search_refuses_a_knob_given_twice_by_name(old, new):
    with pytest.raises(rs.RewardsteerError, match=rf"^random_search: pass only one of the new name and its old "
                                                  rf"spelling '{old}'$"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rs.random_search(Identity(3), FunctionReward(lambda x, c: x.sum(1), "sum"), progress=False,
                         **{old: 2, new: 2})

# ---- ReNO: noise, best iterate, NaN, budgets, conditions -----------------------------------------------------------------


def test_reno_and_zero_order_search_start_from_given_noise():
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))  # not what seed 0 would draw
    reward = FunctionReward(lambda x, c: x.sum(1), "sum")
    for name in ("reno", "zero_order_search"):
        result = rs.METHODS[name](Identity(5), reward, noise=z, iters=1, progress=False)
        assert torch.equal(result.initial_samples, z) and result.config["n"] == 3, name
        single = rs.METHODS[name](Identity(5), reward, noise=z[:1], iters=1, progress=False)  # a batch of one
        assert torch.equal(single.initial_samples, z[:1]), name


def test_reno_keeps_the_best_iterate_per_sample_not_the_last():
    """A reward that peaks at the second evaluation then falls: the result is the second iterate's sample."""
    calls = []

    def peaked(z, c):
        calls.append(z.detach().clone())
        return -(len(calls) - 2) ** 2 + 0.0 * z.sum(1)

    result = rs.reno(Identity(4), FunctionReward(peaked, "peaked"), n=2, iters=4, progress=False)
    assert len(calls) == 5
    torch.testing.assert_close(result.samples, calls[1])
    assert torch.equal(result.scores, torch.zeros(2)) and torch.equal(result.initial_scores, torch.full((2,), -1.0))


def test_reno_keeps_the_noise_of_a_sample_whose_score_turns_nan():
    calls = []

    def flaky(z, c):
        calls.append(1)
        s = z.sum(1)
        return torch.cat([s[:1] * float("nan"), s[1:]]) if len(calls) >= 3 else s

    seen = []
    result = rs.reno(Identity(4), FunctionReward(flaky, "flaky"), n=2, iters=5, progress=False,
                     callback=lambda s: seen.append(s["z"].detach().clone()))
    assert len(seen) == 6  # the last evaluation takes no step
    for before, after in zip(seen[1:-1], seen[2:-1]):  # from the third evaluation on, sample 0 never moves
        assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    assert result.spent["skipped"] == 4 and torch.isfinite(result.scores).all()


def nan_grad_for_first(times: int | None = None):
    """An identity whose backward returns NaN for the first sample (its score stays finite): on every backward
    pass, or on the first `times` only."""
    calls = []

    class NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            g = g.clone()
            if times is None or len(calls) <= times:
                g[0] = float("nan")
            return g

    return NanGrad


NanGradForFirst = nan_grad_for_first()


def test_reno_keeps_the_noise_of_a_sample_whose_gradient_is_not_finite():
    seen = []
    result = rs.reno(Identity(4), FunctionReward(lambda x, c: NanGradForFirst.apply(x).sum(1), "nan-grad"), n=2,
                     iters=3, progress=False, callback=lambda s: seen.append(s["z"].detach().clone()))
    assert all(torch.equal(z[0], seen[0][0]) for z in seen) and not torch.equal(seen[-1][1], seen[0][1])
    assert result.spent["skipped"] == 3 and [row["skipped"] for row in result.trace] == [1, 1, 1, 0]


def test_reno_keeps_fp32_master_noise_for_a_bfloat16_generator():
    gen = Identity(6).to(torch.bfloat16)
    reward = FunctionReward(lambda x, c: x.float().sum(1), "sum")
    result = rs.reno(gen, reward, n=2, iters=2, progress=False)
    assert result.samples.dtype == torch.bfloat16 and result.noises.dtype == torch.float32
    assert result.initial_samples.dtype == torch.bfloat16


@pytest.mark.parametrize("budget, stopped", [(dict(nfe=17), "budget:nfe"), (dict(reward_calls=5), "budget:reward_calls"),
                                             (dict(backward=3), "budget:backward")])
def test_reno_makes_the_last_affordable_evaluation_the_final_one(budget, stopped):
    """n = 2 at 3 NFE each: an evaluation costs 6 NFE and 2 reward calls, a step 2 backward passes. Each budget pays
    for two evaluations and the step between them, not a third evaluation: so the second evaluation is the last,
    with no backward pass after it, and the run says which bound stopped it."""
    result = rs.reno(Costly(4, 3), FunctionReward(lambda x, c: x.sum(1), "sum"), n=2, iters=5,
                     budget=rs.Budget(**budget), progress=False)
    assert result.stopped == stopped and result.method == "reno"
    assert {k: result.spent[k] for k in ("nfe", "backward", "reward_calls")} == {"nfe": 12, "backward": 2,
                                                                               "reward_calls": 4}
    assert [row["iteration"] for row in result.trace] == [0, 1]


def test_reno_passes_the_condition_and_logs_the_best_so_far():
    seen = {"reward": [], "judge": []}

    def reward(x, c):
        seen["reward"].append(c)
        return -(x - 1.0).pow(2).sum(1) + torch.sin(5 * x).sum(1)  # bumpy: not every step improves

    def judge(x, c):
        seen["judge"].append(c)
        return x.sum(1)

    scores = []
    result = rs.reno(Identity(3), FunctionReward(reward, "bumpy"), cond=7, n=3, iters=6, lr=0.8, progress=False,
                     heldout={"judge": judge}, callback=lambda s: scores.append(s["scores"].detach().clone()))
    for c in seen["reward"] + seen["judge"]:
        assert torch.equal(torch.as_tensor(c).expand(3), torch.full((3,), 7))
    running = torch.cummax(torch.stack(scores), 0).values  # (iters + 1, n): each sample's best so far
    assert [row["best"] for row in result.trace] == pytest.approx(running.mean(1).tolist(), rel=1e-6)
    assert any(row["best"] > row["score"] + 1e-6 for row in result.trace)  # the best is not just the current

def test_reno_a_skipped_gradient_leaves_no_trace_in_the_momentum():
    """Sample 0's gradient is NaN at the first step only. Its noise stays put, and its first real step equals
    sample 1's first step (same linear reward, reg = 0): SGD's momentum buffer saw zeros for it, not garbage."""
    nan_once = nan_grad_for_first(times=1)
    z0, seen = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)), []  # seen[k]: z after step k
    rs.reno(Identity(4), FunctionReward(lambda x, c: nan_once.apply(x).sum(1), "nan-once"), noise=z0, iters=3, reg=0.0,
            progress=False, callback=lambda s: seen.append(s["z"].detach().clone()))
    assert torch.equal(seen[0][0], z0[0]) and not torch.equal(seen[0][1], z0[1])
    torch.testing.assert_close(seen[1][0] - seen[0][0], seen[0][1] - z0[1])


# ---- zero-order and candidate search -------------------------------------------------------------------------------------


class CondShift(Identity):
    """G(z, c) = z + c for a (B, d) condition, so each candidate must carry its own pivot's row."""

    def forward(self, z, cond=None):
        return z + self.anchor + (0.0 if cond is None else cond)


def test_zero_order_search_carries_each_pivots_condition_and_logs_its_rows():
    cond = torch.tensor([[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0]])
    seen, best = [], []
    result = rs.zero_order_search(
        CondShift(3), FunctionReward(lambda x, c: -(x - 2 * c).pow(2).sum(1), "towards-2c", differentiable=False),
        cond=cond, n=2, iters=3, neighbours=3, cosine=0.5, progress=False,
        heldout={"judge": lambda x, c: seen.append(c) or x[:, 0]}, callback=lambda s: best.append(s["scores"].clone()))
    assert result.method == "zero_order_search" and all(torch.equal(c, cond) for c in seen)
    torch.testing.assert_close(result.samples, result.noises + cond)
    assert [row["iteration"] for row in result.trace] == [0, 1, 2, 3]
    assert result.trace[0]["best"] == pytest.approx(result.trace[0]["score"])
    assert [row["best"] for row in result.trace[1:]] == pytest.approx([float(b.mean()) for b in best])
    zero_d = rs.zero_order_search(Identity(3), FunctionReward(lambda x, c: x.sum(1) * c, "scaled"),
                                  cond=torch.tensor(2.0), n=2, iters=1, neighbours=2, progress=False)
    torch.testing.assert_close(zero_d.scores, 2.0 * zero_d.samples.sum(1))


@pytest.mark.parametrize("budget", [dict(nfe=40), dict(reward_calls=13)])
def test_zero_order_search_runs_whole_iterations_only(budget):
    """n = 2 pivots, 3 neighbours, 3 NFE per call: the start costs 2 evaluations (6 NFE), an iteration 6 (18 NFE).
    40 NFE or 13 reward calls pay for the start and one iteration (24 NFE, 8 calls), not a second (42, 14)."""
    result = rs.zero_order_search(Costly(4, 3), FunctionReward(lambda x, c: x.sum(1), "sum"), n=2, iters=5,
                                  neighbours=3, budget=rs.Budget(**budget), progress=False)
    assert result.stopped == f"budget:{next(iter(budget))}" and len(result.trace) == 2
    assert (result.spent["nfe"], result.spent["reward_calls"]) == (24, 8)


@pytest.mark.parametrize("knob", ["iters", "neighbours", "batch_size"])
def test_zero_order_search_counts_must_be_positive(knob):
    with pytest.raises(rs.RewardsteerError, match=rf"^zero_order_search: {knob} must be a positive integer, got 0"):
        rs.zero_order_search(Identity(3), FunctionReward(lambda x, c: x.sum(1), "sum"), progress=False, **{knob: 0})


def test_sphere_neighbours_keep_the_pivots_dtype():
    pivot = torch.randn(2, 5, dtype=torch.float64)
    out = sphere_neighbours(pivot, 3, 0.9, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64
    cos = torch.nn.functional.cosine_similarity(out, pivot[:, None], dim=-1)
    torch.testing.assert_close(cos, torch.full((2, 3), 0.9, dtype=torch.float64), atol=1e-6, rtol=0)
    assert sphere_neighbours(pivot.to(torch.bfloat16), 3, 0.9, torch.Generator()).dtype == torch.bfloat16


def test_best_of_n_trace_counts_drawn_and_skips_nan_candidates():
    def holey(x, c):  # NaN for every candidate whose first coordinate is positive
        s = x.sum(1)
        return torch.where(x[:, 0] > 0, torch.full_like(s, float("nan")), s)

    seen = []
    result = rs.best_of_n(Identity(4), FunctionReward(holey, "holey"), n=3, candidates=40, batch_size=16, seed=2,
                          progress=False, callback=lambda s: seen.append(s["scores"].clone()))
    assert [row["drawn"] for row in result.trace] == [16, 32, 40]
    everything = torch.cat(seen)
    finite = everything[torch.isfinite(everything)]
    assert torch.equal(result.scores, finite.topk(3).values) and (result.samples[:, 0] <= 0).all()
    assert result.spent["skipped"] == int((~torch.isfinite(everything)).sum()) > 0
    assert [row["best"] for row in result.trace][-1] == pytest.approx(float(finite.topk(3).values.mean()))
    few = rs.best_of_n(Identity(4), FunctionReward(lambda x, c: torch.full_like(x[:, 0], math.nan), "nan"), n=2,
                       candidates=4, progress=False)
    assert len(few.scores) == 2 and (few.scores == -math.inf).all()  # NaN ranks last, never first


@pytest.mark.parametrize("name", ["best_of_n", "random_search"])
def test_candidate_search_contracts(name):
    """A shared condition reaches the reward and the judges; a per-output condition is refused; a non-differentiable
    reward is fine; the initial samples are the first n candidates drawn; one trace row per batch."""
    seen, drawn = [], []
    frozen = FunctionReward(lambda x, c: seen.append(c) or x.sum(1) * c, "frozen", differentiable=False)
    knobs = dict(n=2, candidates=4, batch_size=3) if name == "best_of_n" else dict(n=2, iters=2, candidates=4)
    result = rs.METHODS[name](Identity(3), frozen, cond=3, progress=False, heldout={"judge": frozen},
                              callback=lambda s: drawn.append(s["samples"].clone()), **knobs)
    assert seen and all(int(c) == 3 for c in seen)
    assert torch.equal(result.initial_samples, drawn[0][:2]) and [row["iteration"] for row in result.trace] == [0, 1]
    with pytest.raises(rs.RewardsteerError, match=rf"^{name} draws every candidate for one shared condition"):
        rs.METHODS[name](Identity(3), frozen, cond=[3, 7], progress=False, **knobs)
    for knob in ("candidates", "batch_size" if name == "best_of_n" else "iters"):
        with pytest.raises(rs.RewardsteerError, match=rf"^{name}: {knob} must be a positive integer, got 0"):
            rs.METHODS[name](Identity(3), frozen, progress=False, **{**knobs, knob: 0})


def test_random_search_may_keep_every_candidate_and_best_of_n_spends_reward_calls_exactly():
    exact = rs.random_search(Identity(3), FunctionReward(lambda x, c: x.sum(1), "sum"), n=4, iters=2, candidates=2,
                             progress=False)  # iters·candidates = n: every candidate is kept
    assert len(exact.samples) == 4
    result = rs.best_of_n(Costly(3, 3), FunctionReward(lambda x, c: x.sum(1), "sum"), n=1, candidates=8, batch_size=4,
                          budget=rs.Budget(reward_calls=5), progress=False)
    assert result.stopped == "budget:reward_calls" and (result.spent["reward_calls"], result.spent["nfe"]) == (5, 15)
