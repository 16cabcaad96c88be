"""The methods on the leaderboard and how each turns a per-output budget B (NFE-equivalents) into its knobs.

One-step methods steer `mnist-onestep` (1 NFE per sample); particle methods steer a T-step sampler (1 NFE per
particle per step, as their meters count); a backward pass costs 2. Where a method keeps the best n of a shared
pool (best_of_n, random_search), each output gets its own run, so "best-of-N at B" means the best of B draws.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import methods as m
from .. import smc
from .leaderboard import Entry

ROUNDS = 4  # random_search: rounds of B / ROUNDS candidates
NEIGHBOURS = 4  # zero_order_search: neighbours per iteration (Ma et al. 2025)


@dataclass
class Pooled:
    """Several single-output runs seen as one: stacked samples, summed spending (what `run_cell` reads)."""

    samples: torch.Tensor
    spent: dict
    stopped: str


def per_output(method, outputs: int, seed: int, **kw) -> Pooled:
    runs = [method(n=1, seed=seed * 100_003 + i, progress=False, **kw) for i in range(outputs)]
    spent = {k: sum(r.spent[k] for r in runs) for k in ("nfe", "backward", "reward_calls")}
    stopped = next((r.stopped for r in runs if r.stopped != "completed"), "completed")
    return Pooled(torch.cat([r.samples for r in runs]), spent, stopped)


def best_of_n(gen, task, budget, outputs, seed):
    return per_output(m.best_of_n, outputs, seed, generator=gen, reward=task.reward, cond=task.cond, candidates=budget)


def random_search(gen, task, budget, outputs, seed):
    return per_output(m.random_search, outputs, seed, generator=gen, reward=task.reward, cond=task.cond,
                      iters=ROUNDS, candidates=max(budget // ROUNDS, 1))


def zero_order_search(gen, task, budget, outputs, seed):
    iters = max((budget - 1) // NEIGHBOURS, 1)
    return m.zero_order_search(gen, task.reward, cond=task.cond, n=outputs, iters=iters, neighbours=NEIGHBOURS,
                               seed=seed, progress=False)


def reno(gen, task, budget, outputs, seed):
    iters = max((budget - 1) // (1 + 2), 1)  # each iteration: one forward and one backward
    return m.reno(gen, task.reward, cond=task.cond, n=outputs, iters=iters, seed=seed, progress=False)


def particle(method, cost_per_step: int = 1, **knobs):
    """A particle method with K = B / (T · cost_per_step) particles (cost 3 per step with a reward gradient)."""

    def run(sampler, task, budget, outputs, seed):
        k = max(budget // (sampler.num_steps * cost_per_step), 1)
        return method(sampler, task.reward, cond=task.cond, n=outputs, particles=k, seed=seed, progress=False, **knobs)

    return run


def guidance(sampler, task, budget, outputs, seed):
    k = max(budget // (sampler.num_steps * 3), 1)  # guided particles, each step a forward and a backward
    return smc.reward_guidance(sampler, task.reward, cond=task.cond, n=outputs, particles=k, seed=seed,
                               progress=False)


PARTICLE_MAX_BUDGET = 1024  # the emergent sampler costs about 4 network rows per NFE: its methods stop here


def image_entries(steps: int, particle_max: int = PARTICLE_MAX_BUDGET) -> list[Entry]:
    """Every method the library has, for a differentiable image objective (particle methods on a `steps`-step
    sampler, up to `particle_max` per output)."""
    two = 2 * steps
    out = [Entry("best_of_n", "one_step", best_of_n), Entry("random_search", "one_step", random_search, ROUNDS),
           Entry("zero_order_search", "one_step", zero_order_search, 1 + NEIGHBOURS),
           Entry("reno", "one_step", reno, 4)]
    out += [Entry(f"fk_{p}", "sampler", particle(smc.fk_steering, potential=p), two, particle_max)
            for p in ("max", "diff", "sum")]
    out += [Entry("svdd", "sampler", particle(smc.svdd), two, particle_max),
            Entry("das", "sampler", particle(smc.das, cost_per_step=3), 2 * 3 * steps, particle_max),
            Entry("guidance", "sampler", guidance, 3 * steps, particle_max),
            Entry("trajectory_best_of_n", "sampler", particle(smc.trajectory_best_of_n), two, particle_max)]
    return out


def molecule_entries(steps: int) -> list[Entry]:
    """Methods for a reward with no gradient over token sequences (RDKit): best-of-N over full samples (the
    reference), FK steering with each potential, SVDD."""
    two = 2 * steps
    bon = Entry("best_of_n", "sampler", particle(smc.trajectory_best_of_n), steps,
                "best of B/T full samples (trajectory_best_of_n)")
    out = [bon] + [Entry(f"fk_{p}", "sampler", particle(smc.fk_steering, potential=p), two) for p in ("max", "diff", "sum")]
    return out + [Entry("svdd", "sampler", particle(smc.svdd), two)]


def select(entries: list[Entry], names) -> list[Entry]:
    """`names` (None: all) as entries, in the board's order; an unknown name is a one-line error."""
    if names is None:
        return entries
    from ..errors import UnknownNameError

    known = {e.name: e for e in entries}
    for n in names:
        if n not in known:
            raise UnknownNameError("leaderboard method", n, list(known))
    return [replace(known[n]) for n in names]
