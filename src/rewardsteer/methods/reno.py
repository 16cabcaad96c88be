"""ReNO: reward-based noise optimization (Eyring et al. 2024, "ReNO: Enhancing one-step text-to-image
models through reward-based noise optimization").

Notation: z ∈ R^d is the initial noise, G the generator, r_i the reward members with weights w_i (the
reward's own `combine`), λ the regularization weight. Objective maximised per sample (ReNO eq. 4):
    J(z) = Σ_i w_i · r_i(G(z, c)) − λ · ( ½‖z‖² − (d − 1)·log‖z‖ )
where the bracket is the negative log-density of the chi distribution of ‖z‖ (eq. 5), computed in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import Budget, Meter
from ..core import make_rng, reference
from ..errors import RewardsteerError
from ..plumbing import BestPerSlot, build_result, check_noise, prepare, run_guarded, score, score_heldout, trace_entry
from ..wrap import check_budget, check_cond, check_count, one_step_generator


def prior_nll(z: torch.Tensor) -> torch.Tensor:
    """½‖z‖² − (d − 1)·log‖z‖ per sample, in fp32: minimal at ‖z‖ = √(d − 1) (ReNO eq. 5)."""
    flat = z.flatten(1).float()
    d = flat.shape[1]
    sq = flat.pow(2).sum(1)
    return 0.5 * sq - 0.5 * (d - 1) * sq.log()


def clip_per_sample(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Clip each sample's gradient to `max_norm`, so the noises of a batch stay independent runs."""
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (max_norm / norms).clamp(max=1.0)
    return grad * scale.view(-1, *([1] * (grad.ndim - 1)))


def reno(generator, reward, *, cond: Any = None, n: int = 1, iters: int = 50, lr: float = 5.0, reg: float = 0.01,
         optimizer: str = "sgd", momentum: float = 0.9, grad_clip: float | None = 0.1,
         noise: torch.Tensor | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
         heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
         progress: bool = True):
    """Gradient ascent on the initial noise of a one-step generator (ReNO, Eyring et al. 2024).

    Defaults follow ReNO: SGD with Nesterov momentum 0.9, lr 5, gradient-norm clipping 0.1 (per sample
    here), λ = `reg` = 0.01, 50 iterations; `optimizer="adam"` is the alternative. `n` noises are optimized
    together as independent runs; each keeps its best iterate by reward, never just the last. Evaluations:
    iters + 1 (the start and after every step), so NFE = n·(iters + 1)·nfe_per_call and backward = n·iters.
    A sample whose score or gradient is non-finite keeps its noise for that step (counted in `skipped`).
    """
    check_count("reno", n=n, iters=iters)
    if lr <= 0 or reg < 0:
        raise RewardsteerError(f"reno: lr must be > 0 and reg >= 0; got lr={lr}, reg={reg}")
    if optimizer not in ("sgd", "adam"):
        raise RewardsteerError(f"reno: optimizer must be 'sgd' or 'adam', got '{optimizer}'")
    generator = one_step_generator(generator, "reno")
    if noise is not None:
        noise = check_noise(noise, generator, "reno")
        n = noise.shape[0]
    cond = check_cond(cond, "reno", n, generator)
    npc = generator.nfe_per_call
    check_budget("reno", budget, f"n={n} samples ({npc} NFE each)", nfe=n * npc, reward_calls=n)
    reward, heldout = prepare(reward, heldout, need_grad=True, method="reno")
    rng = make_rng(seed)
    dtype = reference(generator).dtype
    init = noise if noise is not None else generator.sample_noise(n, rng)
    master = torch.promote_types(init.dtype, torch.float32)  # fp32 (or wider) master copy of the noise
    z = init.detach().to(master).clone().requires_grad_(True)
    opt = (torch.optim.SGD([z], lr=lr, momentum=momentum, nesterov=momentum > 0) if optimizer == "sgd"
           else torch.optim.Adam([z], lr=lr))
    meter = Meter(budget, z.device)
    best, initial, trace = BestPerSlot(), {}, []
    bar = tqdm(total=iters, disable=not progress, desc="reno", leave=False)

    def loop():
        for it in range(iters + 1):
            last = it == iters
            if not last and meter.stop_reason(nfe=2 * n * npc, backward=n, reward_calls=2 * n):
                last = True  # a step now could never be evaluated: make this evaluation the final one
            if (reason := meter.stop_reason(nfe=n * npc, reward_calls=n)) is not None:
                return reason
            with torch.set_grad_enabled(not last):
                x = generator(z.to(dtype), cond)
                meter.charge(nfe=n * npc)
                obj, members = score(reward, x, cond, meter)
                nll = prior_nll(z)
            held = score_heldout(heldout, x, cond, meter)
            if not initial:
                initial.update(samples=x.detach(), scores=obj.detach().float(), heldout=held)
            best.update(obj, x, z, members, held)
            finite = torch.isfinite(obj.detach())
            skipped = int((~finite).sum())
            if not last and finite.any():
                opt.zero_grad(set_to_none=True)
                loss = -(obj.float()[finite] - reg * nll[finite]).sum()
                loss.backward()
                meter.charge(backward=n)
                grad = z.grad
                bad = ~finite | ~torch.isfinite(grad.flatten(1)).all(1)
                grad[bad] = 0.0
                if grad_clip is not None:
                    z.grad = clip_per_sample(grad, grad_clip)
                before = z.detach().clone()
                opt.step()
                with torch.no_grad():
                    z[bad] = before[bad]  # a skipped sample keeps its noise
                skipped = int(bad.sum())
            meter.skipped += skipped
            trace.append(trace_entry(it, meter, obj, members, held, best=best.scores,
                                     z_norm=z.detach().flatten(1).norm(dim=1), prior_nll=nll.detach(),
                                     skipped=skipped))
            if it:
                bar.update(1)
            bar.set_postfix(score=f"{trace[-1]['score']:.3f}")
            if callback is not None and (callback({"method": "reno", "iteration": it, "z": z, "samples": x,
                                                   "scores": obj, "meter": meter}) or {}).get("stop"):
                return "callback"
            if last:
                return "completed" if it == iters else (meter.stop_reason(nfe=n * npc, backward=n, reward_calls=n)
                                                        or "budget")
        return "completed"

    def finish(stopped):
        bar.close()
        config = {"n": n, "iters": iters, "lr": lr, "reg": reg, "optimizer": optimizer, "momentum": momentum,
                  "grad_clip": grad_clip, "seed": seed if isinstance(seed, int) else None}
        return build_result("reno", best, initial, trace, meter, stopped, config)

    return run_guarded(loop, finish)
