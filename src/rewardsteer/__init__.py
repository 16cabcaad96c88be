"""rewardsteer: inference-time reward alignment of generative models, at a known compute cost."""

from .budget import Budget, Meter
from .core import FunctionReward, OneStepGenerator, Reward, Sampler, StepOutput
from .errors import RewardsteerError, UnknownNameError, WeightsError
from .methods import METHODS, best_of_n, random_search, reno, zero_order_search
from .moved import install as install_moved_paths
from .result import Result
from .rewards.base import ClassifierReward, Ensemble, WeightedSum, as_reward
from .rewards.robust import TransformedReward, TransformSpec, robust
from .smc import das, fk_steering, reward_guidance, svdd, trajectory_best_of_n
from .wrap import RewardsteerWarning, as_generator, as_sampler

__version__ = "0.1.0"

install_moved_paths()  # old module paths (rewardsteer.flow, rewardsteer.aggregates, ...) for one more release

__all__ = [
    "METHODS", "Budget", "ClassifierReward", "Ensemble", "FunctionReward", "Meter", "OneStepGenerator", "Result",
    "Reward", "RewardsteerError", "Sampler", "StepOutput", "UnknownNameError", "WeightedSum", "WeightsError",
    "as_reward", "best_of_n", "random_search", "reno", "zero_order_search",
]
__all__ += ["das", "fk_steering", "reward_guidance", "svdd", "trajectory_best_of_n"]
__all__ += ["RewardsteerWarning", "as_generator", "as_sampler"]
__all__ += ["TransformSpec", "TransformedReward", "robust"]
