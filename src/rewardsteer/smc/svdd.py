"""SVDD: soft value-based decoding (Li et al. 2024, "Derivative-free guidance in continuous and discrete
diffusion models with soft value-based decoding").

Notation: B chains (one per sample), M candidates per step; step i draws x_{i+1}^{(m)} ~ p(· | x_i) for
m = 1..M, values v^{(m)} = r(decode(x̂0(x_{i+1}^{(m)}))) (the posterior-mean value approximation, SVDD-PM),
and keeps one candidate: argmax_m v^{(m)} (α → 0), or one draw from softmax(v/α) (the soft-optimal
policy's importance weights at temperature α). The kept candidate's x̂0 serves the next step's transition,
so a chain costs 1 + M·(stochastic steps) NFE. Derivative-free: any reward works.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import Budget
from ..core import Sampler, make_rng
from ..errors import RewardsteerError
from ..plumbing import build_result, prepare, run_guarded, score, score_heldout, trace_entry
from ..wrap import check_budget, check_cond, check_count
from ..wrap import sampler as as_checked_sampler
from .core import check_alpha, check_smc, ess, resample
from .driver import evaluate, expand_cond, fork, plain_samples, reference, rows, start_meter


def svdd(sampler: Sampler, reward, *, cond: Any = None, n: int = 1, particles: int = 8, alpha: float | None = None,
         chunk: int | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
         heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
         progress: bool = True):
    """Soft value-based decoding (SVDD-PM, Li et al. 2024): at every stochastic step each of the n chains
    draws M = `particles` candidates, scores the reward of their x0-predictions (all B·M at once, `chunk`
    at a time) and keeps the best (`alpha=None`) or one drawn ∝ exp(v/α). Cost: n NFE to start, then
    n·M NFE and n·M reward calls per stochastic step, and n reward calls for the final samples.
    """
    check_count("svdd", n=n)
    check_smc(particles)
    if alpha is not None:
        check_alpha(alpha)
    sampler = as_checked_sampler(sampler, "svdd")
    cond = check_cond(cond, "svdd", n, sampler)
    b, m, steps = n, particles, sampler.num_steps
    check_budget("svdd", budget, f"the start and one step of n·particles = {b * m} candidates", nfe=b + b * m,
                 reward_calls=b * m)
    reward, heldout = prepare(reward, heldout, need_grad=False, method="svdd")
    ref = reference(sampler)
    chunk = b * m if chunk is None else chunk
    check_count("svdd", chunk=chunk)
    rng = make_rng(seed, ref.device)
    # 0. the "before": n plain samples of the same sampler at the same seed (a fork of the run's generator)
    initial, base = plain_samples(sampler, reward, heldout, b, cond, fork(rng), chunk, ref.device)
    # 1. x_0 (Gaussian noise, or all [mask] tokens): (B, *state) chains
    x = sampler.initial_state(b, rng)
    select_rng = make_rng(int(torch.randint(2**62, (1,), generator=rng, device=rng.device)), ref.device)
    cand_cond = expand_cond(cond, b, m)
    meter = start_meter(budget, ref.device, base)
    st = SimpleNamespace(x=x, noise=x.clone(), x0=None, last=None)
    trace = []
    bar = tqdm(total=steps, disable=not progress, desc="svdd", leave=False)

    def loop():
        if (reason := meter.stop_reason(nfe=b)) is not None:
            return reason
        st.x0 = evaluate(sampler, reward, st.x, 0, cond, meter, chunk, scored=False).x0
        for i in range(steps):
            dist = sampler.distribution(st.x, i, st.x0)
            if dist.deterministic:  # every candidate would be the same: take the step
                moved, st.x = st.x, dist.sample(None)
                bar.update(1)
                # x̂0 afresh for a state that moved (an ODE step; a masked state that stays keeps its x̂0), except
                # after the last step, where x is the sample itself
                if i + 1 < steps and not torch.equal(moved, st.x):
                    if (reason := meter.stop_reason(nfe=b)) is not None:
                        return reason
                    st.x0 = evaluate(sampler, reward, st.x, i + 1, cond, meter, chunk, scored=False).x0
                continue
            if (reason := meter.stop_reason(nfe=b * m, reward_calls=b * m)) is not None:
                return reason
            # 2. M candidates per chain from the sampler's own transition: (B, M, *state)
            cand = dist.repeat(m)
            cand = cand.sample(cand.draw_noise(rng)).unflatten(0, (b, m))
            out = evaluate(sampler, reward, cand.flatten(0, 1), i + 1, cand_cond, meter, chunk, scored=True)
            v = out.r.view(b, m)  # (B, M) values
            bad = ~torch.isfinite(v)
            meter.skipped += int(bad.sum())
            v = torch.where(bad, torch.full_like(v, -math.inf), v)
            # 3. keep one candidate: argmax, or a draw from softmax(v/α)
            logw = v if alpha is None else v / alpha
            idx = v.argmax(1) if alpha is None else resample(logw, 1, "multinomial", select_rng)[:, 0]
            x0c = out.x0.unflatten(0, (b, m))
            members = {key: rows(t.view(b, m), idx) for key, t in out.members.items()}
            st.x, st.x0 = rows(cand, idx), rows(x0c, idx)
            st.last = SimpleNamespace(samples=sampler.decode(st.x0), r=rows(v, idx), members=members)
            held = score_heldout(heldout, st.last.samples, cond, meter)
            e = ess(logw)
            trace.append(trace_entry(i, meter, v.flatten(), {k: t.flatten() for k, t in out.members.items()}, held,
                                     kept=st.last.r, ess=float(e.mean()), ess_min=float(e.min())))
            bar.update(1)
            if callback is not None and (callback({"method": "svdd", "iteration": i, "candidates": cand,
                                                   "x0_pred": x0c, "scores": v, "selected": idx,
                                                   "meter": meter}) or {}).get("stop"):
                return "callback"
        if (reason := meter.stop_reason(reward_calls=b)) is not None:
            return reason
        samples = sampler.decode(st.x)
        r, members = score(reward, samples, cond, meter)
        meter.skipped += int((~torch.isfinite(r)).sum())
        st.last = SimpleNamespace(samples=samples, r=r.detach().double(),
                                  members={k: v.detach().float() for k, v in members.items()})
        held = score_heldout(heldout, samples, cond, meter)
        trace.append(trace_entry(steps, meter, r, members, held, final=True))
        return "completed"

    def finish(stopped):
        bar.close()
        last = st.last
        if last is None:
            raise RewardsteerError(f"svdd stopped ({stopped}) before any candidate was scored; one step costs "
                                   f"{b * m} NFE: raise the budget or lower n·particles")
        best = SimpleNamespace(samples=last.samples.detach(), noises=st.noise, scores=last.r.float(),
                               members=last.members, heldout=score_heldout(heldout, last.samples, cond, meter))
        cfg = {"n": n, "particles": particles, "alpha": alpha, "chunk": chunk, "steps": steps,
               "seed": seed if isinstance(seed, int) else None}
        return build_result("svdd", best, initial, trace, meter, stopped, cfg)

    return run_guarded(loop, finish)
