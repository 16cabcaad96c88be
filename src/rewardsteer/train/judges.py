"""Train the independent held-out judges, the MLP proxies and the realism index.

- `mnist-judge-vit` (ViT) and `mnist-judge-rff` (PCA → random Fourier features → softmax): clean labels, on
  the MNIST train images that are NOT in the proxies' noisy 10k subset (`classifiers.noisy_subset`): 45k for
  training, 5k held out for validation. Other family and other data than every proxy.
- `mnist-proxy-mlp-0..2`: pixel MLPs on exactly the CNN proxies' noisy 10k subset, seeds 200..202, so a
  mixed ensemble (`models.mixed_proxy_ensemble`) has two model families with the same flawed data.
- `mnist-realism`: k-NN distance to 20k of the judges' training digits in a PCA space fit on the 45k,
  normalized by its median over the 5k validation digits.

    python -m rewardsteer.train.judges --which all --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..bundled.data import load_mnist
from ..bundled.evaluation import auroc, probabilities
from ..bundled.judge_nets import RealismIndex, RFFClassifier, ViTClassifier
from ..bundled.nets import MLPClassifier
from ..bundled.training import Logger, command_line, mnist_data_card, save_model, seed_everything
from ..rewards.monitors import RealismMonitor
from .classifiers import NOISY_SUBSET_SEED, accuracy, noisy_subset, random_shift

PROXY_SUBSET = 10_000
JUDGE_ROLE = "independent held-out judge (other family, other data)"
MODULE = "rewardsteer.train.judges"


def judge_split(n: int, proxy_size: int = PROXY_SUBSET, val_size: int = 5_000,
                seed: int = NOISY_SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of the n train images outside the proxies' subset: `noisy_subset` keeps
    the first `proxy_size` of the same seeded permutation, the judges get the rest (already shuffled)."""
    rest = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[proxy_size:]
    return rest[:-val_size], rest[-val_size:]


def judge_data_card(source: str, n_train: int, n_val: int) -> dict:
    return mnist_data_card(source, f"MNIST train minus the proxies' {PROXY_SUBSET // 1000}k subset "
                           f"({(n_train + n_val) / 1000:g}k; subset seed {NOISY_SUBSET_SEED}), clean labels: "
                           f"{n_train} for training, {n_val} held out for validation")


@torch.no_grad()
def confident_fraction(model, images: torch.Tensor, threshold: float = 0.9) -> float:
    """The fraction of images whose max class probability is ≥ threshold."""
    return float((probabilities(model.eval(), images).max(1).values >= threshold).float().mean())


def classifier_metrics(model, test, val=None) -> dict:
    out = {"test_accuracy": accuracy(model, test.images, test.labels), "test_size": len(test.labels),
           "test_confident_0.9": confident_fraction(model, test.images)}
    if val is not None:
        out["val_accuracy"] = accuracy(model, *val)
    return out


