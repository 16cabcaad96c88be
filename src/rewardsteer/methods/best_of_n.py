"""Best-of-N and random search over the initial noise (Ma et al. 2025, "Inference-time scaling for
diffusion models beyond scaling denoising steps", §3: random search is best-of-N with a verifier)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tqdm.auto import tqdm

from ..budget import Budget, Meter
from ..core import make_rng, reference
from ..errors import RewardsteerError
from ..plumbing import build_result, finite_or_neg_inf, generate_and_score, prepare, run_guarded, score_heldout, trace_entry
from ..wrap import check_budget, check_cond, check_count, one_step_generator, renamed


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


def best_of_n(generator, reward, *, cond: Any = None, n: int | None = None, candidates: int | None = None,
              batch_size: int = 64, budget: Budget | None = None, seed: int | torch.Generator = 0,
              heldout: Mapping[str, Any] | None = None, callback: Callable[[dict], dict | None] | None = None,
              progress: bool = True, k: int | None = None, _method: str = "best_of_n"):
    """Draw `candidates` noises (N, default 16), generate, score, keep the best `n` (default 1) (best-of-N /
    rejection sampling; Nakano et al. 2021, Ma et al. 2025). Candidates are generated `batch_size` at a time,
    so memory does not grow with N. `cond` is shared by all candidates. A budget shrinks the last chunk so the
    run spends it exactly; a budget that cannot pay for n candidates is an error.

    Old spellings (one release, with a warning): `k=` for n; `best_of_n(n=N)` without `candidates=` keeps 1 of
    N candidates, as before.
    """
    n, candidates = _bon_counts("best_of_n", n, candidates, k)
    check_count("best_of_n", n=n, candidates=candidates, batch_size=batch_size)
    if candidates < n:
        raise RewardsteerError(f"best_of_n keeps the best n={n} of candidates={candidates}: draw at least n candidates "
                               f"(candidates >= {n}) or lower n")
    generator = one_step_generator(generator, "best_of_n")
    cond = check_cond(cond, "best_of_n", n, generator, shared_only=True)
    check_budget("best_of_n", budget, f"n={n} candidates ({generator.nfe_per_call} NFE each)",
                 nfe=n * generator.nfe_per_call, reward_calls=n)
    reward, heldout = prepare(reward, heldout, need_grad=False, method="best_of_n")
    rng = make_rng(seed)
    meter = Meter(budget, reference(generator).device)
    top, initial, trace = TopK(n), {}, []
    bar = tqdm(total=candidates, disable=not progress, desc=_method, leave=False)

    def loop():
        drawn = 0
        while drawn < candidates:
            m = meter.units_that_fit(min(batch_size, candidates - drawn), nfe=generator.nfe_per_call, reward_calls=1)
            if m == 0:
                return meter.stop_reason(nfe=generator.nfe_per_call, reward_calls=1) or "budget"
            z = generator.sample_noise(m, rng)
            x, obj, members = generate_and_score(generator, reward, z, cond, meter, batch_size)
            if not initial:
                first = slice(0, min(n, m))
                initial.update(samples=x[first], scores=obj[first], heldout=score_heldout(heldout, x[first], cond, meter))
            top.update(obj, x, z, members)
            top.heldout = score_heldout(heldout, top.samples, cond, meter)
            drawn += m
            trace.append(trace_entry(len(trace), meter, obj, members, top.heldout, best=top.scores, drawn=drawn))
            bar.update(m)
            bar.set_postfix(best=f"{float(top.scores.max()):.3f}")
            if callback is not None and (callback({"method": _method, "iteration": len(trace) - 1,
                                                   "samples": x, "scores": obj, "best_scores": top.scores,
                                                   "meter": meter}) or {}).get("stop"):
                return "callback"
        return "completed"

    def finish(stopped):
        bar.close()
        config = {"n": n, "candidates": candidates, "batch_size": batch_size,
                  "seed": seed if isinstance(seed, int) else None}
        return build_result(_method, top, initial, trace, meter, stopped, config)

    return run_guarded(loop, finish)


def random_search(generator, reward, *, cond: Any = None, n: int | None = None, iters: int | None = None,
                  candidates: int | None = None, budget: Budget | None = None, seed: int | torch.Generator = 0,
                  heldout: Mapping[str, Any] | None = None, callback=None, progress: bool = True,
                  rounds: int | None = None, candidates_per_round: int | None = None, k: int | None = None):
    """Random search (Ma et al. 2025): `iters` rounds (default 4) of `candidates` fresh candidates each
    (default 16), the best `n` (default 1) over all rounds kept. A recipe over `best_of_n` with one round per
    chunk, so its trace has one row per round. Old spellings (one release, with a warning): `rounds` (iters),
    `candidates_per_round` (candidates), `k` (n)."""
    for old, new, value in (("rounds", "iters", rounds), ("candidates_per_round", "candidates", candidates_per_round),
                            ("k", "n", k)):
        if value is not None:
            renamed("random_search", old, new)
    iters, candidates, n = (_either("random_search", new, old, oldv) for new, old, oldv in
                            ((iters, "rounds", rounds), (candidates, "candidates_per_round", candidates_per_round),
                             (n, "k", k)))
    iters, candidates, n = (4 if iters is None else iters), (16 if candidates is None else candidates), (1 if n is None else n)
    check_count("random_search", n=n, iters=iters, candidates=candidates)
    if iters * candidates < n:
        raise RewardsteerError(f"random_search keeps the best n={n} of iters·candidates = {iters * candidates}: "
                               "raise iters or candidates, or lower n")
    generator = one_step_generator(generator, "random_search")  # checked here, so errors name this method
    cond = check_cond(cond, "random_search", n, generator, shared_only=True)
    check_budget("random_search", budget, f"n={n} candidates ({generator.nfe_per_call} NFE each)",
                 nfe=n * generator.nfe_per_call, reward_calls=n)
    prepare(reward, heldout, need_grad=False, method="random_search")
    result = best_of_n(generator, reward, cond=cond, n=n, candidates=iters * candidates, batch_size=candidates,
                       budget=budget, seed=seed, heldout=heldout, callback=callback, progress=progress,
                       _method="random_search")
    result.config.update(iters=iters, candidates=candidates)
    return result


def _either(method: str, new, old: str, old_value):
    """The value of a renamed knob: the new name's, else the old name's; both given is an error."""
    if new is not None and old_value is not None:
        raise RewardsteerError(f"{method}: pass only one of the new name and its old spelling '{old}'")
    return new if new is not None else old_value


def _bon_counts(method: str, n, candidates, k) -> tuple[int, int]:
    """(outputs kept, candidates drawn) from the new spelling (n, candidates) or the old one (k, n), which warns."""
    if k is not None:
        renamed(method, "k", "n= (outputs kept) and candidates= (drawn)", stacklevel=4)
        if candidates is None:
            return k, (n if n is not None else 16)
        if n is not None:
            raise RewardsteerError(f"{method}: k is the old name of n (outputs kept): pass n and candidates, not k")
        return k, candidates
    if n is not None and candidates is None:
        warnings.warn(f"{method}(n={n}) without candidates= is the old spelling: it draws {n} candidates and keeps 1, "
                      f"as before. n now counts outputs kept everywhere: write {method}(candidates={n}, n=1); the old "
                      "reading goes in the next release", FutureWarning, stacklevel=3)
        return 1, n
    return (1 if n is None else n), (16 if candidates is None else candidates)
