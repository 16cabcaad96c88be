"""`make demo` / `rewardsteer demo`: what the bundled models do, and one steering run, in about a minute."""

from __future__ import annotations

from pathlib import Path

import torch

from . import models
from .evaluation import class_metrics, prior_metrics
from .methods import reno
from .report import image_grid, summary_lines, write_report


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
    # while three judges of different model families (and the realism monitor) watch, never optimized.
    reward = models.default_reward(target)
    heldout = {**models.judges(target), "realism": models.realism_monitor()}
    result = reno(models.onestep(), reward, cond=None, n=8, iters=iters, seed=0, heldout=heldout)
    paths = write_report(result, out / "steer")
    lines.append(f"ReNO: unconditional mnist-onestep steered toward {target} by '{reward.name}'; held out: "
                 f"{', '.join(heldout)}")
    lines += ["  " + s for s in summary_lines(result)]
    lines.append(f"  before/after grid: {paths['grid']}  trace: {paths['trace']}  result: {paths['result']}")
    lines.append(f"outputs are in {out.resolve()}")
    return lines
