"""Distil `mnist-onestep` from `mnist-flow`: reflow pairs, then direct regression (Liu et al. 2023).

1. Draw pairs (z, x) with x = ODE_sampler(z, c) from the guided flow (deterministic, so z -> x is a map).
2. Initialise G from the flow UNet (at t = 0 it already predicts the class-mean image from z) and regress
   G(z, c) = z + u(z, 0, c) onto x with a squared error. Classifier-free guidance is baked into the pairs.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ..flow import FlowSampler, OneStepUNet
from ..hub import WEIGHTS_DIR, load_network
from ..nets import UNet
from .common import EMA, Logger, batches, command_line, optimizer_step, save_model, seed_everything


@torch.no_grad()
def reflow_pairs(sampler: FlowSampler, n: int, gen: torch.Generator, batch: int = 250):
    """n (noise, class, endpoint) triples, classes balanced, endpoints in model space [-1, 1]. One pair in
    11 is unconditional (class 10, the null class: sampled without guidance), so G(z, None) works too."""
    z = torch.randn((n, 1, 28, 28), generator=gen)
    y = torch.arange(n) % 11
    xs = []
    for i in range(0, n, batch):
        x = z[i:i + batch]
        for step in range(sampler.num_steps):
            x = sampler.step(x, step, y[i:i + batch], None).x_next
        xs.append(x.clamp(-1, 1))
    return z, y, torch.cat(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=12_000)
    p.add_argument("--ode-steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--quick", action="store_true", help="tiny run, for tests")
    a = p.parse_args(argv)
    if a.quick:
        a.pairs, a.ode_steps, a.steps = 40, 2, 3
    gen = seed_everything(a.seed, a.threads)
    log = Logger(a.out / "logs" / "mnist-onestep.jsonl")
    start = time.time()
    teacher = load_network("mnist-flow", a.teacher_dir)
    z, y, x = reflow_pairs(FlowSampler(teacher, a.ode_steps, a.guidance, eta=0.0), a.pairs, gen)
    pair_seconds = time.time() - start
    log(stage="pairs", n=a.pairs, seconds=round(pair_seconds, 1))

    student = UNet(**teacher.config)
    student.load_state_dict(teacher.state_dict())
    student.requires_grad_(True).train()
    g = OneStepUNet(student)
    ema = EMA(student, 0.995)
    opt = torch.optim.AdamW(student.parameters(), lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    next_batch = batches(a.pairs, a.batch, gen)
    for step in range(a.steps):
        idx = next(next_batch)
        zb = z[idx]
        pred = zb + g.model(zb, zb.new_zeros(len(idx)), y[idx])
        loss = (pred - x[idx]).pow(2).mean()
        optimizer_step(loss, student, opt, sched, ema)
        if step % 50 == 0 or step == a.steps - 1:
            log(stage="regress", step=step, loss=round(loss.item(), 5))
    card = {"kind": "onestep", "teacher": "mnist-flow",
            "data": {"dataset": f"{a.pairs} reflow pairs from mnist-flow ({a.ode_steps}-step ODE, "
                                f"guidance {a.guidance}), classes balanced, 1 in 11 unconditional",
                     "license": "derived from MNIST (CC BY-SA 3.0)"},
            "training": {"objective": "reflow pairs + direct regression ||z + u(z,0,c) - ODE(z,c)||^2",
                         "steps": a.steps, "batch": a.batch, "lr": a.lr, "ema": 0.995, "seed": a.seed,
                         "pair_seconds": round(pair_seconds, 1), "wall_seconds": round(time.time() - start, 1)}}
    card["command"] = command_line("rewardsteer.train.onestep", argv)
    save_model(ema.model, a.out, "mnist-onestep", card)


if __name__ == "__main__":
    main()
