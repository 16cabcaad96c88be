"""Zero-order search over the initial noise (Ma et al. 2025, "Inference-time scaling for diffusion
models beyond scaling denoising steps", §3.1 "Zero-Order Search")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import Budget, Meter
from ..core import make_rng, reference
from ..errors import RewardsteerError
from ..plumbing import (
    BestPerSlot,
    build_result,
    check_noise,
    finite_or_neg_inf,
    generate_and_score,
    prepare,
    run_guarded,
    score_heldout,
    trace_entry,
)
from ..wrap import check_budget, check_cond, check_count, one_step_generator


def sphere_neighbours(pivot: torch.Tensor, k: int, cosine: float, rng: torch.Generator) -> torch.Tensor:
    """k points per pivot at exactly `cosine` similarity to it and with its norm: (B, ...) -> (B, k, ...).

    Keeping the norm keeps candidates on the Gaussian's typical shell, where the generator was trained.
    """
    b = pivot.shape[0]
    p = pivot.flatten(1).float()  # (B, d)
    norm = p.norm(dim=1, keepdim=True)
    unit = p / norm
    u = torch.randn((b, k, p.shape[1]), generator=rng, device=rng.device).to(p)  # (B, k, d)
    u = u - (u * unit[:, None]).sum(-1, keepdim=True) * unit[:, None]  # orthogonal to the pivot
    u = u / u.norm(dim=-1, keepdim=True)
    sine = (1 - cosine**2) ** 0.5
    out = norm[:, None] * (cosine * unit[:, None] + sine * u)
    return out.reshape(b, k, *pivot.shape[1:]).to(pivot.dtype)


def zero_order_search(generator, reward, *, cond: Any = None, n: int = 1, iters: int = 10, neighbours: int = 4,
                      cosine: float = 0.95, batch_size: int = 64, noise: torch.Tensor | None = None,
                      budget: Budget | None = None, seed: int | torch.Generator = 0,
                      heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
                      progress: bool = True):
    """Zero-order search: keep a pivot noise per slot, score `neighbours` candidates on the sphere at
    cosine similarity `cosine` to it (defaults 4 and 0.95 as in Ma et al.), move to the best if it beats
    the pivot. `n` independent pivots run together; cost per iteration is n·neighbours evaluations.
    """
    check_count("zero_order_search", n=n, iters=iters, neighbours=neighbours, batch_size=batch_size)
    if not -1 < cosine < 1:
        raise RewardsteerError(f"zero_order_search: cosine must lie in (-1, 1), got {cosine}")
    generator = one_step_generator(generator, "zero_order_search")
    if noise is not None:
        noise = check_noise(noise, generator, "zero_order_search")
        n = noise.shape[0]
    cond = check_cond(cond, "zero_order_search", n, generator)
    npc = generator.nfe_per_call
    check_budget("zero_order_search", budget, f"n={n} pivots ({npc} NFE each)", nfe=n * npc, reward_calls=n)
    reward, heldout = prepare(reward, heldout, need_grad=False, method="zero_order_search")
    rng = make_rng(seed)
    meter = Meter(budget, reference(generator).device)
    pivots = noise.clone() if noise is not None else generator.sample_noise(n, rng)
    if isinstance(cond, torch.Tensor) and cond.ndim > 0:
        expanded_cond = cond.repeat_interleave(neighbours, 0)
    else:
        expanded_cond = cond
    best, initial, trace = BestPerSlot(), {}, []
    bar = tqdm(total=iters, disable=not progress, desc="zero_order_search", leave=False)

    def loop():
        x, obj, members = generate_and_score(generator, reward, pivots, cond, meter, batch_size)  # fits: check_budget
        held = score_heldout(heldout, x, cond, meter)
        initial.update(samples=x, scores=obj, heldout=held)
        best.update(obj, x, pivots, members, held)
        trace.append(trace_entry(0, meter, obj, members, held, best=best.scores))
        for it in range(1, iters + 1):
            cost = n * neighbours  # a whole iteration or none: every pivot gets its neighbours
            if (reason := meter.stop_reason(nfe=cost * npc, reward_calls=cost)) is not None:
                return reason
            cand = sphere_neighbours(best.noises, neighbours, cosine, rng)  # (n, K, ...)
            flat = cand.flatten(0, 1)
            x, obj, members = generate_and_score(generator, reward, flat, expanded_cond, meter, batch_size)
            scores = finite_or_neg_inf(obj).view(n, neighbours)
            pick = scores.argmax(1)  # best neighbour per pivot
            rows = torch.arange(n) * neighbours + pick.cpu()
            held = score_heldout(heldout, x[rows], cond, meter)
            best.update(obj[rows], x[rows], flat[rows], {k: v[rows] for k, v in members.items()}, held)
            trace.append(trace_entry(it, meter, obj[rows], {k: v[rows] for k, v in members.items()}, held,
                                     best=best.scores))
            bar.update(1)
            bar.set_postfix(best=f"{float(best.scores.mean()):.3f}")
            if callback is not None and (callback({"method": "zero_order_search", "iteration": it,
                                                   "pivots": best.noises, "scores": best.scores,
                                                   "meter": meter}) or {}).get("stop"):
                return "callback"
        return "completed"

    def finish(stopped):
        bar.close()
        config = {"n": n, "iters": iters, "neighbours": neighbours, "cosine": cosine, "batch_size": batch_size,
                  "seed": seed if isinstance(seed, int) else None}
        return build_result("zero_order_search", best, initial, trace, meter, stopped, config)

    return run_guarded(loop, finish)
