"""Rewards: classifier rewards and named ensembles (`base`), their reductions (`aggregates`: mean, WCO, UWO,
mean−std, quantile, CVaR), vectorized ensembles (`stacked`), robustness to reward hacking (`robust`: EOT),
preference-trained reward models (`preference`: Bradley-Terry) and held-out monitors (`monitors`).

Modules in this package import each other directly (`.base`, `.aggregates`), never this package: importing
`rewardsteer.rewards` is for users.
"""

from .base import ClassifierReward, Ensemble, WeightedSum, as_reward

__all__ = ["ClassifierReward", "Ensemble", "WeightedSum", "as_reward"]
