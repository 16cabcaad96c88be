"""Measure the bundled models and record the numbers in their cards and in docs/models.md.

Generators: 1,000 samples (100 per class); the judge's accuracy on the requested class, its mean confidence
in it, and a Fréchet distance in judge-feature space to the 10k test images, with 1,000 real test images
as the floor (Heusel et al. 2017, FID, with the judge in place of Inception).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..data import load_mnist
from ..evaluation import class_metrics, judge_outputs
from ..flow import FlowSampler, OneStepUNet
from ..hub import WEIGHTS_DIR, load_network
from ..report import image_grid
from .classifiers import accuracy


def _update_card(name: str, weights_dir: Path, metrics: dict) -> None:
    path = weights_dir / f"{name}.json"
    card = json.loads(path.read_text())
    card["metrics"] = {**card.get("metrics", {}), **metrics}
    path.write_text(json.dumps(card, indent=2) + "\n")


@torch.no_grad()
def evaluate(n_per_class: int = 100, seed: int = 0, weights_dir: Path = WEIGHTS_DIR, docs: Path = Path("docs"),
             data_root=None, flow_steps: int = 20, guidance: float = 2.0) -> dict:
    data = load_mnist(data_root)
    judge = load_network("mnist-judge", weights_dir)
    test_feats, _ = judge_outputs(judge, data.test.images)
    g = torch.Generator().manual_seed(seed)
    floor_idx = torch.randperm(len(data.test.labels), generator=g)[: 10 * n_per_class]
    report = {"real test images (floor)": class_metrics(judge, data.test.images[floor_idx],
                                                          data.test.labels[floor_idx], test_feats)}
    labels = torch.arange(10).repeat_interleave(n_per_class)
    z = torch.randn((labels.numel(), 1, 28, 28), generator=g)
    flow = load_network("mnist-flow", weights_dir)
    samplers = {
        f"mnist-flow ODE {flow_steps} steps, guidance {guidance}": FlowSampler(flow, flow_steps, guidance, eta=0.0),
        f"mnist-flow stochastic (eta=1) {flow_steps} steps, guidance {guidance}": FlowSampler(flow, flow_steps, guidance, 1.0),
    }
    grids = {}
    for name, sampler in samplers.items():
        start = time.time()
        images = torch.cat([sampler.sample(z[i:i + 250], labels[i:i + 250], g) for i in range(0, len(labels), 250)])
        report[name] = {**class_metrics(judge, images, labels, test_feats), "seconds": round(time.time() - start, 1)}
        grids.setdefault("mnist-flow", images)
    start = time.time()
    images = OneStepUNet(load_network("mnist-onestep", weights_dir))(z, labels)
    report["mnist-onestep (1 step)"] = {**class_metrics(judge, images, labels, test_feats),
                                        "seconds": round(time.time() - start, 1)}
    grids["mnist-onestep"] = images
    report["mnist-judge test accuracy"] = accuracy(judge, data.test.images, data.test.labels)
    for k in range(5):
        report[f"mnist-proxy-{k} clean test accuracy"] = accuracy(load_network(f"mnist-proxy-{k}", weights_dir),
                                                                  data.test.images, data.test.labels)

    flow_key = next(k for k in report if k.startswith("mnist-flow ODE"))
    _update_card("mnist-flow", weights_dir, {"eval_sampler": flow_key, **report[flow_key],
                                             "stochastic_sampler": report[next(k for k in report if "stochastic" in k)],
                                             "frechet_floor_real": report["real test images (floor)"]["frechet_judge"]})
    _update_card("mnist-onestep", weights_dir, {**report["mnist-onestep (1 step)"],
                                                "frechet_floor_real": report["real test images (floor)"]["frechet_judge"]})
    _update_card("mnist-judge", weights_dir, {"test_accuracy": report["mnist-judge test accuracy"]})
    for k in range(5):
        _update_card(f"mnist-proxy-{k}", weights_dir, {"clean_test_accuracy": report[f"mnist-proxy-{k} clean test accuracy"]})
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "img").mkdir(exist_ok=True)
    for name, images in grids.items():
        order = torch.cat([torch.arange(c * n_per_class, c * n_per_class + 10) for c in range(10)])
        image_grid(images[order], nrow=10).save(docs / "img" / f"{name}-samples.png")
    (docs / "models-eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--flow-steps", type=int, default=20)
    p.add_argument("--data", default=None)
    p.add_argument("--docs", type=Path, default=Path("docs"))
    a = p.parse_args(argv)
    print(json.dumps(evaluate(a.per_class, docs=a.docs, data_root=a.data, flow_steps=a.flow_steps), indent=2))


if __name__ == "__main__":
    main()
