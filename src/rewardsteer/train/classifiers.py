"""Train `mnist-judge` (clean labels, all 60k) and `mnist-proxy-0..4` (10k subset, 25% wrong labels).

The judge is the gold / held-out evaluator; the proxies are a deliberately flawed ensemble for
over-optimization studies (Gao et al. 2023; Coste et al. 2024): they share one noisy 10k subset and
differ in initialization seed and data order.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..bundled.data import load_mnist
from ..bundled.nets import Classifier
from ..bundled.training import Logger, command_line, mnist_data_card, save_model, seed_everything

NOISY_SUBSET_SEED = 1234


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift] (zero padding)."""
    if max_shift == 0:
        return x
    b = x.shape[0]
    padded = F.pad(x, [max_shift] * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None])  # (B, 28)
    cols = (dx[:, None] + torch.arange(28)[None])
    return padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    preds = torch.cat([model(images[i:i + 1000]).argmax(1) for i in range(0, len(labels), 1000)])
    return (preds == labels).float().mean().item()


def noisy_subset(images, labels, size: int = 10_000, flip: float = 0.25, seed: int = NOISY_SUBSET_SEED):
    """A fixed random subset whose labels are replaced, with probability `flip`, by a random wrong class."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(labels), generator=g)[:size]
    y = labels[idx].clone()
    flip_mask = torch.rand(size, generator=g) < flip
    y[flip_mask] = (y[flip_mask] + torch.randint(1, 10, (int(flip_mask.sum()),), generator=g)) % 10
    return images[idx], y, flip_mask.float().mean().item()


def train_classifier(images, labels, *, epochs: int, seed: int, width: int, feature_dim: int,
                     max_shift: int, lr: float = 2e-3, batch: int = 128, log: Logger, tag: str):
    gen = seed_everything(seed)
    model = Classifier(width=width, feature_dim=feature_dim)
    steps = epochs * math.ceil(len(labels) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(labels), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(random_shift(images[idx], max_shift, gen)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        log(model=tag, epoch=epoch, loss=round(loss.item(), 4))
    return model.eval(), steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--which", choices=["judge", "proxies", "all"], default="all")
    p.add_argument("--judge-epochs", type=int, default=4)
    p.add_argument("--proxy-epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None)
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--quick", action="store_true", help="tiny data and one epoch, for tests")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = load_mnist(a.data)
    train, test = data.train, data.test
    if a.quick:
        train.images, train.labels = train.images[:2000], train.labels[:2000]
        test.images, test.labels = test.images[:1000], test.labels[:1000]
    log = Logger(a.out / "logs" / f"classifiers-{a.which}.jsonl")
    if a.which in ("judge", "all"):
        start = time.time()
        epochs = 1 if a.quick else a.judge_epochs
        model, steps = train_classifier(train.images, train.labels, epochs=epochs, seed=0, width=32,
                                        feature_dim=128, max_shift=2, log=log, tag="judge")
        acc = accuracy(model, test.images, test.labels)
        log(model="judge", test_accuracy=acc)
        save_model(model, a.out, "mnist-judge", {
            "kind": "classifier", "role": "gold / held-out evaluator",
            "data": mnist_data_card(data.source, f"train {len(train.labels)}, clean labels"),
            "training": {"epochs": epochs, "steps": steps, "batch": 128, "optimizer": "AdamW one-cycle lr 2e-3",
                         "augmentation": "random shift +-2 px", "seed": 0,
                         "wall_seconds": round(time.time() - start, 1)},
            "metrics": {"test_accuracy": acc, "test_size": len(test.labels)},
            "command": command_line("rewardsteer.train.classifiers", argv)})
    if a.which in ("proxies", "all"):
        size = 1000 if a.quick else 10_000
        x, y, flipped = noisy_subset(train.images, train.labels, size=size)
        for k in range(1 if a.quick else 5):
            start = time.time()
            epochs = 1 if a.quick else a.proxy_epochs
            model, steps = train_classifier(x, y, epochs=epochs, seed=100 + k, width=16, feature_dim=64,
                                            max_shift=0, log=log, tag=f"proxy-{k}")
            acc = accuracy(model, test.images, test.labels)
            log(model=f"proxy-{k}", test_accuracy=acc)
            save_model(model, a.out, f"mnist-proxy-{k}", {
                "kind": "classifier", "role": "proxy reward (noisy labels) for over-optimization studies",
                "data": mnist_data_card(data.source, f"{size}-image subset (seed {NOISY_SUBSET_SEED}), "
                                        f"{flipped:.1%} of labels replaced by a random wrong class"),
                "training": {"epochs": epochs, "steps": steps, "batch": 128, "optimizer": "AdamW one-cycle lr 2e-3",
                             "seed": 100 + k, "wall_seconds": round(time.time() - start, 1)},
                "metrics": {"clean_test_accuracy": acc, "test_size": len(test.labels)},
                "command": command_line("rewardsteer.train.classifiers", argv)})


if __name__ == "__main__":
    main()
