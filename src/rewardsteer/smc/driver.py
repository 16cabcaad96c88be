"""The particle loop FK steering, DAS and best-of-N over trajectories share, and the pieces SVDD reuses.

Notation: a `Sampler` step i maps x_i -> x_{i+1} ~ p(· | x_i, x̂0(x_i)), its `distribution`: N(m_i, s_i²) for
Gaussian samplers, the unmasking law for masked discrete diffusion (`masked`), one loop for both;
r_i = r(decode(x̂0(x_i))) on "scored" steps. A kernel defines a twist log φ_i per particle (it may depend
on the particle's path) and optionally a guided proposal q = N(m_i + s_i²·c_i·∇_{x_i} r_i, s_i²). The loop
is twisted SMC (Wu et al. 2023, "Practical and asymptotically exact conditional sampling in diffusion
models", Alg. 1), with incremental weights
    w_i = φ_i / φ_{i−1}                        at a scored step (FK: φ_i / φ_{i−1} = G_i, the potential)
    w_{i→i+1} = p(x_{i+1} | x_i) / q(x_{i+1} | x_i)   after a guided proposal
    w_T = exp(β·r(x_T)) / φ_last               the final reweighting: the target is p(x)·exp(β·r(x))
so the weighted particles target p(x)·exp(β·r(x)) whatever the intermediate twists were.
Cost: one step on B·K particles is B·K NFE; a scored step B·K reward calls (and B·K backward passes
when the proposal is guided); the final sample is scored once (B·K reward calls).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import Budget, Meter
from ..core import Sampler, make_rng, select_cond
from ..errors import RewardsteerError
from ..plumbing import build_result, prepare, run_guarded, score, score_heldout, trace_entry
from ..wrap import check_budget, check_cond, check_count
from ..wrap import sampler as as_checked_sampler
from .core import Weights, check_smc, resample, take

PICKS = ("best", "sample")


class Kernel:
    """What one particle method adds to the loop; the base kernel scores nothing and never reweights."""

    name = "particles"
    need_grad = False  # a guided proposal needs ∇_{x_i} r(x̂0(x_i))
    beta = 0.0  # the target is p(x)·exp(beta·r(x))
    resample = True  # False: particles never resample (independent guided trajectories)

    def scored(self, i: int) -> bool:
        return False

    def twist(self, i: int, r: torch.Tensor, phi: torch.Tensor, carry: dict) -> torch.Tensor:
        """log φ_i (B, K) from the rewards r_i (B, K) and the previous log φ; may update `carry`, the
        per-particle path statistics (gathered with the particles on resampling)."""
        return phi

    def guidance(self, i: int) -> float:
        """c_i of an importance-corrected guided proposal N(m_i + s_i²·c_i·∇r, s_i²), weighted by p/q (DAS)."""
        return 0.0

    def drift(self, i: int, grad: torch.Tensor, dist) -> torch.Tensor | None:
        """A shift of the transition's mean from ∇_{x_i} r (N, ...), applied without importance weights: plain
        guidance, a biased sampler (`reward_guidance`); None for none."""
        return None


def reference(sampler: Sampler) -> torch.Tensor:
    """A tensor that carries the sampler's device and dtype (a parameter, else a buffer)."""
    for t in (*sampler.parameters(), *sampler.buffers()):
        return t
    return torch.zeros(())


def expand_cond(cond: Any, b: int, k: int) -> Any:
    """A per-slot condition (B,) repeated for the B·K flattened particles; shared conditions pass."""
    if isinstance(cond, torch.Tensor) and cond.ndim > 0 and cond.shape[0] == b:
        return cond.repeat_interleave(k, 0)
    return cond


