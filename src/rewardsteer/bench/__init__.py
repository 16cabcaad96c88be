"""Benchmarks that reproduce or refute published findings on the bundled models: reward over-optimization
(`overopt`, reported by `overopt_report`). Front-ends: `rewardsteer bench ...` and benchmarks/*.py."""
