"""`make demo` / `rewardsteer demo`: what the bundled models do, and one steering run (through the run layer, as
`rewardsteer run` would make it), in about a minute."""

from __future__ import annotations

from pathlib import Path

import torch

from . import models
from .bundled.evaluation import class_metrics, prior_metrics
from .report import image_grid
from .rewards.monitors import JUDGE_HIT_SUFFIX, JUDGES_AGREE
from .runs import RunSpec, execute


@torch.no_grad()
def demo_samples(per_class: int = 8, flow_steps: int = 20, seed: int = 0):
    """{name: (images, labels or None)}: both bundled generators per class (one row per digit 0-9), and
    unconditionally (cond=None: the prior that steering starts from), on the same noise."""
    labels = torch.arange(10).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    flow, onestep = models.flow_sampler(flow_steps, eta=0.0), models.onestep()
    z = flow.sample_noise(labels.numel(), g)  # (N, 2, 28, 28): image noise and the prior's class code
    return {"mnist-flow": (flow.sample(z, labels), labels), "mnist-onestep": (onestep(z[:, :1], labels), labels),
            "mnist-flow-unconditional": (flow.sample(z, None), None),
            "mnist-onestep-unconditional": (onestep(z[:, :1], None), None)}


def run_demo(out: Path, target: int = 8, iters: int = 30) -> list[str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    judges = {name: models.classifier(name) for name in models.HELDOUT_JUDGES}
    lines = []
    for name, (images, labels) in demo_samples().items():
        path = out / f"{name}-samples.png"
        image_grid(images, nrow=8).save(path)
        if labels is not None:
            m = class_metrics(judges["mnist-judge"], images, labels)
            lines.append(f"{name}: one row per class 0-9 -> {path} (mnist-judge accuracy {m['judge_accuracy']:.1%})")
        else:
            m = prior_metrics(judges, images)
            lines.append(f"{name}: any digit (cond=None) -> {path} (every judge confident and agreeing on "
                         f"{m['all_judges_confident_and_agree']:.1%})")
    # The unconditional one-step model draws any digit; ReNO moves each noise until the reward sees a `target`,
    # while three judges of different model families (and the realism and diversity monitors) watch, never
    # optimized. The same run as `rewardsteer run --method reno --class TARGET --n 8 --iters ITERS`.
    spec = RunSpec(model="mnist-onestep", target=target, method="reno", n=8, iters=iters, seed=0)
    result = execute(spec, out / "steer")
    watched = [k for k in result.heldout_scores if not k.endswith(JUDGE_HIT_SUFFIX) and k != JUDGES_AGREE]
    lines.append(f"ReNO: unconditional mnist-onestep steered toward {target} by the default reward (proxies-mixed "
                 f"under EOT); held out: {', '.join(watched)}")
    lines += ["  " + s for s in str(result.summary()).splitlines()]
    lines.append(f"  before/after grid: {result.files['grid']}  trace: {result.files['trace']}  "
                 f"result: {result.files['result']}")
    lines.append(f"outputs are in {out.resolve()}")
    return lines
