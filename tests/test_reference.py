"""Reference checks: each method's maths against the paper's closed form, step by step, with tolerances that
separate the right formula from its plausible neighbours (d from d − 1, v/α from v·α, max from current)."""

import math
import os
import types
import warnings

import pytest
import torch

import rewardsteer as rs
from rewardsteer.core import FunctionReward
from rewardsteer.methods.common import BestPerSlot, finite_or_neg_inf, trace_entry
from rewardsteer.methods.reno import clip_per_sample, prior_nll
from rewardsteer.methods.search import sphere_neighbours
from rewardsteer.rewards import Ensemble
from rewardsteer.smc.das import DASKernel
from rewardsteer.smc.driver import log_p_over_q, pick_per_slot
from rewardsteer.smc.fk import FKKernel
from rewardsteer.toy import GaussianMixtureFlow, linear_reward
from tests.conftest import Costly, Identity

TOY = dict(weights=[0.7, 0.3], means=[-1.5, 1.5], stds=[0.5, 0.5])


# ---- ReNO's chi prior (Eyring et al. 2024, eq. 5) -------------------------------------------------------

@pytest.mark.parametrize("d", [2, 5, 64, 784])
def test_chi_prior_value_and_gradient_are_the_closed_form(d):
    """½‖z‖² − (d − 1)·log‖z‖ and its gradient z − (d − 1)·z/‖z‖², in float64 against float32; the same formula
    with d in place of d − 1 misses by ≥ 50 times the tolerance (value: log‖z‖, gradient: z/‖z‖²)."""
    g = torch.Generator().manual_seed(d)
    z = (torch.randn(6, d, generator=g) * torch.linspace(0.3, 2.0, 6)[:, None]).requires_grad_(True)
    nll = prior_nll(z)
    (grad,) = torch.autograd.grad(nll.sum(), z)
    zd = z.detach().double()
    norm = zd.norm(dim=1, keepdim=True)
    value = 0.5 * norm[:, 0] ** 2 - (d - 1) * norm[:, 0].log()
    expected = zd - (d - 1) * zd / norm**2
    tol_v, tol_g = 1e-5 * (1 + value.abs()), 2e-6 * (1 + expected.abs())
    assert ((nll.double() - value).abs() <= tol_v).all() and ((grad.double() - expected).abs() <= tol_g).all()
    wrong_v = 0.5 * norm[:, 0] ** 2 - d * norm[:, 0].log()  # d instead of d − 1
    wrong_g = zd - d * zd / norm**2
    assert ((nll.double() - wrong_v).abs() > 50 * tol_v).all()
    assert ((grad.double() - wrong_g).abs().amax(1) > 50 * tol_g.amax(1)).all()
    assert nll.dtype == torch.float32 and prior_nll(z.detach().half()).dtype == torch.float32
    assert prior_nll(z.detach().view(6, 1, d)).shape == (6,)  # per sample, whatever the noise shape


def test_reno_first_step_is_plain_gradient_ascent_on_reward_minus_prior():
    """momentum 0, no clipping: z₁ = z₀ + lr·(∇r − λ·(z₀ − (d − 1)·z₀/‖z₀‖²)) for r(z) = a·z."""
    d, lr, reg = 16, 0.3, 0.5
    a = torch.linspace(-1, 1, d)
    reward = FunctionReward(lambda z, c: z @ a, "linear")
    z0 = torch.randn(3, d, generator=torch.Generator().manual_seed(0))
    seen = []
    rs.reno(Identity(d), reward, noise=z0, iters=1, lr=lr, reg=reg, momentum=0.0, grad_clip=None, progress=False,
            callback=lambda s: seen.append(s["z"].detach().clone()))
    norm2 = z0.double().pow(2).sum(1, keepdim=True)
    expected = z0.double() + lr * (a.double() - reg * (z0.double() - (d - 1) * z0.double() / norm2))
    torch.testing.assert_close(seen[0].double(), expected, atol=1e-5, rtol=0)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # the last evaluation takes no step


def test_per_sample_clipping_caps_each_norm_and_keeps_directions():
    grad = torch.stack([torch.full((2, 3), 1.0), torch.full((2, 3), 1e-3), torch.zeros(2, 3)])
    out = clip_per_sample(grad, 0.5)
    norms = out.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([0.5, 1e-3 * math.sqrt(6), 0.0]))
    torch.testing.assert_close(out[1], grad[1])  # below the cap: unchanged


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


