"""Reference checks: each method's maths against the paper's closed form, step by step, with tolerances that
separate the right formula from its plausible neighbours (d from d − 1, v/α from v·α, max from current).
The contracts around the maths (knobs, budgets, conditions, errors) are in test_method_contracts.py."""

import math

import pytest
import torch

import rewardsteer as rs
from rewardsteer.bundled.toy import GaussianMixtureFlow, linear_reward
from rewardsteer.core import FunctionReward
from rewardsteer.methods.reno import clip_per_sample, prior_nll
from rewardsteer.methods.search import sphere_neighbours
from rewardsteer.smc.das import DASKernel
from rewardsteer.smc.driver import log_p_over_q, pick_per_slot
from rewardsteer.smc.fk import FKKernel
from tests.conftest import TOY, Identity

# ---- ReNO's chi prior and update (Eyring et al. 2024, eq. 5) -------------------------------------------------------------


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

# ---- zero-order search (Ma et al. 2025, §3.1) ----------------------------------------------------------------------------


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

# ---- FK steering (Singhal et al. 2025, §3.2) -----------------------------------------------------------------------------


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

# ---- DAS (Kim et al. 2025) -----------------------------------------------------------------------------------------------


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


def test_das_first_step_drift_is_s_squared_times_lambda_over_alpha_times_the_gradient():
    """Two DAS runs that differ only in α share x_0, the noise and x_1 (step 0 has no gradient: the toy's x̂0 at
    t = 1 is the prior mean), so their x_2 differ by s_1²·(λ_2/α₁ − λ_2/α₂)·∇r(x̂0(x_1)). One particle: no
    resampling, and the weights do not move the particles."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward = FunctionReward(lambda x, c: (x[:, 0] - 0.3) ** 2, "quadratic")
    runs = {}
    for alpha in (0.5, 2.0):
        seen = []
        rs.das(toy, reward, n=3, particles=1, alpha=alpha, gamma=0.3, seed=1, progress=False,
               callback=lambda s: seen.append(s["particles"][:, 0].clone()))
        runs[alpha] = seen
    x = runs[0.5][1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(toy.predict_x0(x, 1, None)).sum(), x)
    std = toy.distribution(x.detach(), 1, toy.predict_x0(x.detach(), 1, None)).std
    coef = DASKernel(0.5, 0.3, 4).guidance(1) - DASKernel(2.0, 0.3, 4).guidance(1)
    assert coef != 0 and torch.equal(runs[2.0][1], x.detach())
    assert float((std**2 * coef * grad).abs().min()) > 1e-3  # a drift the comparison can see
    torch.testing.assert_close(runs[0.5][2] - runs[2.0][2], std**2 * coef * grad)

# ---- SVDD (Li et al. 2024) -----------------------------------------------------------------------------------------------


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


def test_svdd_on_a_deterministic_sampler_is_its_ode_sample():
    ode = GaussianMixtureFlow(**TOY, num_steps=4, eta=0.0)
    result = rs.svdd(ode, FunctionReward(lambda x, c: x[:, 0], "x"), n=3, particles=2, progress=False)
    torch.testing.assert_close(result.samples, ode.sample(result.noises, None))
    assert result.spent["reward_calls"] == 3  # no step had candidates to score: only the final samples
    assert torch.equal(result.initial_samples, result.samples)  # (this crashed with a KeyError before)
    assert result.spent["nfe"] == 12  # the ODE's own 4 per sample (each step's x̂0 was stale before)


def test_pick_per_slot_best_ignores_nan_and_sample_follows_the_weights():
    r = torch.tensor([[0.1, float("nan"), 0.3], [2.0, 1.0, float("-inf")]], dtype=torch.float64)
    assert pick_per_slot(r, None, "sample", torch.Generator()).tolist() == [2, 0]  # no weights: the best
    logw = torch.tensor([[-math.inf, 0.0, -math.inf], [-math.inf, -math.inf, 0.0]], dtype=torch.float64)
    assert pick_per_slot(r, logw, "sample", torch.Generator().manual_seed(0)).tolist() == [1, 2]
    assert pick_per_slot(r, logw, "best", torch.Generator()).tolist() == [2, 0]

# ---- reward guidance (universal guidance; Chung et al. 2023 DPS step) ----------------------------------------------------


@pytest.mark.parametrize("step", ["constant", "variance"])
def test_reward_guidance_shifts_each_mean_by_the_papers_step(step):
    """Guided and unguided runs share x_0, x_1 (at t = 1 the toy's x̂0 is the prior mean, whatever x_0: no gradient)
    and the step noise, so after step 1 they differ by exactly its drift: scale·∇r (DPS, "constant") or
    scale·s_1²·∇r ("variance"), with ∇r = ∇_{x_1} r(x̂0(x_1)). scale = 0 is the plain sampler; steps outside the
    window are not guided."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward, scale = linear_reward([1.0]), 0.3
    runs = {}
    for s in (0.0, scale):
        states = []
        runs[s] = rs.reward_guidance(toy, reward, n=3, scale=s, step=step, seed=5, progress=False,
                                     callback=lambda st: states.append(st["particles"].clone()))
        runs[s].states = states
    assert torch.equal(runs[scale].states[1], runs[0.0].states[1])
    x1 = runs[0.0].states[1].flatten(0, 1).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(reward(toy.predict_x0(x1, 1)).sum(), x1)
    std = toy.distribution(x1.detach(), 1, toy.predict_x0(x1.detach(), 1)).std
    drift = scale * g if step == "constant" else scale * std**2 * g
    assert float(drift.abs().min()) > 1e-3  # a drift the comparison can see
    torch.testing.assert_close((runs[scale].states[2] - runs[0.0].states[2]).flatten(0, 1), drift)
    plain = rs.trajectory_best_of_n(toy, reward, n=3, particles=1, seed=5, progress=False)
    torch.testing.assert_close(runs[0.0].samples, plain.samples)
    from rewardsteer.smc.guidance import GuidanceKernel

    kernel = GuidanceKernel(2.0, step, (1, 3))
    dist = toy.distribution(x1.detach(), 1, toy.predict_x0(x1.detach(), 1))
    assert kernel.drift(0, g, dist) is None and kernel.drift(3, g, dist) is None and kernel.scored(1)
    expected = 2.0 * g if step == "constant" else 2.0 * dist.std**2 * g
    torch.testing.assert_close(kernel.drift(2, g, dist), expected)


@pytest.mark.parametrize("step", ["variance", "constant"])
def test_reward_guidance_first_step_moves_by_the_scaled_gradient(step):
    """x_2 = m_1 + c·∇r(x̂0(x_1)) + s_1·ε with c = scale·s_1² (step="variance") or scale (step="constant"): the same
    seed with scale 0 draws the same x_0 and noise, step 0 has no gradient (the toy's x̂0 at t = 1 is the prior
    mean), so both runs share x_1 and their x_2 differ by exactly the drift of a quadratic reward."""
    toy = GaussianMixtureFlow(**TOY, num_steps=4)
    reward = FunctionReward(lambda x, c: (x[:, 0] - 0.3) ** 2, "quadratic")  # a gradient that varies with x̂0
    runs = {}
    for scale in (0.0, 0.7):
        seen = []
        rs.reward_guidance(toy, reward, n=3, scale=scale, step=step, seed=1, progress=False,
                           callback=lambda s: seen.append(s["particles"][:, 0].clone()))
        runs[scale] = seen
    x = runs[0.0][1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reward(toy.predict_x0(x, 1, None)).sum(), x)
    std = toy.distribution(x.detach(), 1, toy.predict_x0(x.detach(), 1, None)).std
    c = 0.7 * (std**2 if step == "variance" else 1.0)
    assert torch.equal(runs[0.7][1], x.detach()) and float(std) not in (0.0, 1.0)
    assert float((c * grad).abs().min()) > 1e-3  # a drift the comparison can see
    torch.testing.assert_close(runs[0.7][2] - runs[0.0][2], c * grad)

# ---- classifier rewards --------------------------------------------------------------------------------------------------


def test_classifier_rewards_are_log_probabilities():
    from rewardsteer.bundled.nets import Classifier
    from rewardsteer.rewards.base import ClassifierReward

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

# ---- the MNIST flow's prior and guidance (flow.py) -----------------------------------------------------------------------


class LabelEcho(torch.nn.Module):
    """A stand-in UNet: v = 0.5·x + t + (the class label, or the weighted mean label for soft classes)."""

    def forward(self, x, t, y):
        label = (y * torch.arange(y.shape[1], dtype=y.dtype)).sum(1) if y.is_floating_point() else y.to(x.dtype)
        return 0.5 * x + t.view(-1, 1, 1, 1) + label.view(-1, 1, 1, 1)


def test_mixture_prior_is_softmax_of_orthonormal_projections():
    from rewardsteer.bundled.flow import _code_directions, mixture_weights

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
    from rewardsteer.bundled.flow import FlowSampler, mixture_weights, split_code

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

# ---- masked diffusion (MDLM, Sahoo et al. 2024) --------------------------------------------------------------------------


def test_masked_reverse_step_stays_masked_with_probability_s_over_t():
    """Linear schedule α_t = 1 − t: q(z_s = [mask] | z_t = [mask]) = (1 − α_s)/(1 − α_t) = s/t (MDLM eq. 7)."""
    from rewardsteer.bundled.toy import IndependentTokensToy

    toy = IndependentTokensToy([[0.6, 0.3, 0.1]], num_steps=4)
    x = toy.initial_state(2, None)
    for i in range(4):
        t, s = 1 - i / 4, 1 - (i + 1) / 4
        assert toy.distribution(x, i, toy.predict_x0(x, i)).stay == pytest.approx(s / t)
    assert toy.state_shape == (1,) and x.dtype == torch.long and torch.equal(toy.sample_noise(2, None), x)
    from rewardsteer.bundled.masked import MaskedDiffusionSampler

    weightless = MaskedDiffusionSampler(torch.nn.Identity(), length=3, num_steps=2, mask_id=5)  # no parameters
    assert torch.equal(weightless.initial_state(2, None), torch.full((2, 3), 5))


def test_unmask_transition_edges_and_the_last_token():
    """Deterministic exactly when nothing is masked or nothing may unmask; noise None leaves the state; stay = 0
    makes staying masked impossible and stay = 1 makes filling impossible; the last token of the vocabulary can be
    drawn (it holds most of the mass here)."""
    from rewardsteer.bundled.masked import UnmaskTransition

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
