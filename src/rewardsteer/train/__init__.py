"""Deterministic, logged training scripts for the bundled models (run as `python -m rewardsteer.train.X`)."""