# ---- zero-order search (Ma et al. 2025, §3.1) -------------------------------------------------------------

@pytest.mark.parametrize("shape, cosine", [((5,), 0.95), ((1, 4, 4), 0.5), ((2, 3), -0.3)])
def test_sphere_neighbours_sit_at_the_cosine_with_the_pivots_norm(shape, cosine):
    g = torch.Generator().manual_seed(0)
    pivot = torch.randn(3, *shape, generator=g) * torch.tensor([0.5, 1.0, 3.0]).view(3, *[1] * len(shape))
    out = sphere_neighbours(pivot, 7, cosine, g)
    assert out.shape == (3, 7, *shape) and out.dtype == pivot.dtype
    p, q = pivot.flatten(1).double(), out.flatten(2).double()
    cos = torch.nn.functional.cosine_similarity(q, p[:, None], dim=-1)
    torch.testing.assert_close(cos, torch.full_like(cos, cosine), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.norm(dim=-1), p.norm(dim=1, keepdim=True).expand(3, 7), atol=1e-5, rtol=1e-6)
    # the k neighbours differ (independent directions on the circle of that cosine)
    assert torch.cdist(q[0], q[0]).triu(1)[torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)].min() > 1e-3


def test_zero_order_search_moves_to_the_best_neighbour_only_when_it_improves():
    d = 6
    a = torch.linspace(-1, 1, d)
    reward = FunctionReward(lambda z, c: -(z - 3 * a).pow(2).sum(1), "bowl")
    pivots = []
    result = rs.zero_order_search(Identity(d), reward, n=2, iters=6, neighbours=3, cosine=0.9, seed=1,
                                  progress=False, callback=lambda s: pivots.append(s["pivots"].clone()))
    start = result.initial_samples  # Identity: the samples are the noises
    chain = [start, *pivots]
    moved = 0
    for before, after in zip(chain, chain[1:]):
        cos = torch.nn.functional.cosine_similarity(before, after, dim=1)
        same = (before == after).all(1)
        assert (same | ((cos - 0.9).abs() < 1e-5)).all()  # either stayed or moved to a neighbour at cosine 0.9
        assert (same | ((before.norm(dim=1) - after.norm(dim=1)).abs() < 1e-4)).all()
        assert (reward(after) >= reward(before)).all()  # only moves that improve
        moved += int((~same).sum())
    assert moved > 0
    torch.testing.assert_close(result.samples, pivots[-1])
    torch.testing.assert_close(result.scores, reward(pivots[-1]))


# ---- FK steering (Singhal et al. 2025, §3.2) ----------------------------------------------------------------

POTENTIAL = {  # log G_i / λ from the rewards r_s (s ≤ i) of one particle's path, steps counted from the noise
    "current": lambda rs_: rs_[-1],
    "diff": lambda rs_: rs_[-1] - (rs_[-2] if len(rs_) > 1 else torch.zeros_like(rs_[-1])),
    "max": lambda rs_: torch.stack(rs_).max(0).values,
    "sum": lambda rs_: torch.stack(rs_).sum(0),
}


@pytest.mark.parametrize("potential", list(POTENTIAL))
def test_fk_incremental_weights_are_the_papers_potentials_step_by_step(potential):
    """No resampling (ESS threshold below 1/K): the log-weights after scored step i grow by exactly λ·log G_i of the
    paper's formula, and the final step adds λ·r(x_T) − Σ_i λ·log G_i. The four potentials differ on this run by
    far more than the 1e-9 tolerance (checked below), so a potential swapped for another fails."""
    lam = 2.0
    toy = GaussianMixtureFlow(**TOY, num_steps=9)
    states = []
    rs.fk_steering(toy, linear_reward([1.0]), n=2, particles=3, lam=lam, potential=potential, interval=3,
                   window=(1, 9), ess_threshold=0.01, seed=4, progress=False,
                   callback=lambda s: states.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()
                                                     if k != "meter"}))
    steps = [s["iteration"] for s in states]
    assert steps == [1, 4, 7, 9]  # scored where (i − first) % interval == 0 inside the window, then the end
    rewards, before = [], torch.zeros(2, 3, dtype=torch.float64)
    for s in states[:-1]:
        rewards.append(s["scores"])
        inc = s["log_weights"] - before
        torch.testing.assert_close(inc, lam * POTENTIAL[potential](rewards), atol=1e-9, rtol=0)
        others = [p for p in POTENTIAL if p != potential and not (len(rewards) == 1 and {p, potential} <= {
            "current", "diff", "max", "sum"})]
        for other in others:
            assert (inc - lam * POTENTIAL[other](rewards)).abs().max() > 1e-3, other
        before = s["log_weights"]
    final = states[-1]
    total = sum(lam * POTENTIAL[potential](rewards[: j + 1]) for j in range(len(rewards)))
    torch.testing.assert_close(final["log_weights"] - before, lam * final["scores"] - total, atol=1e-9, rtol=0)
    torch.testing.assert_close(final["log_weights"], lam * final["scores"], atol=1e-9, rtol=0)


