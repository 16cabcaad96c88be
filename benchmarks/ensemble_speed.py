"""Vectorized ensemble (torch.func stack_module_state + vmap) against a Python loop over the members.

k = 5 members of `mnist-proxy` size (bundled weights when present; timing does not depend on the values),
forward only (best-of-N, search) and forward + backward to the images (ReNO), at several batch sizes.
Repetitions alternate between the two paths so machine noise hits both alike; the ratio of medians
(loop / vmap, > 1 means vmap is faster) is reported, all from one run.
Usage: python benchmarks/ensemble_speed.py [--threads 1] [--quick] [--out benchmarks/results/ensemble_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from rewardsteer.hub import WEIGHTS_DIR
from rewardsteer.nets import Classifier
from rewardsteer.rewards import ClassifierReward, Ensemble


def members(k: int) -> list[ClassifierReward]:
    if all((WEIGHTS_DIR / f"mnist-proxy-{i}.safetensors").is_file() for i in range(k)):
        from rewardsteer.models import classifier_reward

        return [classifier_reward(f"mnist-proxy-{i}") for i in range(k)]
    nets = [Classifier(width=16, feature_dim=64).eval().requires_grad_(False) for _ in range(k)]
    return [ClassifierReward(n, f"proxy-{i}") for i, n in enumerate(nets)]


def timed(fn, x, grad: bool) -> float:
    start = time.perf_counter()
    if grad:
        x = x.clone().requires_grad_(True)
        torch.autograd.grad(fn(x, 7).sum(), x)
    else:
        with torch.no_grad():
            fn(x, 7)
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 64])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 repeats, batch 4 only: checks the script runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ensemble_speed.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.batches = 2, [4]
    torch.set_num_threads(a.threads)
    mem = members(a.k)
    paths = {"vmap": Ensemble(mem, vectorize=True), "loop": Ensemble(mem, vectorize=False)}
    rows = []
    for grad in (False, True):
        for b in a.batches:
            x = torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(b))
            for fn in paths.values():
                timed(fn, x, grad)  # warm-up (and the one-time stacking of the weights)
            times = {name: [] for name in paths}
            for _ in range(a.repeats):
                for name, fn in paths.items():
                    times[name].append(timed(fn, x, grad))
            med = {name: statistics.median(t) for name, t in times.items()}
            rows.append({"batch": b, "backward": grad, "loop_ms": round(1e3 * med["loop"], 3),
                         "vmap_ms": round(1e3 * med["vmap"], 3), "speedup": round(med["loop"] / med["vmap"], 2)})
            print(json.dumps(rows[-1]), flush=True)
    out = {"k": a.k, "members": [m.name for m in mem], "threads": a.threads, "repeats": a.repeats,
           "torch": torch.__version__, "machine": platform.machine(), "rows": rows,
           "command": " ".join(["python benchmarks/ensemble_speed.py", *(sys.argv[1:] if argv is None else argv)])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
