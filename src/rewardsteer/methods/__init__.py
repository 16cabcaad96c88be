"""Steering methods: plain functions sharing one signature, `method(generator, reward, *, cond, budget,
seed, heldout, callback, progress, **knobs) -> Result`."""

from ..smc import das, fk_steering, reward_guidance, svdd, trajectory_best_of_n
from .best_of_n import best_of_n, random_search
from .reno import prior_nll, reno
from .search import zero_order_search

METHODS = {"best_of_n": best_of_n, "random_search": random_search, "zero_order_search": zero_order_search,
           "reno": reno}
METHODS.update(fk_steering=fk_steering, das=das, svdd=svdd, trajectory_best_of_n=trajectory_best_of_n,
               reward_guidance=reward_guidance)

__all__ = ["METHODS", "best_of_n", "prior_nll", "random_search", "reno", "zero_order_search"]
__all__ += ["das", "fk_steering", "reward_guidance", "svdd", "trajectory_best_of_n"]
