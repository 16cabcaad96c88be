"""Overhead of `reno` over a bare hand-written torch loop doing the same work on the same batch.

Both run the generator forward, the reward forward, the chi-prior term, backward, per-sample clipping and
a Nesterov-SGD step, iters + 1 evaluations each; `reno` adds accounting, best-iterate tracking, NaN
guards and the trace. Repetitions alternate between the two so machine noise hits both alike; the ratio
of medians is reported. Usage: python benchmarks/overhead.py [--quick] [--out benchmarks/results/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import rewardsteer as rs
from rewardsteer import models
from rewardsteer.methods.reno import clip_per_sample, prior_nll


def bare_loop(gen, reward, z0, cond, iters, lr=5.0, reg=0.01, clip=0.1):
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=lr, momentum=0.9, nesterov=True)
    for it in range(iters + 1):
        with torch.set_grad_enabled(it < iters):
            r = reward(gen(z, cond), cond)
            nll = prior_nll(z)
        if it == iters:
            break
        opt.zero_grad()
        (-(r - reg * nll).sum()).backward()
        z.grad = clip_per_sample(z.grad, clip)
        opt.step()
    return z


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="2 iterations, 1 repeat: checks the script runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    a = p.parse_args(argv)
    if a.quick:
        a.iters, a.repeats, a.n = 2, 1, 2
    torch.set_num_threads(a.threads)
    gen, reward = models.onestep(), models.proxy_ensemble(target=7)
    z0 = gen.sample_noise(a.n, torch.Generator().manual_seed(0))
    cond = None  # unconditional generator steered toward 7
    bare_loop(gen, reward, z0, cond, 1)  # warm-up
    times = {"reno": [], "bare": []}
    for _ in range(a.repeats):
        start = time.perf_counter()
        rs.reno(gen, reward, cond=cond, noise=z0, iters=a.iters, progress=False)
        times["reno"].append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_loop(gen, reward, z0, cond, a.iters)
        times["bare"].append(time.perf_counter() - start)
    per_iter = {k: statistics.median(v) / (a.iters + 1) for k, v in times.items()}
    out = {"task": f"mnist-onestep + 5-proxy ensemble, batch {a.n}, {a.iters} iterations",
           "seconds_per_iteration": per_iter, "ratio_reno_over_bare": per_iter["reno"] / per_iter["bare"],
           "repeats": a.repeats, "threads": a.threads, "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "raw_seconds": times}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("seconds_per_iteration", "ratio_reno_over_bare")}, indent=2))


if __name__ == "__main__":
    main()