def test_fk_kernel_potentials_on_a_hand_worked_path():
    r1, r2, r3 = (torch.tensor([[v]], dtype=torch.float64) for v in (1.0, 3.0, 2.0))
    expected = {"current": [1, 3, 2], "diff": [1, 2, -1], "max": [1, 3, 3], "sum": [1, 4, 6]}
    for potential, incs in expected.items():
        kernel, carry, phi = FKKernel(0.5, potential, 1, (0, 3)), {}, torch.zeros(1, 1, dtype=torch.float64)
        for i, (r, inc) in enumerate(zip((r1, r2, r3), incs)):
            new = kernel.twist(i, r, phi, carry)
            assert float(new - phi) == pytest.approx(0.5 * inc), (potential, i)
            phi = new
    kernel = FKKernel(1.5, "max", 2, (1, 5))
    assert [i for i in range(8) if kernel.scored(i)] == [1, 3] and kernel.beta == 1.5


# ---- DAS (Kim et al. 2025) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.008, 0.3])
def test_das_tempering_schedule(gamma):
    kernel = DASKernel(alpha=0.25, gamma=gamma, steps=20)
    for i in range(20):
        assert kernel.lam(i) == pytest.approx(min((1 + gamma) ** i - 1, 1.0), abs=1e-15)
    assert kernel.lam(0) == 0.0 and kernel.lam(20) == 1.0 and kernel.lam(25) == 1.0  # λ_T = 1 completes the tilt
    assert kernel.beta == 4.0 and kernel.scored(3)
    r = torch.tensor([[2.0, -1.0]])
    torch.testing.assert_close(kernel.twist(5, r, None, {}), kernel.lam(5) * r / 0.25)  # (A) log φ_i = λ_i·r_i/α
    assert kernel.guidance(5) == pytest.approx(kernel.lam(6) / 0.25)  # (B) toward the next target


def test_das_weights_follow_the_schedule_when_the_reward_is_flat():
    """A constant reward c has no gradient, so p/q = 1 and the weight increments are (λ_i − λ_{i−1})·c/α, summing
    to c/α at the end."""
    c, alpha, gamma, steps = 0.7, 0.5, 0.3, 6
    toy = GaussianMixtureFlow(**TOY, num_steps=steps)
    reward = FunctionReward(lambda x, cond=None: 0.0 * x[:, 0] + c, "flat")
    logws = []
    rs.das(toy, reward, n=1, particles=2, alpha=alpha, gamma=gamma, ess_threshold=0.01, progress=False,
           callback=lambda s: logws.append(s["log_weights"].clone()))
    lam = [min((1 + gamma) ** i - 1, 1.0) for i in range(steps)] + [1.0]
    incs = torch.stack([b - a for a, b in zip([torch.zeros(1, 2, dtype=torch.float64)] + logws, logws)])
    expected = torch.tensor([lam[i] - (lam[i - 1] if i else 0.0) for i in range(steps + 1)], dtype=torch.float64)
    torch.testing.assert_close(incs[:, 0, 0], expected * c / alpha, atol=1e-12, rtol=0)
    torch.testing.assert_close(logws[-1], torch.full((1, 2), c / alpha, dtype=torch.float64), atol=1e-12, rtol=0)


def test_log_p_over_q_is_the_gaussian_density_ratio():
    g = torch.Generator().manual_seed(0)
    eps, h = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    std = torch.tensor([0.3, 0.7, 1.2], dtype=torch.float64)
    m = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x = m + std**2 * h + std * eps
    p, q = torch.distributions.Normal(m, std), torch.distributions.Normal(m + std**2 * h, std)
    torch.testing.assert_close(log_p_over_q(eps, std, h), (p.log_prob(x) - q.log_prob(x)).sum(1))
    assert torch.equal(log_p_over_q(eps, torch.zeros(3, dtype=torch.float64), h), torch.zeros(4, dtype=torch.float64))


