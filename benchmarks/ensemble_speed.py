"""Vectorized ensemble members against a Python loop over them.

k = 5 members of `mnist-proxy` size (bundled weights when present; timing does not depend on the values),
forward only (best-of-N, search, SMC) and forward + backward to the images (ReNO), at several batch sizes
and thread counts. Three paths: the loop (`Ensemble(vectorize=False)`), the wide network the library uses
(`stacked.StackedNets`), and the torch.func route it falls back to (stack_module_state + vmap).
Repetitions alternate between the paths so machine noise hits all alike; ratios of medians
(loop / path, > 1 means faster than the loop) are reported, all from one run.
Usage: python benchmarks/ensemble_speed.py [--threads 1 2] [--quick] [--out benchmarks/results/ensemble_speed.json]
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

from rewardsteer.bundled.hub import WEIGHTS_DIR
from rewardsteer.bundled.nets import Classifier
from rewardsteer.rewards.base import ClassifierReward, Ensemble
from rewardsteer.rewards.stacked import stack_members


def members(k: int) -> list[ClassifierReward]:
    if all((WEIGHTS_DIR / f"mnist-proxy-{i}.safetensors").is_file() for i in range(k)):
        from rewardsteer.models import classifier_reward

        return [classifier_reward(f"mnist-proxy-{i}") for i in range(k)]
    nets = [Classifier(width=16, feature_dim=64).eval().requires_grad_(False) for _ in range(k)]
    return [ClassifierReward(n, f"proxy-{i}") for i, n in enumerate(nets)]


def paths(mem: list[ClassifierReward]) -> dict[str, Ensemble]:
    loop, wide, vmapped = (Ensemble(mem, vectorize=v) for v in (False, True, True))
    wide._stacks = stack_members(wide.members, wide=True)
    vmapped._stacks = stack_members(vmapped.members, wide=False)
    assert wide._stacks[0][1].wide is not None and vmapped._stacks[0][1].wide is None
    return {"loop": loop, "wide": wide, "vmap": vmapped}


def timed(fn, x, grad: bool) -> float:
    start = time.perf_counter()
    if grad:
        x = x.clone().requires_grad_(True)
        torch.autograd.grad(fn(x, 7).sum(), x)
    else:
        with torch.no_grad():
            fn(x, 7)
    return time.perf_counter() - start


def conv_share(fns, batch: int, threads: int, repeats: int = 5) -> list[dict]:
    """Per path, milliseconds per call spent in convolution kernels (forward and backward) vs everything else,
    from torch.profiler: the loop's convolutions bound what any stacking can save where FLOPs dominate."""
    from torch.profiler import profile

    torch.set_num_threads(threads)
    rows = []
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    for grad in (False, True):
        for name, fn in fns.items():
            timed(fn, x, grad)
            with profile() as prof:
                for _ in range(repeats):
                    timed(fn, x, grad)
            conv = sum(e.self_cpu_time_total for e in prof.key_averages() if "convolution" in e.key)
            total = sum(e.self_cpu_time_total for e in prof.key_averages())
            rows.append({"path": name, "batch": batch, "threads": threads, "backward": grad,
                         "conv_ms": round(conv / repeats / 1e3, 2), "other_ms": round((total - conv) / repeats / 1e3, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 64])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--profile-batch", type=int, default=64, help="batch of the convolution-time breakdown")
    p.add_argument("--quick", action="store_true", help="2 repeats, batch 4, 1 thread: checks the script runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ensemble_speed.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.batches, a.threads, a.profile_batch = 2, [4], [1], 4
    mem = members(a.k)
    fns = paths(mem)
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        for grad in (False, True):
            for b in a.batches:
                x = torch.rand(b, 1, 28, 28, generator=torch.Generator().manual_seed(b))
                for fn in fns.values():
                    timed(fn, x, grad)  # warm-up
                times = {name: [] for name in fns}
                for _ in range(a.repeats):
                    for name, fn in fns.items():
                        times[name].append(timed(fn, x, grad))
                med = {name: statistics.median(t) for name, t in times.items()}
                row = {"threads": threads, "batch": b, "backward": grad}
                row.update({f"{name}_ms": round(1e3 * t, 3) for name, t in med.items()})
                row.update({f"speedup_{name}": round(med["loop"] / med[name], 2) for name in fns if name != "loop"})
                rows.append(row)
                print(json.dumps(row), flush=True)
    profile_rows = conv_share(fns, a.profile_batch, a.threads[0])
    out = {"k": a.k, "members": [m.name for m in mem], "repeats": a.repeats, "torch": torch.__version__,
           "machine": platform.machine(), "rows": rows, "profile": profile_rows,
           "command": " ".join(["python benchmarks/ensemble_speed.py", *(sys.argv[1:] if argv is None else argv)])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