def fit(model, images, labels, *, epochs: int, gen: torch.Generator, lr: float, weight_decay: float,
        max_shift: int, batch: int, log: Logger, tag: str, warmup: float = 0.1):
    """Minibatch AdamW with a one-cycle schedule (warm-up, then cosine decay) and random ±max_shift px shifts."""
    steps = epochs * math.ceil(len(labels) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=warmup)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(labels), generator=gen)
        start = time.time()
        for i in range(0, len(labels), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(random_shift(images[idx], max_shift, gen)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        log(model=tag, epoch=epoch, loss=round(loss.item(), 4), epoch_s=round(time.time() - start, 1))
    return model.eval(), steps


def train_vit(x, y, *, epochs: int, seed: int, log: Logger):
    gen = seed_everything(seed)
    model = ViTClassifier()
    return fit(model, x, y, epochs=epochs, gen=gen, lr=2e-3, weight_decay=0.05, max_shift=2, batch=128,
               log=log, tag="judge-vit")


def median_distance(points: torch.Tensor, n: int, gen: torch.Generator) -> float:
    """The median pairwise Euclidean distance among n random points (the kernel-bandwidth heuristic)."""
    p = points[torch.randperm(len(points), generator=gen)[:n]]
    d = torch.cdist(p, p)
    return float(d[torch.triu_indices(len(p), len(p), 1).unbind()].median())


def train_rff(x, y, *, seed: int, components: int, num_features: int, bandwidth_scale: float, l2: float,
              iters: int, log: Logger, shifted_copies: int = 0):
    """PCA on x; bandwidth = scale × median pairwise PCA distance; then the softmax head by full-batch L-BFGS
    on the fixed random features (a convex problem: the result depends on the data, not on an order).
    `shifted_copies` adds that many copies of x shifted by ±1 px ("virtual examples", Decoste & Schölkopf 2002)."""
    gen = seed_everything(seed)
    model = RFFClassifier(components, num_features)
    model.fit_pca(x)
    median = median_distance(model.project(x), 2000, gen)
    model.draw_features(bandwidth_scale * median, gen)
    x = torch.cat([x, *(random_shift(x, 1, gen) for _ in range(shifted_copies))])
    y = y.repeat(1 + shifted_copies)
    feats = x.new_empty(len(x), num_features)  # (N, D), filled in place: the largest tensor of the run
    with torch.no_grad():
        for i, part in enumerate(x.split(5000)):
            feats[5000 * i:5000 * i + len(part)] = model.features(part)
    head = model.head
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-12)  # the features are O(1/√D): tiny gradients

    def objective():
        return F.cross_entropy(head(feats), y) + 0.5 * l2 * head.weight.pow(2).sum()

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss = float(objective())
    log(model="judge-rff", median_distance=round(median, 3), bandwidth=round(bandwidth_scale * median, 3),
        loss=round(loss, 4), lbfgs_evals=opt.state_dict()["state"][0]["func_evals"])
    return model.eval(), median


def train_mlp(x, y, *, epochs: int, seed: int, log: Logger, tag: str):
    gen = seed_everything(seed)
    model = MLPClassifier()
    return fit(model, x, y, epochs=epochs, gen=gen, lr=1e-3, weight_decay=1e-4, max_shift=2, batch=128,
               log=log, tag=tag)  # shifts: without them a pixel MLP memorizes more of the wrong labels


def fit_realism(train, reference_size: int, val, components: int, k: int) -> RealismIndex:
    index = RealismIndex(components, reference_size, k)
    index.fit(train, train[:reference_size], val)  # the train images are already in random order
    return index.eval()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@torch.no_grad()
def unconditional_samples(weights_dir: Path, n: int = 1000, seed: int = 0, flow_steps: int = 20,
                          batch: int = 100) -> dict[str, torch.Tensor]:
    """n unconditional samples (cond=None) of `mnist-onestep` and of `mnist-flow`'s deterministic ODE, both on
    z from torch.Generator seed `seed`: the protocol of the realism AUROC."""
    from ..bundled.flow import FlowSampler, OneStepUNet
    from ..bundled.hub import load_network

    z = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
    onestep = OneStepUNet(load_network("mnist-onestep", weights_dir))
    flow = FlowSampler(load_network("mnist-flow", weights_dir), flow_steps, 2.0, eta=0.0)
    return {"mnist-onestep": torch.cat([onestep(part, None) for part in z.split(batch)]),
            f"mnist-flow-ode{flow_steps}": torch.cat([flow.sample(part, None) for part in z.split(batch)])}


def realism_aurocs(monitor, real: torch.Tensor, samples: dict[str, torch.Tensor]) -> dict[str, float]:
    """AUROC of the realism score for real digits (positives) against each set of samples (0.5: the monitor
    cannot tell them apart; 1: every real digit scores above every sample)."""
    real_scores = monitor(real)
    return {name: auroc(real_scores, monitor(images)) for name, images in samples.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", choices=["vit", "rff", "mlp-proxies", "realism", "all"], default="all")
    p.add_argument("--vit-epochs", type=int, default=12)
    p.add_argument("--mlp-epochs", type=int, default=30)
    # RFF defaults chosen on the 5k validation split among bandwidth scale 0.4-0.7, 4096-16384 features,
    # L2 1e-5 / 1e-6, 0 or 1 shifted copy (validation accuracy 97.1% → 98.3%)
    p.add_argument("--rff-features", type=int, default=16384)
    p.add_argument("--rff-bandwidth-scale", type=float, default=0.5, help="times the median PCA distance")
    p.add_argument("--rff-l2", type=float, default=1e-6)
    p.add_argument("--rff-iters", type=int, default=400)
    p.add_argument("--rff-shifted-copies", type=int, default=1, help="copies of the data shifted by ±1 px")
    p.add_argument("--generators-dir", type=Path, default=None,
                   help="with --which realism: also record the AUROC of real test digits vs 1,000 unconditional "
                        "samples of the mnist-onestep / mnist-flow weights in this folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None)
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--quick", action="store_true", help="tiny data and one epoch, for tests")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = load_mnist(a.data)
    train, test = data.train, data.test
    if a.quick:
        train.images, train.labels = train.images[:2000], train.labels[:2000]
        test.images, test.labels = test.images[:500], test.labels[:500]
    proxy_size, val_size = (1000, 200) if a.quick else (PROXY_SUBSET, 5000)
    tr, va = judge_split(len(train.labels), proxy_size, val_size)
    x, y, xv, yv = train.images[tr], train.labels[tr], train.images[va], train.labels[va]
    log = Logger(a.out / "logs" / f"judges-{a.which}.jsonl")
    command = command_line(MODULE, argv)
    judge_data = judge_data_card(data.source, len(tr), len(va))
    every = a.which == "all"

    if every or a.which == "vit":
        start = time.time()
        epochs = 1 if a.quick else a.vit_epochs
        model, steps = train_vit(x, y, epochs=epochs, seed=0, log=log)
        metrics = {**classifier_metrics(model, test, (xv, yv)), "wall_seconds": round(time.time() - start, 1)}
        log(model="judge-vit", **metrics)
        save_model(model, a.out, "mnist-judge-vit", {
            "kind": "classifier", "role": JUDGE_ROLE, "data": judge_data,
            "training": {"epochs": epochs, "steps": steps, "batch": 128, "seed": 0,
                         "optimizer": "AdamW one-cycle (10% warm-up, cosine) lr 2e-3, weight decay 0.05",
                         "augmentation": "random shift +-2 px"},
            "metrics": metrics, "command": command,
            "reference": "Dosovitskiy et al. 2021, An image is worth 16x16 words (ViT)"})

    if every or a.which == "rff":
        start = time.time()
        components, features = (20, 256) if a.quick else (50, a.rff_features)
        iters = 20 if a.quick else a.rff_iters
        model, median = train_rff(x, y, seed=0, components=components, num_features=features,
                                  bandwidth_scale=a.rff_bandwidth_scale, l2=a.rff_l2, iters=iters, log=log,
                                  shifted_copies=a.rff_shifted_copies)
        metrics = {**classifier_metrics(model, test, (xv, yv)), "wall_seconds": round(time.time() - start, 1)}
        log(model="judge-rff", **metrics)
        save_model(model, a.out, "mnist-judge-rff", {
            "kind": "classifier", "role": JUDGE_ROLE, "data": judge_data,
            "training": {"pca_components": components, "random_features": features, "seed": 0,
                         "kernel": "Gaussian on PCA coordinates",
                         "augmentation": f"{a.rff_shifted_copies} copy of the training images shifted by +-1 px",
                         "bandwidth": f"{a.rff_bandwidth_scale} x median pairwise PCA distance ({median:.3f})",
                         "optimizer": f"full-batch L-BFGS (strong Wolfe), at most {iters} iterations, "
                                      f"L2 {a.rff_l2} on the weights"},
            "metrics": metrics, "command": command,
            "reference": "Rahimi & Recht 2007, Random features for large-scale kernel machines"})

    if every or a.which == "mlp-proxies":
        px, py, flipped = noisy_subset(train.images, train.labels, size=proxy_size)
        for k in range(1 if a.quick else 3):
            start = time.time()
            epochs = 1 if a.quick else a.mlp_epochs
            model, steps = train_mlp(px, py, epochs=epochs, seed=200 + k, log=log, tag=f"proxy-mlp-{k}")
            m = classifier_metrics(model, test)
            metrics = {"clean_test_accuracy": m["test_accuracy"], "test_size": m["test_size"],
                       "test_confident_0.9": m["test_confident_0.9"], "wall_seconds": round(time.time() - start, 1)}
            log(model=f"proxy-mlp-{k}", **metrics)
            save_model(model, a.out, f"mnist-proxy-mlp-{k}", {
                "kind": "classifier", "role": "proxy reward (noisy labels), pixel-MLP family",
                "data": mnist_data_card(data.source, f"the CNN proxies' {proxy_size}-image subset (seed "
                                        f"{NOISY_SUBSET_SEED}), {flipped:.1%} of labels replaced by a random wrong class"),
                "training": {"epochs": epochs, "steps": steps, "batch": 128, "seed": 200 + k,
                             "optimizer": "AdamW one-cycle (10% warm-up, cosine) lr 1e-3, weight decay 1e-4",
                             "augmentation": "random shift +-2 px"},
                "metrics": metrics, "command": command})

    if every or a.which == "realism":
        start = time.time()
        reference_size = 500 if a.quick else 20_000
        index = fit_realism(x, reference_size, xv, components=50, k=5)
        monitor = RealismMonitor(index)
        real = test.images[:1000]
        noise = torch.rand((len(real), 1, 28, 28), generator=torch.Generator().manual_seed(0))
        metrics = {"median_normalized_distance_test": float(index(test.images).median()),
                   "auroc_real_test_vs_uniform_noise": auroc(monitor(real), monitor(noise)),
                   "wall_seconds": round(time.time() - start, 1)}
        if a.generators_dir is not None:
            samples = unconditional_samples(a.generators_dir, n=len(real))
            metrics["auroc_real_test_vs_unconditional_samples"] = {
                "generators": {n: file_digest(a.generators_dir / f"{n}.safetensors")
                               for n in ("mnist-onestep", "mnist-flow")},
                "protocol": f"{len(real)} test digits vs {len(real)} samples, cond=None, z seed 0",
                **realism_aurocs(monitor, real, samples)}
        log(model="realism", **metrics)
        save_model(index, a.out, "mnist-realism", {
            "kind": "monitor", "role": "held-out realism monitor (not a classifier; never optimized)",
            "data": judge_data,
            "training": {"pca_components": 50, "pca_fit": f"the {len(tr)} judges' training images",
                         "reference": f"{reference_size} of those images, as PCA coordinates", "k": 5,
                         "normalization": f"median over the {len(va)} validation images", "seed": NOISY_SUBSET_SEED,
                         "buffers": sum(b.numel() for b in index.buffers())},
            "metrics": metrics, "command": command})


if __name__ == "__main__":
    main()
