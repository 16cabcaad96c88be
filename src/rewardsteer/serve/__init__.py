"""The web demo: `rewardsteer serve` (Gradio; pip install "rewardsteer[demo]")."""

from .policy import PagePolicy
from .session import SteeringRun, changed_options, one_line

__all__ = ["PagePolicy", "SteeringRun", "changed_options", "one_line"]
