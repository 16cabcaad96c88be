"""Distil `mnist-onestep` from `mnist-flow`: reflow pairs, then direct regression (Liu et al. 2023).

1. Draw pairs (z, x) with x = ODE_sampler(z, c) from the flow (deterministic, so z -> x is a map): one
   pair in 11 with the null class (no guidance), the rest class-balanced with classifier-free guidance
   baked in. (The unconditional prior used at sampling time is the class mixture: see `flow`.)
2. Initialise G from the flow UNet (at t = 0 it already predicts the class-mean image from z), or from an
   earlier one-step model (`--init`), and regress G(z, c) = z + u(z, 0, c) onto x with a squared error.
The pairs are cached beside the checkpoint, so `--resume` after a kill skips straight to the regression.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..bundled.flow import NULL_CLASS, FlowSampler, OneStepUNet
from ..bundled.hub import WEIGHTS_DIR, load_network
from ..bundled.nets import UNet
from ..bundled.training import EMA, Batches, Checkpoint, Logger, command_line, optimizer_step, save_model, seed_everything


@torch.no_grad()
def reflow_pairs(sampler: FlowSampler, y: torch.Tensor, gen: torch.Generator, batch: int = 250):
    """(noise, class, endpoint) triples for the classes y, endpoints in model space [-1, 1]; the null class
    samples without guidance (FlowSampler's convention)."""
    z = torch.randn((len(y), 1, 28, 28), generator=gen)
    xs = []
    for i in range(0, len(y), batch):
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
    p.add_argument("--init", default=None, help="start the student from this bundled one-step model (default: the teacher)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--every", type=float, default=180.0, help="seconds between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/mnist-onestep")
    p.add_argument("--quick", action="store_true", help="tiny run, for tests")
    a = p.parse_args(argv)
    if a.quick:
        a.pairs, a.ode_steps, a.steps = 40, 2, 3
    gen = seed_everything(a.seed, a.threads)
    ckpt = Checkpoint(a.out / "checkpoints" / "mnist-onestep", a.every)
    pairs_path = a.out / "checkpoints" / "mnist-onestep-pairs.safetensors"
    resuming = a.resume and ckpt.exists() and pairs_path.is_file()
    log = Logger(a.out / "logs" / "mnist-onestep.jsonl", append=resuming)
    start = time.time()
    teacher = load_network("mnist-flow", a.teacher_dir)
    if a.resume and pairs_path.is_file():
        cached = load_file(str(pairs_path))
        z, y, x, gen_state = cached["z"], cached["y"], cached["x"], cached["rng"]
        gen.set_state(gen_state)
        pair_seconds = float(cached["seconds"])
    else:
        y = torch.arange(a.pairs) % 11  # 10 = the null class
        z, y, x = reflow_pairs(FlowSampler(teacher, a.ode_steps, a.guidance, eta=0.0), y, gen)
        pair_seconds = time.time() - start
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"z": z, "y": y, "x": x, "rng": gen.get_state(), "seconds": torch.tensor(pair_seconds)}, str(pairs_path))
    log(stage="pairs", n=a.pairs, unconditional=int((y == NULL_CLASS).sum()), seconds=round(pair_seconds, 1))

    student = UNet(**teacher.config)
    student.load_state_dict((load_network(a.init, a.teacher_dir) if a.init else teacher).state_dict())
    student.requires_grad_(True).train()
    g = OneStepUNet(student)
    ema = EMA(student, 0.995)
    opt = torch.optim.AdamW(student.parameters(), lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps)))
    order = Batches(a.pairs, a.batch, gen)
    first, spent = 0, 0.0
    if resuming:
        first, extra = ckpt.load(student, ema, opt, sched, gen, order)
        spent = extra.get("regress_seconds", 0.0)
        log(resumed_at=first)
    regress_start = time.time() - spent
    for step in range(first, a.steps):
        idx = next(order)
        zb = z[idx]
        pred = zb + g.model(zb, zb.new_zeros(len(idx)), y[idx])
        loss = (pred - x[idx]).pow(2).mean()
        optimizer_step(loss, student, opt, sched, ema)
        if step % 50 == 0 or step == a.steps - 1:
            log(stage="regress", step=step, loss=round(loss.item(), 5))
        if ckpt.due() or step == a.steps - 1:
            ckpt.save(step, student, ema, opt, sched, gen, order, {"regress_seconds": time.time() - regress_start})
    regress_seconds = time.time() - regress_start
    card = {"kind": "onestep", "teacher": "mnist-flow",
            "data": {"dataset": f"{a.pairs} reflow pairs from mnist-flow ({a.ode_steps}-step ODE, "
                                f"guidance {a.guidance}), classes balanced, 1 in 11 unconditional",
                     "license": "derived from MNIST (CC BY-SA 3.0)"},
            "training": {"objective": "reflow pairs + direct regression ||z + u(z,0,c) - ODE(z,c)||^2",
                         "init": a.init or "teacher", "steps": a.steps, "batch": a.batch, "lr": a.lr, "ema": 0.995,
                         "seed": a.seed, "pair_seconds": round(pair_seconds, 1),
                         "wall_seconds": round(pair_seconds + regress_seconds, 1)}}
    card["command"] = command_line("rewardsteer.train.onestep", argv)
    save_model(ema.model, a.out, "mnist-onestep", card)


if __name__ == "__main__":
    main()