# ---- SVDD (Li et al. 2024) -------------------------------------------------------------------------------------

def test_svdd_selects_candidates_with_softmax_of_v_over_alpha():
    """Over 3000 chains with M = 3 candidates, the number of chains that keep their best candidate is compared
    with its expectation under softmax(v/α), Σ_chains p_best, by a z-test at 4.5 standard deviations.
    softmax(v·α) and the plain argmax are more than 20 s.d. off on this run (checked below)."""
    alpha, b, m = 0.5, 3000, 3
    toy = GaussianMixtureFlow(**TOY, num_steps=2)
    seen = []
    rs.svdd(toy, linear_reward([1.0]), n=b, particles=m, alpha=alpha, seed=0, progress=False,
            callback=lambda s: seen.append((s["scores"].clone(), s["selected"].clone())))
    v, idx = seen[0]
    best = v.argmax(1)
    kept_best = float((idx == best).sum())

    def z_score(p):
        p_best = p[torch.arange(b), best].clamp(1e-6, 1 - 1e-6)
        return (kept_best - p_best.sum()) / (p_best * (1 - p_best)).sum().sqrt()

    assert abs(z_score(torch.softmax(v / alpha, 1))) < 4.5
    assert abs(z_score(torch.softmax(v * alpha, 1))) > 20
    assert abs(z_score(torch.nn.functional.one_hot(best, m).double())) > 20


def test_svdd_without_alpha_keeps_the_argmax_and_its_x0():
    toy = GaussianMixtureFlow(**TOY, num_steps=3)
    seen = []
    result = rs.svdd(toy, linear_reward([1.0]), n=5, particles=4, seed=2, progress=False,
                     callback=lambda s: seen.append({k: s[k].clone() for k in ("scores", "selected", "x0_pred")}))
    assert len(seen) == 2  # steps 0 and 1 are stochastic; the last one (std 0) lands on the kept x̂0
    for s in seen:
        assert torch.equal(s["selected"], s["scores"].argmax(1))
    last = seen[-1]
    torch.testing.assert_close(result.samples, toy.decode(last["x0_pred"][torch.arange(5), last["selected"]]))
    torch.testing.assert_close(result.scores, linear_reward([1.0])(result.samples).float())


def test_pick_per_slot_best_ignores_nan_and_sample_follows_the_weights():
    r = torch.tensor([[0.1, float("nan"), 0.3], [2.0, 1.0, float("-inf")]], dtype=torch.float64)
    assert pick_per_slot(r, None, "sample", torch.Generator()).tolist() == [2, 0]  # no weights: the best
    logw = torch.tensor([[-math.inf, 0.0, -math.inf], [-math.inf, -math.inf, 0.0]], dtype=torch.float64)
    assert pick_per_slot(r, logw, "sample", torch.Generator().manual_seed(0)).tolist() == [1, 2]
    assert pick_per_slot(r, logw, "best", torch.Generator()).tolist() == [2, 0]


# ---- classifier rewards and shared scaffolding -------------------------------------------------------------------

def test_classifier_rewards_are_log_probabilities():
    from rewardsteer.nets import Classifier
    from rewardsteer.rewards import ClassifierReward

    torch.manual_seed(0)
    net = Classifier(width=8, feature_dim=16).eval().requires_grad_(False)
    x = torch.rand(5, 1, 28, 28)
    per_class = torch.stack([ClassifierReward(net, "c", target=t)(x) for t in range(10)], 1)  # (B, 10)
    assert (per_class <= 0).all()
    torch.testing.assert_close(per_class.exp().sum(1), torch.ones(5))  # Σ_c p(c | x) = 1
    torch.testing.assert_close(per_class, torch.log_softmax(net(x), 1))
    by_cond = ClassifierReward(net, "c")(x, torch.arange(5))  # target from a per-sample condition
    torch.testing.assert_close(by_cond, per_class[torch.arange(5), torch.arange(5)])
    scores, hits = ClassifierReward(net, "c", target=3).score_and_hits(x)
    torch.testing.assert_close(scores, per_class[:, 3])
    assert torch.equal(hits, per_class.argmax(1) == 3)


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


# ---- knobs reach the method: documented defaults, config, condition, chunking, progress, errors -------------------

