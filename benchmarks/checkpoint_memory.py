"""Memory saved by gradient checkpointing when ReNO backpropagates through an unrolled multi-step sampler.

Each configuration runs in a fresh process: peak resident memory (ru_maxrss) after two `reno` iterations
through `mnist-flow`'s ODE sampler, minus the peak after loading the model, so only the optimization's
own memory counts. Usage: python benchmarks/checkpoint_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, time, torch
import rewardsteer as rs
from rewardsteer import models
torch.set_num_threads(2)
gen = models.unrolled_flow(num_steps={steps}, checkpoint={ckpt})
reward = models.classifier_reward("mnist-proxy-0", target=7)
z = gen.sample_noise({n}, torch.Generator().manual_seed(0))
with torch.no_grad():
    gen(z, None)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
rs.reno(gen, reward, cond=None, noise=z, iters=2, progress=False)
seconds = time.perf_counter() - start
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, seconds)
"""


def measure(steps: int, ckpt: bool, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(steps=steps, ckpt=ckpt, n=n)], capture_output=True,
                         text=True, check=True)
    base, peak, seconds = out.stdout.split()
    return {"steps": steps, "checkpoint": ckpt, "batch": n, "extra_peak_mb": (int(peak) - int(base)) / 1024,
            "seconds_for_2_iterations": float(seconds)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/checkpoint_memory.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.n = [2], 2
    rows = [measure(s, c, a.n) for s in a.steps for c in (False, True)]
    for s in a.steps:
        plain, ckpt = (next(r for r in rows if r["steps"] == s and r["checkpoint"] == c) for c in (False, True))
        ckpt["memory_saved_mb"] = plain["extra_peak_mb"] - ckpt["extra_peak_mb"]
        ckpt["time_ratio"] = ckpt["seconds_for_2_iterations"] / plain["seconds_for_2_iterations"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
