"""The web demo: `rewardsteer serve` (Gradio; pip install "rewardsteer[demo]")."""

from .session import SteeringRun, changed_options, one_line

__all__ = ["SteeringRun", "changed_options", "one_line"]
