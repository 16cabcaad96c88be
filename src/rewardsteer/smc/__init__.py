"""Particle steering of multi-step samplers: one SMC core (`core`, `driver`) behind FK steering, DAS, SVDD
and best-of-N over full trajectories. Every method shares the library's signature and returns a Result."""

from .core import SCHEMES, Weights, ess, normalize, resample
from .das import das
from .fk import POTENTIALS, fk_steering, trajectory_best_of_n
from .svdd import svdd

__all__ = ["POTENTIALS", "SCHEMES", "Weights", "das", "ess", "fk_steering", "normalize", "resample", "svdd",
           "trajectory_best_of_n"]