def evaluate(sampler, reward, x: torch.Tensor, i: int, cond: Any, meter: Meter, chunk: int, scored: bool,
             grad: bool = False):
    """x̂0 for flat particles x (N, ...), `chunk` at a time; on scored steps also r (N,), the members and,
    with `grad`, ∇_x r(x̂0(x)) (zero where r or its gradient is not finite)."""
    n = x.shape[0]
    x0s, rs, mems, grads = [], [], {}, []
    for s in range(0, n, chunk):
        xc, c = x[s:s + chunk].detach(), select_cond(cond, slice(s, s + chunk), n)
        with torch.set_grad_enabled(grad):
            if grad:
                xc.requires_grad_(True)
            x0 = sampler.predict_x0(xc, i, c)
            meter.charge(nfe=xc.shape[0])
            if scored:
                r, mem = score(reward, sampler.decode(x0), c, meter)
                rs.append(r.detach().double())
                for key, v in mem.items():
                    mems.setdefault(key, []).append(v.detach().float())
            if grad:
                ok = torch.isfinite(r)
                g = torch.autograd.grad(r[ok].sum(), xc, allow_unused=True)[0] if ok.any() else None
                g = torch.zeros_like(xc) if g is None else torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                meter.charge(backward=xc.shape[0])
                grads.append(g.detach())
        x0s.append(x0.detach())
    out = SimpleNamespace(x0=torch.cat(x0s), r=None, members={}, grad=None)
    if scored:
        out.r, out.members = torch.cat(rs), {key: torch.cat(v) for key, v in mems.items()}
    if grad:
        out.grad = torch.cat(grads)
    return out


def score_chunks(reward, samples: torch.Tensor, cond: Any, meter: Meter, chunk: int):
    """r (N,) in float64 and the members {name: (N,)} for decoded samples, `chunk` at a time."""
    n, rs, mems = samples.shape[0], [], {}
    for s in range(0, n, chunk):
        r, mem = score(reward, samples[s:s + chunk], select_cond(cond, slice(s, s + chunk), n), meter)
        rs.append(r.detach().double())
        for key, v in mem.items():
            mems.setdefault(key, []).append(v.detach().float())
    return torch.cat(rs), {key: torch.cat(v) for key, v in mems.items()}


