"""Best-of-N and random search over the initial noise (Ma et al. 2025, "Inference-time scaling for
diffusion models beyond scaling denoising steps", §3: random search is best-of-N with a verifier)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import Budget, Meter
from ..core import as_generator
from ..errors import RewardsteerError
from .common import (
    build_result,
    check_positive,
    finite_or_neg_inf,
    generate_and_score,
    prepare,
    run_guarded,
    score_heldout,
    trace_entry,
)


class TopK:
    """The k best candidates seen so far; NaN scores rank last and never displace a finite one."""

    def __init__(self, k: int):
        self.k, self.scores = k, None

    def update(self, scores, samples, noises, members: dict) -> None:
        scores = finite_or_neg_inf(scores)
        if self.scores is not None:
            scores = torch.cat([self.scores, scores])
            samples, noises = torch.cat([self.samples, samples]), torch.cat([self.noises, noises])
            members = {k: torch.cat([self.members[k], v]) for k, v in members.items()}
        keep = scores.topk(min(self.k, scores.shape[0])).indices
        self.scores, self.samples, self.noises = scores[keep], samples[keep], noises[keep]
        self.members = {k: v[keep] for k, v in members.items()}


def best_of_n(generator, reward, *, cond: Any = None, n: int = 16, k: int = 1, batch_size: int = 64,
              budget: Budget | None = None, seed: int | torch.Generator = 0,
              heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
              progress: bool = True):
    """Draw n noises, generate, score, keep the best k (best-of-N / rejection sampling; Nakano et al. 2021,
    Ma et al. 2025). Candidates are generated `batch_size` at a time, so memory does not grow with n.
    `cond` is shared by all candidates. A budget shrinks the last chunk so the run spends it exactly.
    """
    check_positive(n=n, k=k, batch_size=batch_size)
    if isinstance(cond, torch.Tensor) and cond.numel() > 1:
        raise RewardsteerError("best_of_n takes one condition shared by all candidates; run it once per condition")
    reward, heldout = prepare(reward, heldout, need_grad=False, method="best_of_n")
    rng = as_generator(seed)
    meter = Meter(budget, next(generator.parameters()).device)
    top, initial, trace = TopK(k), {}, []
    bar = tqdm(total=n, disable=not progress, desc="best_of_n", leave=False)

    def loop():
        drawn = 0
        while drawn < n:
            m = meter.units_that_fit(min(batch_size, n - drawn), nfe=generator.nfe_per_call, reward_calls=1)
            if m == 0:
                return meter.stop_reason(nfe=generator.nfe_per_call, reward_calls=1) or "budget"
            z = generator.sample_noise(m, rng)
            x, obj, members = generate_and_score(generator, reward, z, cond, meter, batch_size)
            if not initial:
                first = slice(0, min(k, m))
                initial.update(samples=x[first], scores=obj[first], heldout=score_heldout(heldout, x[first], cond, meter))
            top.update(obj, x, z, members)
            top.heldout = score_heldout(heldout, top.samples, cond, meter)
            drawn += m
            trace.append(trace_entry(len(trace), meter, obj, members, top.heldout, best=top.scores, drawn=drawn))
            bar.update(m)
            bar.set_postfix(best=f"{float(top.scores.max()):.3f}")
            if callback is not None and (callback({"method": "best_of_n", "iteration": len(trace) - 1,
                                                   "samples": x, "scores": obj, "best_scores": top.scores,
                                                   "meter": meter}) or {}).get("stop"):
                return "callback"
        return "completed"

    def finish(stopped):
        bar.close()
        config = {"n": n, "k": k, "batch_size": batch_size, "seed": seed if isinstance(seed, int) else None}
        return build_result("best_of_n", top, initial, trace, meter, stopped, config)

    return run_guarded(loop, finish)


def random_search(generator, reward, *, cond: Any = None, rounds: int = 4, candidates_per_round: int = 16,
                  k: int = 1, budget: Budget | None = None, seed: int | torch.Generator = 0,
                  heldout: Mapping[str, Any] | None = None, callback=None, progress: bool = True):
    """Random search (Ma et al. 2025): `rounds` rounds of fresh candidates, global best kept. A recipe over
    `best_of_n` with one round per chunk, so its trace has one row per round."""
    check_positive(rounds=rounds, candidates_per_round=candidates_per_round)
    result = best_of_n(generator, reward, cond=cond, n=rounds * candidates_per_round, k=k,
                       batch_size=candidates_per_round, budget=budget, seed=seed, heldout=heldout,
                       callback=callback, progress=progress)
    result.method = "random_search"
    return result
