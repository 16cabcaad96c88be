"""Does averaging the reward over random transformations (EOT) stop ReNO from fooling the proxies?

EOT: Athalye et al. 2018, "Synthesizing robust adversarial examples"; randomized smoothing: Cohen et al. 2019.
Task: for each target class, ReNO (default settings) steers the unconditional `mnist-onestep` (cond=None) with
one reward variant: the 5 noisy-label proxies (`proxies`), the same under `rs.robust` at a transform spec
(`proxies+eot:SPEC`), and, when `models.mixed_proxy_ensemble` exists, the mixed-family proxies (3 CNN + 3 MLP)
with and without EOT (`proxies-mixed`, `proxies-mixed+eot:SPEC`). Every variant starts from the same noises
per class (seed = class).
Reported per variant: the plain 5-proxy score (mean log p(target), one ruler for all variants), each held-out
judge's accuracy, the fraction of outputs every judge assigns to the target (judges agree), the largest gap
between two judges' accuracies, and seconds per ReNO step relative to `proxies` (the cost of the n copies).
Variants run interleaved class by class, so machine noise hits all alike.
Usage: python benchmarks/robust_rewards.py [--quick] [--classes 0 1 ...] [--n 8] [--iters 50]
       [--variants proxies proxies+eot:default ...] [--judges mnist-judge ...] [--threads 2]
       -> benchmarks/results/robust_rewards.json, docs/benchmarks/robust_rewards.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

import rewardsteer as rs
from rewardsteer import models
from rewardsteer.errors import RewardsteerError
from rewardsteer.rewards.robust import parse_transforms

DEFAULT_VARIANTS = ["proxies", "proxies+eot:light", "proxies+eot:default", "proxies-mixed",
                    "proxies-mixed+eot:default"]
DEFAULT_JUDGES = ["mnist-judge", "mnist-judge-vit", "mnist-judge-rff"]
BASES = {"proxies": lambda cls: models.proxy_ensemble(target=cls),
         "proxies-mixed": lambda cls: models.mixed_proxy_ensemble(target=cls)}  # guarded: it may not exist yet


def parse_variant(variant: str):
    """`base` or `base+eot[:SPEC]` -> (base, TransformSpec or None)."""
    base, plus, eot = variant.partition("+")
    if base not in BASES or (plus and not (eot == "eot" or eot.startswith("eot:"))):
        raise RewardsteerError(f"variant '{variant}': expected proxies or proxies-mixed, optionally +eot[:SPEC]")
    return base, (parse_transforms(eot[4:] or "default") if plus else None)


def load_judges(names: list[str]) -> dict:
    """The judges that exist, as networks giving logits; missing ones are skipped with a printed note."""
    judges, notes = {}, []
    for name in names:
        try:
            judges[name] = models.classifier(name)
        except RewardsteerError as e:
            notes.append(f"judge '{name}' skipped: {e}")
            print(notes[-1], flush=True)
    if not judges:
        raise RewardsteerError(f"none of the judges {names} exists")
    return judges, notes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", help="default 0..9")
    p.add_argument("--n", type=int, help="noises per class (default 8)")
    p.add_argument("--iters", type=int, help="ReNO iterations (default 50)")
    p.add_argument("--variants", nargs="+", help=f"default {' '.join(DEFAULT_VARIANTS)}")
    p.add_argument("--judges", nargs="+", default=DEFAULT_JUDGES)
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.add_argument("--quick", action="store_true",
                   help="defaults become class 3, 2 noises, 3 iterations, proxies vs proxies+eot:light,n=2, 1 thread")
    p.add_argument("--out", type=Path, help="default benchmarks/results/robust_rewards.json (quick: not written)")
    p.add_argument("--doc", type=Path, help="default docs/benchmarks/robust_rewards.md (quick: not written)")
    args = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(args)
    defaults = ({"classes": [3], "n": 2, "iters": 3, "variants": ["proxies", "proxies+eot:light,n=2"], "threads": 1}
                if a.quick else {"classes": list(range(10)), "n": 8, "iters": 50, "variants": DEFAULT_VARIANTS,
                                 "threads": 2})
    for k, v in defaults.items():  # options given on the command line win, in quick mode too
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not a.quick and a.out is None and a.doc is None:
        a.out, a.doc = Path("benchmarks/results/robust_rewards.json"), Path("docs/benchmarks/robust_rewards.md")
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        run(a, "python benchmarks/robust_rewards.py " + " ".join(args))
    finally:
        torch.set_num_threads(threads)


def run(a, command: str):
    judges, notes = load_judges(a.judges)
    variants = {}
    for v in a.variants:
        base, spec = parse_variant(v)
        try:
            BASES[base](a.classes[0])  # the mixed proxies are new: their function or weights may not exist yet
        except (AttributeError, RewardsteerError) as e:
            notes.append(f"variant '{v}' skipped: {e}")
            print(notes[-1], flush=True)
            continue
        variants[v] = (base, spec)
    gen = models.onestep()
    # warm-up: one-time costs (first traced ensemble, allocator) must not land on the first variant's clock
    rs.reno(gen, models.proxy_ensemble(target=a.classes[0]), n=a.n, iters=1, progress=False)
    acc = {v: {"samples": [], "targets": [], "objective": [], "seconds": 0.0, "steps": 0} for v in variants}
    for cls in a.classes:
        for v, (base, spec) in variants.items():
            reward = BASES[base](cls)
            if spec is not None:
                reward = rs.robust(reward, spec, seed=cls)
            res = rs.reno(gen, reward, cond=None, n=a.n, iters=a.iters, seed=cls, progress=False)
            s = acc[v]
            s["samples"].append(res.samples)
            s["targets"].append(torch.full((res.samples.shape[0],), cls))
            s["objective"].append(res.scores)
            s["seconds"] += res.spent["seconds"]
            s["steps"] += a.iters
            print(f"class {cls} {v}: objective {float(res.scores.mean()):.3f}, {res.spent['seconds']:.1f} s", flush=True)
    rows = [summarize(v, variants[v][1], s, judges) for v, s in acc.items()]
    plain = next((r["seconds_per_step"] for r in rows if r["variant"] == "proxies"), None)
    for r in rows:
        r["cost_ratio"] = round(r["seconds_per_step"] / plain, 2) if plain else None
        print(json.dumps(r), flush=True)
    table = markdown(rows, list(judges))
    print(table)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    result = {"command": command, "config": config, "judges": list(judges), "notes": notes, "rows": rows,
              "torch": torch.__version__}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    if a.doc:
        a.doc.parent.mkdir(parents=True, exist_ok=True)
        a.doc.write_text(DOC.format(command=command, table=table, n=a.n, iters=a.iters, classes=len(a.classes),
                                    notes="".join(f"- {n}\n" for n in notes) or "- none\n"))


@torch.no_grad()
def summarize(variant: str, spec, s: dict, judges: dict) -> dict:
    x, y = torch.cat(s["samples"]), torch.cat(s["targets"])
    proxy = torch.cat([models.proxy_ensemble(target=int(c))(x[y == c]) for c in y.unique()])
    hits = {name: net(x).argmax(1) == y for name, net in judges.items()}  # (N,) per judge
    accuracy = {name: float(h.float().mean()) for name, h in hits.items()}
    return {"variant": variant, "spec": asdict(spec) if spec else None, "outputs": int(x.shape[0]),
            "proxy_score": round(float(proxy.mean()), 4), "objective": round(float(torch.cat(s["objective"]).mean()), 4),
            "judge_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
            "judges_agree": round(float(torch.stack(list(hits.values())).all(0).float().mean()), 4),
            "judge_gap": round(max(accuracy.values()) - min(accuracy.values()), 4),
            "seconds_per_step": round(s["seconds"] / s["steps"], 4)}


def markdown(rows: list[dict], judges: list[str]) -> str:
    head = ["variant", "proxy score", *(f"{j} acc." for j in judges), "judges agree", "judge gap", "s/step", "cost ×"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r['variant']}`", f"{r['proxy_score']:.3f}", *(f"{r['judge_accuracy'][j]:.1%}" for j in judges),
                 f"{r['judges_agree']:.1%}", f"{r['judge_gap']:.1%}", f"{r['seconds_per_step']:.3f}",
                 "—" if r["cost_ratio"] is None else f"{r['cost_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


DOC = """# Hacking-resistant rewards: EOT against ReNO

`{command}` (results: `benchmarks/results/robust_rewards.json`). ReNO (default settings, {iters} iterations)
steers the unconditional `mnist-onestep` toward each of {classes} classes, {n} noises per class, with each
reward variant; `+eot:SPEC` is `rs.robust(reward, SPEC)`: every member averaged over n randomly shifted,
rotated, zoomed and noised copies (Athalye et al. 2018), the ensemble's mean taken after. The proxy score is
the plain 5-proxy mean log p(target) on the outputs (the same ruler for every variant); the judges are held
out and never optimized. Judges agree: outputs every judge assigns to the target. Judge gap: the largest
difference between two judges' accuracies. Cost ×: seconds per ReNO step over plain `proxies`.

{table}

Notes:
{notes}"""


if __name__ == "__main__":
    main()
