"""Best-of-N, random search, zero-order search and ReNO at equal NFE per output sample on the bundled task.

Task: steer the unconditional `mnist-onestep` (it draws any digit) toward class c with the 5-proxy ensemble
(mean log-probability of c); `mnist-judge` is held out. For each NFE budget per output sample, each method
produces B outputs per class and seed;
reported: proxy score (optimized), judge log-probability and accuracy (held out), backward passes, seconds.
Usage: python benchmarks/methods.py [--quick] -> benchmarks/results/methods.json, docs/benchmarks/methods.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import rewardsteer as rs
from rewardsteer import models


def outputs(method: str, nfe: int, gen, proxies, judge, seed: int, b: int) -> list:
    common = dict(cond=None, heldout={"judge": judge}, progress=False)  # unconditional generator
    if method == "best_of_n":  # N = nfe candidates per output, one independent draw per output
        return [rs.best_of_n(gen, proxies, n=nfe, k=1, seed=seed * 1000 + i, **common) for i in range(b)]
    if method == "random_search":
        rounds = max(1, nfe // 8)
        return [rs.random_search(gen, proxies, rounds=rounds, candidates_per_round=nfe // rounds, seed=seed * 1000 + i,
                                 **common) for i in range(b)]
    if method == "zero_order_search":
        return [rs.zero_order_search(gen, proxies, n=b, iters=max(1, (nfe - 1) // 4), neighbours=4, seed=seed, **common)]
    if method == "reno":
        return [rs.reno(gen, proxies, n=b, iters=nfe - 1, seed=seed, **common)]
    raise ValueError(method)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--budgets", type=int, nargs="+", default=[11, 51])
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/methods.json"))
    p.add_argument("--doc", type=Path, default=Path("docs/benchmarks/methods.md"))
    a = p.parse_args(argv)
    if a.quick:
        a.budgets, a.classes, a.seeds, a.per_class = [5], [3], 1, 2
    torch.set_num_threads(2)
    gen = models.onestep()
    judge_net = models.classifier("mnist-judge")
    rows = []
    for nfe in a.budgets:
        for method in ("best_of_n", "random_search", "zero_order_search", "reno"):
            acc = {"proxy": [], "judge_logp": [], "judge_acc": [], "nfe": 0, "backward": 0, "seconds": 0.0, "n": 0}
            for cls in a.classes:
                proxies = models.proxy_ensemble(target=cls)
                judge = models.classifier_reward("mnist-judge", target=cls)
                for seed in range(a.seeds):
                    start = time.perf_counter()
                    results = outputs(method, nfe, gen, proxies, judge, seed, a.per_class)
                    acc["seconds"] += time.perf_counter() - start
                    for r in results:
                        acc["proxy"].append(r.scores)
                        acc["judge_logp"].append(r.heldout_scores["judge"])
                        with torch.no_grad():
                            acc["judge_acc"].append((judge_net(r.samples).argmax(1) == cls).float())
                        acc["nfe"] += r.spent["nfe"]
                        acc["backward"] += r.spent["backward"]
                        acc["n"] += r.samples.shape[0]
            row = {"nfe_budget": nfe, "method": method, "outputs": acc["n"],
                   "nfe_per_output": acc["nfe"] / acc["n"], "backward_per_output": acc["backward"] / acc["n"],
                   "proxy_score": float(torch.cat(acc["proxy"]).mean()),
                   "judge_logp": float(torch.cat(acc["judge_logp"]).mean()),
                   "judge_accuracy": float(torch.cat(acc["judge_acc"]).mean()),
                   "seconds_per_output": acc["seconds"] / acc["n"]}
            rows.append(row)
            print(json.dumps(row))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"config": vars(a) | {"out": str(a.out), "doc": str(a.doc)}, "rows": rows}, indent=2) + "\n")
    lines = ["| NFE budget | method | NFE/output | backward/output | proxy score | judge log p | judge accuracy | s/output |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['nfe_budget']} | {r['method']} | {r['nfe_per_output']:.1f} | {r['backward_per_output']:.1f} | "
                     f"{r['proxy_score']:.3f} | {r['judge_logp']:.3f} | {r['judge_accuracy']:.1%} | "
                     f"{r['seconds_per_output']:.2f} |")
    table = "\n".join(lines)
    if not a.quick:
        a.doc.parent.mkdir(parents=True, exist_ok=True)
        a.doc.write_text(DOC.format(table=table, classes=len(a.classes), seeds=a.seeds, per_class=a.per_class) + "\n")
    print(table)


DOC = """# Methods at equal NFE (bundled task)

`python benchmarks/methods.py` (results: `benchmarks/results/methods.json`). Task: steer the unconditional
`mnist-onestep` (it draws any digit) toward each of {classes} classes with the 5-proxy ensemble (mean
log-probability of the class) as the reward, {seeds} seeds × {per_class} outputs per class; `mnist-judge`
is held out and never optimized. Each output gets the same NFE budget (generator evaluations); ReNO
additionally spends one backward pass per evaluation but the last, which the table shows, as does wall time.

{table}
"""


if __name__ == "__main__":
    main()
