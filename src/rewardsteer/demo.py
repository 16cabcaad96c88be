"""`make demo` / `rewardsteer demo`: what the bundled models do, and one steering run, in a minute."""

from __future__ import annotations

from pathlib import Path

import torch

from . import models
from .evaluation import class_metrics
from .methods import reno
from .report import image_grid, summary_lines, write_report


@torch.no_grad()
def class_grid_samples(per_class: int = 8, flow_steps: int = 20, seed: int = 0):
    """{generator name: (images (10·per_class, 1, 28, 28), labels)} from both bundled generators."""
    labels = torch.arange(10).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((labels.numel(), 1, 28, 28), generator=g)
    flow = models.flow_sampler(flow_steps, eta=0.0)
    return {"mnist-flow": (flow.sample(z, labels), labels), "mnist-onestep": (models.onestep()(z, labels), labels)}


def run_demo(out: Path, target: int = 8, iters: int = 30) -> list[str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    judge = models.classifier("mnist-judge")
    lines = []
    for name, (images, labels) in class_grid_samples().items():
        path = out / f"{name}-samples.png"
        image_grid(images, nrow=8).save(path)
        m = class_metrics(judge, images, labels)
        lines.append(f"{name}: one row per class 0-9 -> {path} (judge accuracy {m['judge_accuracy']:.1%}, "
                     f"confidence {m['judge_confidence']:.3f})")
    # The unconditional one-step model draws any digit; ReNO moves each noise until the proxies see a `target`.
    result = reno(models.onestep(), models.proxy_ensemble(target=target), cond=None, n=8, iters=iters, seed=0,
                  heldout={"mnist-judge": models.classifier_reward("mnist-judge", target=target)})
    paths = write_report(result, out / "steer")
    lines.append(f"ReNO: unconditional mnist-onestep steered toward {target} by the proxy ensemble "
                 "(mean log p(class)); mnist-judge held out:")
    lines += ["  " + s for s in summary_lines(result)]
    lines.append(f"  before/after grid: {paths['grid']}  trace: {paths['trace']}  result: {paths['result']}")
    lines.append(f"outputs are in {out.resolve()}")
    return lines