DEFAULTS = {  # the config a call with no knobs records: the defaults the docstrings and README state (the papers')
    "reno": dict(n=1, iters=50, lr=5.0, reg=0.01, optimizer="sgd", momentum=0.9, grad_clip=0.1, seed=0),
    "zero_order_search": dict(n=1, iters=10, neighbours=4, cosine=0.95, seed=0),
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
    from rewardsteer.flow import FlowSampler
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


def test_reno_and_zero_order_search_start_from_given_noise():
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    reward = FunctionReward(lambda x, c: x.sum(1), "sum")
    for name in ("reno", "zero_order_search"):
        result = rs.METHODS[name](Identity(5), reward, noise=z, iters=1, progress=False)
        assert torch.equal(result.initial_samples, z) and result.config["n"] == 3, name
        single = rs.METHODS[name](Identity(5), reward, noise=z[:1], iters=1, progress=False)  # a batch of one
        assert torch.equal(single.initial_samples, z[:1]), name


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reno_is_the_hand_written_loop(optimizer):
    """Three steps of ReNO against torch's own optimizer on J = r − λ·prior, with per-sample gradient clipping
    (SGD with Nesterov momentum 0.9, lr 5, clip 0.1, λ 0.01: the paper's defaults; or Adam)."""
    d, iters = 12, 3
    a = torch.linspace(-2, 2, d)
    reward = FunctionReward(lambda z, c: (z * a).sin().sum(1), "wavy")
    z0 = torch.randn(2, d, generator=torch.Generator().manual_seed(3))
    lr = 5.0 if optimizer == "sgd" else 0.05
    seen = []
    result = rs.reno(Identity(d), reward, noise=z0, iters=iters, lr=lr, optimizer=optimizer, progress=False,
                     callback=lambda s: seen.append(s["z"].detach().clone()))
    z = z0.clone().requires_grad_(True)
    opt = (torch.optim.SGD([z], lr=lr, momentum=0.9, nesterov=True) if optimizer == "sgd"
           else torch.optim.Adam([z], lr=lr))
    expected, nlls = [], []
    for _ in range(iters):
        opt.zero_grad()
        nll = prior_nll(z)
        nlls.append(float(nll.detach().mean()))
        (-(reward(z) - 0.01 * nll).sum()).backward()
        z.grad = clip_per_sample(z.grad, 0.1)
        opt.step()
        expected.append(z.detach().clone())
    for got, want in zip(seen, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [row["prior_nll"] for row in result.trace[:iters]] == pytest.approx(nlls, rel=1e-5)
    # z_norm is logged after the iteration's step
    assert [row["z_norm"] for row in result.trace[:iters]] == pytest.approx([float(e.norm(dim=1).mean()) for e in
                                                                             expected], rel=1e-5)
    assert result.spent["backward"] == 2 * iters and result.trace[-1]["skipped"] == 0


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


# ---- the MNIST flow's prior and guidance (flow.py) ------------------------------------------------------------------

class LabelEcho(torch.nn.Module):
    """A stand-in UNet: v = 0.5·x + t + (the class label, or the weighted mean label for soft classes)."""

    def forward(self, x, t, y):
        label = (y * torch.arange(y.shape[1], dtype=y.dtype)).sum(1) if y.is_floating_point() else y.to(x.dtype)
        return 0.5 * x + t.view(-1, 1, 1, 1) + label.view(-1, 1, 1, 1)


def test_mixture_prior_is_softmax_of_orthonormal_projections():
    from rewardsteer.flow import _code_directions, mixture_weights

    p = _code_directions(784)
    torch.testing.assert_close(p @ p.T, torch.eye(10), atol=1e-5, rtol=0)  # orthonormal rows: P·u ~ N(0, I₁₀)
    code = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for tau in (0.1, 1.0):
        w = mixture_weights(code, tau)
        assert w.shape == (6, 11) and (w[:, 10] == 0).all()
        torch.testing.assert_close(w[:, :10], torch.softmax(code.flatten(1) @ p.T / tau, 1))
    assert mixture_weights(code).max(1).values.mean() > mixture_weights(code, 1.0).max(1).values.mean()  # τ = 0.1
    wide = mixture_weights(code.double())  # a float64 code gets float64 weights
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide.float(), mixture_weights(code), atol=1e-5, rtol=1e-4)


def test_flow_sampler_guidance_prediction_and_code_channel():
    from rewardsteer.flow import FlowSampler, mixture_weights, split_code

    s = FlowSampler(LabelEcho(), num_steps=4, guidance=3.0, eta=1.0)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t = 0.25
    # classifier-free guidance: v_u + g·(v_c − v_u) with the null class 10 as the unconditional half
    torch.testing.assert_close(s.velocity(x, t, 3), 0.5 * x + t + 10 + 3.0 * (3 - 10))
    torch.testing.assert_close(s.velocity(x, t, None), 0.5 * x + t + 10)  # no code: the null class, unguided
    code = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    soft = (mixture_weights(code) * torch.arange(11)).sum(1).view(2, 1, 1, 1)
    torch.testing.assert_close(s.velocity(x, t, None, code), 0.5 * x + t + 10 + 3.0 * (soft - 10))
    one = FlowSampler(LabelEcho(), num_steps=4, guidance=1.0)
    torch.testing.assert_close(one.velocity(x, t, 4), 0.5 * x + t + 4)  # guidance 1: the conditional model alone
    two = FlowSampler(LabelEcho(), num_steps=4, guidance=2.0)
    torch.testing.assert_close(two.velocity(x, t, 4), 0.5 * x + t + 10 + 2.0 * (4 - 10))
    warm = FlowSampler(LabelEcho(), num_steps=4, guidance=3.0, temperature=1.0)  # the prior's temperature is used
    soft_warm = (mixture_weights(code, 1.0) * torch.arange(11)).sum(1).view(2, 1, 1, 1)
    torch.testing.assert_close(warm.velocity(x, t, None, code), 0.5 * x + t + 10 + 3.0 * (soft_warm - 10))
    assert not torch.allclose(soft_warm, soft)
    state = torch.cat([x, code], 1)
    image, c = split_code(state)
    assert torch.equal(image, x) and torch.equal(c, code) and split_code(x)[1] is None
    x0 = s.predict_x0(state, 1, None)  # x̂ = x_t + (1 − t)·v, the code carried along
    torch.testing.assert_close(x0[:, :1], x + 0.75 * s.velocity(x, 0.25, None, code))
    assert torch.equal(x0[:, 1:], code)
    mean, std = s.transition(state, 1, x0)
    from rewardsteer.core import ddim_posterior

    c_x0, c_eps, sd = ddim_posterior(0.25, 0.75, 0.5, 0.5, 1.0)
    eps = (x - 0.25 * x0[:, :1]) / 0.75
    torch.testing.assert_close(mean[:, :1], c_x0 * x0[:, :1] + c_eps * eps)
    assert torch.equal(mean[:, 1:], code) and std.flatten().tolist() == pytest.approx([sd, 0.0])


def test_class_labels_accept_none_ints_and_rows():
    from rewardsteer.flow import NULL_CLASS, class_labels

    assert class_labels(None, 3, "cpu").tolist() == [NULL_CLASS] * 3
    assert class_labels(4, 2, "cpu").tolist() == [4, 4]
    assert class_labels(torch.tensor([0, 10]), 2, "cpu").tolist() == [0, 10]
    floats = class_labels(torch.tensor([3.0, 7.0]), 2, "cpu")  # float classes index the embedding as longs
    assert floats.dtype == torch.long and floats.tolist() == [3, 7]
    for bad in (torch.tensor([1, 2, 3]), torch.tensor([-1, 2]), 11):
        with pytest.raises(rs.RewardsteerError, match="cond must be None"):
            class_labels(bad, 2, "cpu")


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_svdd_trace_initial_samples_and_nan_candidates(alpha):
    """The trace's ESS is that of softmax(v/α) (α = None: of softmax(v)) and "kept" the mean kept value; the initial
    samples are the first candidates of the first step; a NaN candidate is skipped and never kept."""
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
    first = seen[0]
    torch.testing.assert_close(result.initial_samples, toy.decode(first["x0_pred"][:, 0]))
    torch.testing.assert_close(result.initial_scores, first["scores"][:, 0].float())


@pytest.mark.parametrize("step", ["constant", "variance"])
def test_reward_guidance_shifts_each_mean_by_the_papers_step(step):
    """Guided and unguided runs share x_0 and the step noise, so after one step they differ by exactly the drift:
    scale·∇r (DPS, "constant") or scale·s_0²·∇r ("variance"), with ∇r = ∇_{x_0} r(x̂0(x_0)). scale = 0 is the plain
    sampler; steps outside the window are not guided."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward, scale = linear_reward([1.0]), 0.3
    runs = {}
    for s in (0.0, scale):
        states = []
        runs[s] = rs.reward_guidance(toy, reward, n=3, scale=s, step=step, seed=5, progress=False,
                                     callback=lambda st: states.append(st["particles"].clone()))
        runs[s].states = states
    x0 = runs[0.0].states[0].flatten(0, 1).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(reward(toy.predict_x0(x0, 0)).sum(), x0)
    std = toy.distribution(x0.detach(), 0, toy.predict_x0(x0.detach(), 0)).std
    drift = scale * g if step == "constant" else scale * std**2 * g
    torch.testing.assert_close((runs[scale].states[1] - runs[0.0].states[1]).flatten(0, 1), drift)
    plain = rs.trajectory_best_of_n(toy, reward, n=3, particles=1, seed=5, progress=False)
    torch.testing.assert_close(runs[0.0].samples, plain.samples)
    from rewardsteer.smc.guidance import GuidanceKernel

    kernel = GuidanceKernel(2.0, step, (1, 3))
    dist = toy.distribution(x0.detach(), 1, toy.predict_x0(x0.detach(), 1))
    assert kernel.drift(0, g, dist) is None and kernel.drift(3, g, dist) is None and kernel.scored(1)
    expected = 2.0 * g if step == "constant" else 2.0 * dist.std**2 * g
    torch.testing.assert_close(kernel.drift(2, g, dist), expected)


def test_common_scaffolding_checks_and_partial_results():
    from rewardsteer.budget import Meter
    from rewardsteer.methods.common import build_result, check_noise, model_dtype, prepare, run_guarded
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


class NanGradForFirst(torch.autograd.Function):
    """Identity forward; the first sample's gradient comes back NaN (its score stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[0] = float("nan")
        return g


def test_reno_keeps_the_noise_of_a_sample_whose_gradient_is_not_finite():
    seen = []
    result = rs.reno(Identity(4), FunctionReward(lambda x, c: NanGradForFirst.apply(x).sum(1), "nan-grad"), n=2,
                     iters=3, progress=False, callback=lambda s: seen.append(s["z"].detach().clone()))
    assert all(torch.equal(z[0], seen[0][0]) for z in seen) and not torch.equal(seen[-1][1], seen[0][1])
    assert result.spent["skipped"] == 3 and [row["skipped"] for row in result.trace] == [1, 1, 1, 0]


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
    assert [c.tolist() for c in seen["reward"]] == [per_candidate.tolist()] * 2 + [cond.tolist()]
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


def test_svdd_on_a_deterministic_sampler_is_its_ode_sample():
    ode = GaussianMixtureFlow(**TOY, num_steps=4, eta=0.0)
    result = rs.svdd(ode, FunctionReward(lambda x, c: x[:, 0], "x"), n=3, particles=2, progress=False)
    torch.testing.assert_close(result.samples, ode.sample(result.noises, None))
    assert result.spent["reward_calls"] == 3  # no step had candidates to score: only the final samples
    assert torch.equal(result.initial_samples, result.samples)  # (this crashed with a KeyError before)
    assert result.spent["nfe"] == 12  # the ODE's own 4 per sample (each step's x̂0 was stale before)


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


@pytest.mark.parametrize("step", ["variance", "constant"])
def test_reward_guidance_first_step_moves_by_the_scaled_gradient(step):
    """x_1 = m_0 + c·∇r(x̂0(x_0)) + s_0·ε with c = scale·s_0² (step="variance") or scale (step="constant"): the same
    seed with scale 0 draws the same x_0 and ε, so the two x_1 differ by exactly the drift."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward = FunctionReward(lambda x, c: (x[:, 0] - 0.3) ** 2, "quadratic")  # a gradient that varies with x̂0
    runs = {}
    for scale in (0.0, 0.7):
        seen = []
        rs.reward_guidance(toy, reward, n=3, scale=scale, step=step, seed=1, progress=False,
                           callback=lambda s: seen.append(s["particles"][:, 0].clone()))
        runs[scale] = seen
    x = runs[0.0][0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(toy.predict_x0(x, 0, None)).sum(), x)
    std = toy.distribution(x.detach(), 0, toy.predict_x0(x.detach(), 0, None)).std
    c = 0.7 * (std**2 if step == "variance" else 1.0)
    assert torch.equal(runs[0.7][0], x.detach()) and float(std) not in (0.0, 1.0)
    torch.testing.assert_close(runs[0.7][1] - runs[0.0][1], c * grad)


# ---- masked diffusion (MDLM, Sahoo et al. 2024) ----------------------------------------------------------------------

def test_masked_reverse_step_stays_masked_with_probability_s_over_t():
    """Linear schedule α_t = 1 − t: q(z_s = [mask] | z_t = [mask]) = (1 − α_s)/(1 − α_t) = s/t (MDLM eq. 7)."""
    from rewardsteer.toy import IndependentTokensToy

    toy = IndependentTokensToy([[0.6, 0.3, 0.1]], num_steps=4)
    x = toy.initial_state(2, None)
    for i in range(4):
        t, s = 1 - i / 4, 1 - (i + 1) / 4
        assert toy.distribution(x, i, toy.predict_x0(x, i)).stay == pytest.approx(s / t)
    assert toy.state_shape == (1,) and x.dtype == torch.long and torch.equal(toy.sample_noise(2, None), x)
    from rewardsteer.masked import MaskedDiffusionSampler

    weightless = MaskedDiffusionSampler(torch.nn.Identity(), length=3, num_steps=2, mask_id=5)  # no parameters
    assert torch.equal(weightless.initial_state(2, None), torch.full((2, 3), 5))


def test_unmask_transition_edges_and_the_last_token():
    """Deterministic exactly when nothing is masked or nothing may unmask; noise None leaves the state; stay = 0
    makes staying masked impossible and stay = 1 makes filling impossible; the last token of the vocabulary can be
    drawn (it holds most of the mass here)."""
    from rewardsteer.masked import UnmaskTransition

    logp = torch.tensor([[[0.1, 0.1, 0.8, 0.0]]], dtype=torch.float64).log()  # tokens 0..2, [mask] = 3
    masked, done = torch.tensor([[3]]), torch.tensor([[1]])
    assert not UnmaskTransition(masked, logp, 0.5, 3).deterministic
    assert UnmaskTransition(done, logp, 0.5, 3).deterministic and UnmaskTransition(masked, logp, 1.0, 3).deterministic
    assert torch.equal(UnmaskTransition(masked, logp, 0.5, 3).sample(None), masked)
    assert UnmaskTransition(masked, logp, 0.0, 3).log_prob(masked).item() == -math.inf
    assert UnmaskTransition(masked, logp, 1.0, 3).log_prob(torch.tensor([[2]])).item() == -math.inf
    assert UnmaskTransition(masked, logp, 1.0, 3).log_prob(masked).item() == 0.0
    assert UnmaskTransition(done, logp, 0.5, 3).log_prob(done).item() == 0.0  # an unmasked token stays, surely
    law = UnmaskTransition(masked, logp[:, :, :3].clone(), 0.0, 3).repeat(4000)  # no [mask] column at all
    draws = law.sample(law.draw_noise(torch.Generator().manual_seed(0)))
    share = (draws == 2).double().mean().item()
    assert abs(share - 0.8) < 4.5 * math.sqrt(0.8 * 0.2 / 4000)


def test_masked_sampler_calls_the_denoiser_only_for_rows_that_changed():
    from rewardsteer.toy import IndependentTokensToy

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


# ---- the particle driver's contracts (smc/driver.py) ------------------------------------------------------------------

PARTICLE_METHODS = ["fk_steering", "das", "trajectory_best_of_n", "reward_guidance"]


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
    flat, seen = cond.repeat_interleave(3), torch.cat(calls)
    assert len(seen) % 6 == 0 and torch.equal(seen, flat.repeat(len(seen) // 6))  # chunks of 4 + 2, in order
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


def test_das_first_step_drift_is_s_squared_times_lambda_over_alpha_times_the_gradient():
    """Two DAS runs that differ only in α share x_0 and ε, so their x_1 differ by s_0²·(λ_1/α₁ − λ_1/α₂)·∇r."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward = FunctionReward(lambda x, c: (x[:, 0] - 0.3) ** 2, "quadratic")
    runs = {}
    for alpha in (0.5, 2.0):
        seen = []
        rs.das(toy, reward, n=3, particles=1, alpha=alpha, gamma=0.3, seed=1, progress=False,
               callback=lambda s: seen.append(s["particles"][:, 0].clone()))
        runs[alpha] = seen
    x = runs[0.5][0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(toy.predict_x0(x, 0, None)).sum(), x)
    std = toy.distribution(x.detach(), 0, toy.predict_x0(x.detach(), 0, None)).std
    coef = DASKernel(0.5, 0.3, 4).guidance(0) - DASKernel(2.0, 0.3, 4).guidance(0)
    assert coef != 0 and torch.equal(runs[2.0][0], x.detach())
    torch.testing.assert_close(runs[0.5][1] - runs[2.0][1], std**2 * coef * grad)
