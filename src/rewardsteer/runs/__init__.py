"""The run layer: one way in for every front-end.

    from rewardsteer.runs import RunSpec, execute
    spec = RunSpec.from_dict({"class": 3, "method": "best_of_n", "candidates": 32})  # or RunSpec(target=3, ...)
    result = execute(spec, "runs/three")          # build, run, write result.json / grid.png / trace.png
    print(result.summary())

`RunSpec` is what a run is (validated, JSON round trip); `check(spec)` makes every check a run makes before it
spends compute; `build(spec)` returns the `Plan` (generator, reward, held-out monitors, method call);
`execute(spec, out)` runs it. Builders for the bundled images, molecules and diffusers pipelines register
themselves here (`register`).
"""

from . import images, molecules, pipelines  # noqa: F401 - each registers its builder
from .execute import execute
from .registry import Plan, build, builder_for, check, register
from .spec import METHOD_CHOICES, PARTICLE_METHODS, RunSpec

__all__ = ["METHOD_CHOICES", "PARTICLE_METHODS", "Plan", "RunSpec", "build", "builder_for", "check", "execute", "register"]