def log_p_over_q(eps: torch.Tensor, std: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """log N(x'; m, s²) − log N(x'; m + s²h, s²) at x' = m + s²h + s·ε, per particle (N,).

    Elementwise [(sε)² − (sε + s²h)²] / (2s²) = −s·ε·h − s²h²/2: finite, and 0 where s = 0.
    """
    return (-(std * eps * h) - 0.5 * std**2 * h**2).flatten(1).double().sum(1)


def pick_per_slot(r: torch.Tensor, logw: torch.Tensor | None, pick: str, rng: torch.Generator) -> torch.Tensor:
    """(B,) particle index per slot: the highest reward ("best") or one draw from the weights ("sample")."""
    if pick == "best" or logw is None:
        return torch.where(torch.isfinite(r), r, torch.full_like(r, -math.inf)).argmax(1)
    return resample(logw, 1, "multinomial", rng)[:, 0]


def rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One particle per slot: t (B, K, ...), idx (B,) -> (B, ...)."""
    return take(t, idx[:, None])[:, 0]


def fork(rng: torch.Generator) -> torch.Generator:
    """A copy of a generator's state: draws from it leave the original's stream as it was."""
    g = torch.Generator(device=rng.device)
    g.set_state(rng.get_state())
    return g


@torch.no_grad()
def plain_samples(sampler: Sampler, reward, heldout: Mapping[str, Any], b: int, cond: Any, rng: torch.Generator,
                  chunk: int, device) -> tuple[dict, Meter]:
    """The "before" of every particle method: b plain samples (the sampler's own steps from x_0; no reward, no
    weights, no selection), drawn from `rng` (a fork of the run's generator: same model, same seed), scored by
    the reward and every held-out monitor. Returns the `initial` dict and the meter that counted it (the run
    reports its NFE as `baseline_nfe`, never charged to the budget)."""
    meter = Meter(None, device)
    x = sampler.initial_state(b, rng)
    torch.randint(2**62, (1,), generator=rng, device=rng.device)  # as a run draws its resampling seed: so the
    # baseline is exactly trajectory_best_of_n(particles=1) at the same seed
    for i in range(sampler.num_steps):
        x0 = evaluate(sampler, reward, x, i, cond, meter, chunk, scored=False).x0
        dist = sampler.distribution(x, i, x0)
        x = dist.sample(None if dist.deterministic else dist.draw_noise(rng))
    samples = sampler.decode(x)
    r, _ = score_chunks(reward, samples, cond, meter, chunk)
    return dict(samples=samples.detach(), scores=r.float(), heldout=score_heldout(heldout, samples, cond, meter)), meter


def start_meter(budget: Budget | None, device, baseline: Meter) -> Meter:
    """The run's meter, started after the baseline: its NFE and held-out calls are reported, never charged."""
    meter = Meter(budget, device)
    meter.baseline_nfe, meter.heldout_calls = baseline.nfe, baseline.heldout_calls
    return meter


def run_particles(sampler: Sampler, reward, kernel: Kernel, *, cond: Any, n: int, particles: int,
                  ess_threshold: float, resampling: str, pick: str, chunk: int | None, budget: Budget | None,
                  seed: int | torch.Generator, heldout: Mapping[str, Any] | None,
                  callback: Callable[[dict], dict | None] | None, progress: bool, config: dict):
    """Run B = n slots of K = `particles` particles through every sampler step under `kernel`; return one
    `pick` per slot as a Result. The callback gets, after each scored step and once at the end ("final":
    True), the particles (B, K, ...) (x_i in model space; at the end the decoded samples), their unnormalized
    log-weights (B, K), ESS and log Ẑ (B,)."""
    check_count(kernel.name, n=n)
    check_smc(particles, ess_threshold, resampling)
    if pick not in PICKS:
        raise RewardsteerError(f"{kernel.name}: pick must be one of {', '.join(PICKS)}; got '{pick}'")
    sampler = as_checked_sampler(sampler, kernel.name)
    cond = check_cond(cond, kernel.name, n, sampler)
    b, k, steps = n, particles, sampler.num_steps
    first = next((i for i in range(steps) if kernel.scored(i)), None)
    if first is None:  # nothing is scored before the end: the least that yields outputs is the whole run
        check_budget(kernel.name, budget, f"the full run of n·particles = {b * k} particles", nfe=steps * b * k,
                     reward_calls=b * k)
    else:
        check_budget(kernel.name, budget, f"the first scored step of n·particles = {b * k} particles",
                     nfe=(first + 1) * b * k, reward_calls=b * k, **({"backward": b * k} if kernel.need_grad else {}))
    reward, heldout = prepare(reward, heldout, need_grad=kernel.need_grad, method=kernel.name)
    ref = reference(sampler)
    chunk = b * k if chunk is None else chunk
    check_count(kernel.name, chunk=chunk)
    rng = make_rng(seed, ref.device)
    # 0. the "before": b plain samples of the same sampler at the same seed (a fork of the run's generator)
    initial, base = plain_samples(sampler, reward, heldout, b, cond, fork(rng), chunk, ref.device)
    # 1. x_0 (Gaussian noise, or all [mask] tokens): (B, K, *state) particles, one noise stream for the run
    x = sampler.initial_state(b * k, rng).unflatten(0, (b, k))
    resample_rng = make_rng(int(torch.randint(2**62, (1,), generator=rng, device=rng.device)), ref.device)
    cond_flat = expand_cond(cond, b, k)
    meter, weights = start_meter(budget, ref.device, base), Weights(b, k, ref.device)
    st = SimpleNamespace(x=x, noise=x.clone(), phi=weights.logw.clone(), dead=torch.zeros(b, k, dtype=torch.bool,
                         device=ref.device), carry={}, last=None, final=None)
    trace = []
    bar = tqdm(total=steps, disable=not progress, desc=kernel.name, leave=False)

    def finite_or_dead(r):
        """A NaN reward kills its particle (weight 0, counted as skipped); the twist sees 0 in its place."""
        bad = ~torch.isfinite(r)
        meter.skipped += int(bad.sum())
        st.dead |= bad
        return torch.where(bad, torch.zeros_like(r), r)

    def record(i, out, x0, r, final=False):
        """Trace row, held-out scores of each slot's current best, callback; True means stop. x0 is (B, K, ...)
        x0-predictions in model space, or at the end (`final`) the decoded samples."""
        decode = (lambda t: t) if final else sampler.decode
        held = score_heldout(heldout, decode(rows(x0, pick_per_slot(r, None, "best", resample_rng))), cond, meter)
        e = weights.ess()
        trace.append(trace_entry(i, meter, r.flatten(), out.members, held, ess=float(e.mean()),
                                 ess_min=float(e.min()), log_z=float(weights.log_z.mean()), final=final))
        if callback is None:
            return False
        state = {"method": kernel.name, "iteration": i, "final": final, "particles": x0 if final else st.x,
                 "x0_pred": x0, "scores": r, "log_weights": weights.logw, "ess": e, "log_z": weights.log_z,
                 "meter": meter}
        return bool((callback(state) or {}).get("stop"))

    def loop():
        for i in range(steps):
            scored = kernel.scored(i)
            cost = b * k
            if (reason := meter.stop_reason(nfe=cost, reward_calls=cost if scored else 0,
                                            backward=cost if scored and kernel.need_grad else 0)) is not None:
                return reason
            flat = st.x.flatten(0, 1)  # (B·K, *state)
            out = evaluate(sampler, reward, flat, i, cond_flat, meter, chunk, scored, scored and kernel.need_grad)
            x0 = out.x0.unflatten(0, (b, k))  # (B, K, ...): x̂0 per particle
            grad = out.grad.view_as(st.x) if out.grad is not None else None
            if scored:
                r = out.r.view(b, k)
                # 2. twist and incremental weight w_i = φ_i / φ_{i−1} (FK: the potential G_i)
                phi = kernel.twist(i, finite_or_dead(r), st.phi, st.carry)
                weights.add(phi - st.phi, st.dead)
                st.phi = phi
                out.members = {key: v.view(b, k) for key, v in out.members.items()}
                st.last = SimpleNamespace(x0=x0, r=r, members=out.members)
                stop = record(i, out, x0, r)
                # 3. adaptive resampling: ancestors for the slots with ESS < threshold·K
                idx, mask = (weights.maybe_resample(ess_threshold, resampling, resample_rng) if kernel.resample
                             else (None, torch.zeros(b, dtype=torch.bool, device=ref.device)))
                trace[-1]["resampled"] = float(mask.double().mean())
                if idx is not None:
                    st.x, x0, st.noise, st.phi, st.dead = (take(t, idx) for t in (st.x, x0, st.noise, st.phi, st.dead))
                    grad = take(grad, idx) if grad is not None else None
                    st.carry = {key: take(v, idx) for key, v in st.carry.items()}
                if stop:
                    return "callback"
            # 4. propose x_{i+1} from the sampler's transition; where guided (Gaussian steps only)
            #    x_{i+1} = m_i + s_i²·c_i·∇r + s_i·ε, weighted by p/q
            dist = sampler.distribution(st.x.flatten(0, 1), i, x0.flatten(0, 1))
            eps = dist.draw_noise(rng)
            drift = kernel.drift(i, grad.flatten(0, 1), dist) if grad is not None else None
            if grad is not None and kernel.guidance(i) != 0:
                h = kernel.guidance(i) * grad.flatten(0, 1)
                nxt = dist.mean + dist.std**2 * h + dist.std * eps
                weights.add(log_p_over_q(eps, dist.std, h).view(b, k), st.dead)
            elif drift is not None:  # plain guidance: x_{i+1} = m_i + drift + s_i·ε, no weights
                nxt = dist.mean + drift + dist.std * eps
            else:
                nxt = dist.sample(eps)
            st.x = nxt.view_as(st.x)
            bar.update(1)
        if (reason := meter.stop_reason(reward_calls=b * k)) is not None:
            return reason
        # 5. final reweighting w_T = exp(β·r(x_T)) / φ_last
        samples = sampler.decode(st.x.flatten(0, 1))
        r, members = score_chunks(reward, samples, cond_flat, meter, chunk)
        r, out = r.view(b, k), SimpleNamespace(members={key: v.view(b, k) for key, v in members.items()})
        weights.add(kernel.beta * finite_or_dead(r) - st.phi, st.dead)
        weights.close()
        samples = samples.view(b, k, *samples.shape[1:])  # (B, K, C, H, W) decoded
        st.final = st.last = SimpleNamespace(x0=samples, r=r, members=out.members, decoded=True)
        return "callback" if record(steps, out, samples, r, final=True) else "completed"

    def finish(stopped):
        bar.close()
        last = st.last
        if last is None:
            raise RewardsteerError(f"{kernel.name} stopped ({stopped}) before any particle was scored; "
                                   f"one step costs {b * k} NFE: raise the budget or lower n·particles")
        logw = weights.logw if st.final is not None else None
        idx = pick_per_slot(last.r, logw, pick, resample_rng)
        samples = rows(last.x0, idx)
        if not getattr(last, "decoded", False):
            samples = sampler.decode(samples)
        best = SimpleNamespace(samples=samples.detach(), noises=rows(st.noise, idx), scores=rows(last.r, idx).float(),
                               members={key: rows(v, idx) for key, v in last.members.items()},
                               heldout=score_heldout(heldout, samples, cond, meter))
        cfg = {"n": n, "particles": particles, "ess_threshold": ess_threshold, "resampling": resampling,
               "pick": pick, "chunk": chunk, "steps": steps, "seed": seed if isinstance(seed, int) else None, **config}
        return build_result(kernel.name, best, initial, trace, meter, stopped, cfg)

    return run_guarded(loop, finish)
