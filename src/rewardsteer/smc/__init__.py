"""Particle steering of multi-step samplers: one SMC core (`core`, `driver`) behind FK steering, DAS, SVDD,
best-of-N over full trajectories and reward-gradient guidance. Every method shares the library's signature and
returns a Result."""

from .core import SCHEMES, Weights, ess, normalize, resample
from .das import das
from .fk import POTENTIALS, fk_steering, trajectory_best_of_n
from .guidance import reward_guidance
from .svdd import svdd

__all__ = ["POTENTIALS", "SCHEMES", "Weights", "das", "ess", "fk_steering", "normalize", "resample",
           "reward_guidance", "svdd", "trajectory_best_of_n"]
