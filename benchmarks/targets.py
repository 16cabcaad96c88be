"""How rare the hard targets are (issue 28, item 2): each target's rate under the unsteered prior and on real data.

Images (`rewardsteer.bench.targets.IMAGE_TARGETS`, gold `ImageGold`): unsteered `mnist-onestep` samples
(cond=None, the mixture prior) and the 10k MNIST test digits, each measured once by `ImageGold.measure` (the
class all three held-out judges name with probability >= 0.9, realism, the analytic attributes) and held to
`ImageGold.meets`. Prior chunk k holds IMAGE_CHUNK samples from z = G.sample_noise(IMAGE_CHUNK,
torch.Generator().manual_seed(IMAGE_SEED + k)), cached as safetensors (with the images as uint8) under
`--cache`/images/, so a killed run resumes; `meta.json` there pins the weights the chunks were drawn with.
Molecules (`rewardsteer.bench.mol_targets.MOLECULE_TARGETS`, gold `meets`): unsteered `moses_mdlm(32)` SMILES,
chunk k = MOL_CHUNK samples from torch.Generator().manual_seed(MOL_SEED + k), cached as text under
`--cache`/molecules/, and the first 10,000 molecules of the MOSES test split.
Each rate comes with a one-sided 95% Clopper-Pearson upper bound (`bench.rates`); a target is certified rare when
it is <= 1/1,000. Thresholds were chosen after seeing the first SELECTION prior samples, so the rate on the
later samples alone is reported too (held-out).

    OMP_NUM_THREADS=1 python benchmarks/targets.py          # 100k images, 20k molecules -> docs/benchmarks/targets.{json,md}
    OMP_NUM_THREADS=1 python benchmarks/targets.py --quick  # < 60 s CPU -> runs/targets-quick/targets.{json,md}

--quick measures the first QUICK["images"] samples of image chunk 0 (a prefix of the full run's samples: the full
JSON records their counts under `quick_subset`, so tests re-check them exactly), the first QUICK["real"] test
digits and QUICK["test"] MOSES test molecules, and QUICK["molecules"] fresh prior molecules (chunk 0 of that size).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rewardsteer import models
from rewardsteer.bench import mol_targets as M
from rewardsteer.bench.rates import upper_bound
from rewardsteer.bench.targets import CONFIDENT, IMAGE_TARGETS, PEAK_LOW, REALISM_LOW, ImageGold, Target, within
from rewardsteer.bundled.data import load_mnist
from rewardsteer.bundled.hub import WEIGHTS_DIR
from rewardsteer.molecules import chem, moses_mdlm
from rewardsteer.molecules.data import load_moses

IMAGE_SEED, IMAGE_CHUNK, IMAGE_BATCH = 2_800_000, 5000, 250
MOL_SEED, MOL_CHUNK, MOL_STEPS = 28_000, 1000, 32
SELECTION = {"images": 25_000, "molecules": 4_000}
QUICK = {"images": 3000, "real": 2000, "molecules": 256, "test": 500}
QUANTILES = (0.025, 0.05, 0.5, 0.975)
RARE = 1e-3
IMAGE_WEIGHTS = ("mnist-onestep", *models.HELDOUT_JUDGES, "mnist-realism")


def weights_meta(names) -> dict:
    return {n: hashlib.sha256((WEIGHTS_DIR / f"{n}.safetensors").read_bytes()).hexdigest()[:16] for n in names}


def checked_dir(path: Path, meta: dict) -> Path:
    """`path`, created with `meta.json`; a cache drawn with other weights or seeds is refused, not mixed in."""
    path.mkdir(parents=True, exist_ok=True)
    file = path / "meta.json"
    if file.exists() and json.loads(file.read_text()) != meta:
        sys.exit(f"{path} was drawn with other weights, seeds or measurements ({file}); delete it or pass another --cache")
    file.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)  # a chunk appears whole or not at all


def draw_images(gold: ImageGold, k: int, size: int) -> dict[str, torch.Tensor]:
    gen = models.onestep().eval()
    z = gen.sample_noise(size, torch.Generator().manual_seed(IMAGE_SEED + k))
    with torch.inference_mode():
        x = torch.cat([gen(part) for part in z.split(IMAGE_BATCH)])  # (size, 1, 28, 28) in [0, 1]
    return {**gold.measure(x), "images_u8": (x * 255).round().to(torch.uint8)}


def prior_images(gold: ImageGold, n: int, cache: Path | None, log, chunks: dict) -> dict[str, torch.Tensor]:
    """The first n prior samples' measurements: cached chunks, drawing the missing ones (no cache: one chunk 0)."""
    if cache is None:
        parts = [draw_images(gold, 0, n)]
    else:
        fields = sorted(gold.measure(torch.zeros(1, 1, 28, 28)))  # a chunk measured by older code is refused
        folder = checked_dir(cache / "images", {"seed": IMAGE_SEED, "chunk": IMAGE_CHUNK, "weights": weights_meta(IMAGE_WEIGHTS),
                                                "fields": fields})
        parts = []
        for k in range((n + IMAGE_CHUNK - 1) // IMAGE_CHUNK):
            path = folder / f"chunk_{k:04d}_{IMAGE_CHUNK}.safetensors"
            if not path.exists():
                t = time.time()
                stats = draw_images(gold, k, IMAGE_CHUNK)
                write_atomic(path, lambda p, s=stats: save_file({a: v.contiguous() for a, v in s.items()}, str(p)))
                log(f"image chunk {k}: {IMAGE_CHUNK} samples in {time.time() - t:.0f} s")
                chunks["images_drawn"] += 1
            else:
                chunks["images_read"] += 1
            parts.append(load_file(str(path)))
    return {a: torch.cat([p[a] for p in parts])[:n] for a in parts[0] if a != "images_u8"}


def prior_molecules(n: int, size: int, cache: Path | None, log, chunks: dict) -> list[str]:
    """The first n prior SMILES ('' for a sequence that decodes to nothing), from chunks of `size`."""
    folder = None if cache is None else checked_dir(
        cache / "molecules", {"seed": MOL_SEED, "steps": MOL_STEPS, "weights": weights_meta(["moses-mdlm"])})
    smiles = []
    for k in range((n + size - 1) // size):
        path = None if folder is None else folder / f"chunk_{k:04d}_{size}.txt"
        if path is not None and path.exists():
            smiles += path.read_text().split("\n")[:-1]
            chunks["molecules_read"] += 1
            continue
        t = time.time()
        sampler = moses_mdlm(MOL_STEPS)
        with torch.no_grad():
            chunk = sampler.to_smiles(sampler.sample(None, generator=torch.Generator().manual_seed(MOL_SEED + k), n=size))
        if path is not None:
            write_atomic(path, lambda p, c=chunk: p.write_text("\n".join(c) + "\n"))
        log(f"molecule chunk {k}: {size} samples in {time.time() - t:.0f} s")
        chunks["molecules_drawn"] += 1
        smiles += chunk
    return smiles[:n]


def table_of(smiles: list[str], cache: Path | None) -> dict[str, torch.Tensor]:
    """`mol_targets.property_table` of SMILES, cached beside their text as safetensors."""
    if cache is not None and cache.exists():
        return load_file(str(cache))
    table = M.property_table([chem.mol(s) for s in smiles])
    if cache is not None:
        write_atomic(cache, lambda p: save_file({k: v.contiguous() for k, v in table.items()}, str(p)))
    return table


def rate(k: int, n: int) -> dict:
    return {"hits": k, "n": n, "rate": k / n if n else None, "upper95": upper_bound(k, n) if n else None}


def image_counts(prior: dict, real: dict, selection: int) -> dict:
    """Per image target: prior and real hits, held-out hits, and how often each part of the rule holds."""
    rows = {}
    for name, t in IMAGE_TARGETS.items():
        hit = ImageGold.meets(prior, t)
        base = ImageGold.meets(prior, Target(t.name, t.klass))  # the rule without the attribute ranges
        n, real_n = len(hit), len(real["cls"])
        rows[name] = {
            "class": t.klass, "ranges": {a: list(r) for a, r in t.ranges.items()}, "description": t.description,
            "prior": rate(int(hit.sum()), n), "prior_heldout": rate(int(hit[selection:].sum()), max(n - selection, 0)),
            "prior_class_realistic": int(base.sum()),
            "prior_parts": {a: int((base & within(prior, {a: r})).sum()) for a, r in t.ranges.items()},
            "real": rate(int(ImageGold.meets(real, t).sum()), real_n),
            "real_by_label": int(ImageGold.meets({**real, "cls": real["label"]}, t).sum())}
    return rows


def quantiles(x: torch.Tensor) -> dict:
    return {f"q{q:g}": round(float(v), 4) for q, v in zip(QUANTILES, torch.quantile(x.float(), torch.tensor(QUANTILES)))}


def image_summary(prior: dict, real: dict) -> dict:
    return {"judges_agree": int((prior["cls"] >= 0).sum()), "realism_pass": int((prior["realism"] >= REALISM_LOW).sum()),
            "peak_pass": int((prior["peak"] >= PEAK_LOW).sum()), "real_peak_pass": int((real["peak"] >= PEAK_LOW).sum()),
            "class_counts": torch.bincount(prior["cls"] + 1, minlength=11)[1:].tolist(), "n": len(prior["cls"]),
            "real_judges_agree": int((real["cls"] >= 0).sum()),
            "real_judged_equals_label": int((real["cls"] == real["label"]).sum()),
            "real_realism_pass": int((real["realism"] >= REALISM_LOW).sum()), "real_n": len(real["cls"])}


def molecule_counts(prior: dict, test: dict, selection: int) -> dict:
    rows = {}
    valid = torch.isfinite(prior["qed"])
    for name, t in M.MOLECULE_TARGETS.items():
        hit, n = M.meets(prior, t), len(prior["qed"])
        row = {"ranges": {p: list(r) for p, r in t.ranges.items()}, "description": t.description, "rare_by_design": t.rare,
               "prior": rate(int(hit.sum()), n), "prior_heldout": rate(int(hit[selection:].sum()), max(n - selection, 0)),
               "prior_parts": {p: int((valid & within(prior, {p: r})).sum()) for p, r in t.ranges.items()},
               "test": rate(int(M.meets(test, t).sum()), len(test["qed"]))}
        row["certified_rare"] = row["prior"]["upper95"] <= RARE
        rows[name] = row
    return rows


def property_summary(prior: dict, test: dict) -> dict:
    def median(x):
        x = x[torch.isfinite(x)]
        return round(float(x.median()), 4) if len(x) else None
    return {p: {"spread_test_sd": round(float(test[p][torch.isfinite(test[p])].std()), 4), "median_test": median(test[p]),
                "median_prior": median(prior[p])} for p in M.PROPERTIES}


def head(table: dict, n: int) -> dict:
    return {k: v[:n] for k, v in table.items()}


def measure_images(a, log, chunks: dict) -> dict:
    gold = ImageGold()
    data = load_mnist().test
    n_real = QUICK["real"] if a.quick else len(data.labels)
    real = {**gold.measure(data.images[:n_real]), "label": data.labels[:n_real]}
    prior = prior_images(gold, QUICK["images"] if a.quick else a.images, None if a.quick else a.cache, log, chunks)
    log(f"images measured: {len(prior['cls'])} prior, {n_real} real")
    out = {"targets": image_counts(prior, real, SELECTION["images"]), "summary": image_summary(prior, real),
           "realism_quantiles": {"real": quantiles(real["realism"]), "prior": quantiles(prior["realism"])}}
    if not a.quick:  # what --quick measures, counted here on the same samples
        small_prior, small_real = head(prior, QUICK["images"]), head(real, QUICK["real"])
        out["quick_subset"] = {"targets": image_counts(small_prior, small_real, SELECTION["images"]),
                               "summary": image_summary(small_prior, small_real)}
    return out


def measure_molecules(a, log, chunks: dict) -> dict:
    cache = None if a.quick else a.cache
    n, size = (QUICK["molecules"], QUICK["molecules"]) if a.quick else (a.molecules, MOL_CHUNK)
    smiles = prior_molecules(n, size, cache, log, chunks)
    tables = [table_of(smiles[i:i + size], None if cache is None else
                       cache / "molecules" / f"chunk_{i // size:04d}_{size}.props.safetensors")
              for i in range(0, len(smiles), size)]
    prior = {p: torch.cat([t[p] for t in tables]) for p in M.PROPERTIES}
    n_test = QUICK["test"] if a.quick else a.test
    test = table_of(load_moses("test", limit=n_test), None if cache is None else cache / f"moses_test_{n_test}.props.safetensors")
    test = {p: test[p] for p in M.PROPERTIES}
    log(f"molecules measured: {len(smiles)} prior, {n_test} MOSES test")
    out = {"targets": molecule_counts(prior, test, SELECTION["molecules"]), "valid": int(torch.isfinite(prior["qed"]).sum()),
           "n": len(smiles), "test_n": n_test, "properties": property_summary(prior, test)}
    if not a.quick:
        small = head(test, QUICK["test"])
        out["quick_subset"] = {"test": {name: int(M.meets(small, t).sum()) for name, t in M.MOLECULE_TARGETS.items()}}
    return out


def rules() -> dict:
    return {"class": f"every one of {list(models.HELDOUT_JUDGES)} names the target class with max probability >= {CONFIDENT}",
            "realism": f"mnist-realism >= REALISM_LOW = {REALISM_LOW} (its 5% quantile over the 10k real test digits)",
            "peak": f"the brightest pixel >= PEAK_LOW = {PEAK_LOW} (every real MNIST digit reaches 0.992): a dimmed digit, "
                    "which the attributes would read as thin, fails",
            "attributes": "rewardsteer.bench.attributes.measure (analytic; ink = pixels > 0.5), closed ranges",
            "molecules": "valid RDKit molecule and every property (rewardsteer.bench.mol_targets.PROPERTIES) in its closed range",
            "rates": "over all samples drawn; upper95 = one-sided 95% Clopper-Pearson bound; rare: upper95 <= 1/1,000",
            "prior_images": f"models.onestep() cond=None; chunk k: torch.Generator().manual_seed({IMAGE_SEED} + k), "
                            f"{IMAGE_CHUNK} per chunk",
            "prior_molecules": f"molecules.moses_mdlm({MOL_STEPS}); chunk k: torch.Generator().manual_seed({MOL_SEED} + k), "
                               f"{MOL_CHUNK} per chunk",
            "held_out": f"prior samples after the first {SELECTION['images']} images / {SELECTION['molecules']} molecules, "
                        "which played no part in choosing the thresholds"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few thousand images, a few hundred molecules, no cache")
    p.add_argument("--images", type=int, default=100_000, help="prior image samples")
    p.add_argument("--molecules", type=int, default=20_000, help="prior molecules")
    p.add_argument("--test", type=int, default=10_000, help="MOSES test molecules (file order)")
    p.add_argument("--cache", type=Path, default=Path("runs/targets-cache"))
    p.add_argument("--out", type=Path, default=None, help="default: docs/benchmarks (runs/targets-quick with --quick)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    out_dir = a.out or Path("runs/targets-quick" if a.quick else "docs/benchmarks")
    torch.set_num_threads(a.threads)
    start, cpu = time.time(), time.process_time()
    log, chunks = (lambda line: print(line, flush=True)), dict.fromkeys(
        ("images_read", "images_drawn", "molecules_read", "molecules_drawn"), 0)
    result = {"rules": rules(), "images": measure_images(a, log, chunks), "molecules": measure_molecules(a, log, chunks),
              "chunks": chunks,
              "command": " ".join(["OMP_NUM_THREADS=1 python benchmarks/targets.py", *(sys.argv[1:] if argv is None else argv)]),
              "quick": a.quick, "threads": a.threads,
              "wall_s": round(time.time() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "targets.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "targets.md").write_text(render(result))
    print(f"wrote {out_dir / 'targets.json'} and targets.md ({result['wall_s']} s wall, {result['cpu_s']} s CPU)")
    return result


def fmt_ranges(ranges: dict) -> str:
    def one(name, lo, hi):
        if lo is not None and hi is not None:
            return f"{name} ∈ [{lo:g}, {hi:g}]"
        return f"{name} ≥ {lo:g}" if lo is not None else f"{name} ≤ {hi:g}"
    return " ∧ ".join(one(n, *r) for n, r in ranges.items())


def fmt_rate(r: dict) -> str:
    return f"{r['hits']} ({r['upper95']:.1e})" if r["n"] else "–"


def held(r: dict) -> str:
    return str(r["prior_heldout"]["hits"]) if r["prior_heldout"]["n"] else "–"


def cache_note(chunks: dict | None) -> str:
    if not chunks:
        return ""
    return (f" Prior chunks read from the cache: {chunks['images_read']} of "
            f"{chunks['images_read'] + chunks['images_drawn']} (images), {chunks['molecules_read']} of "
            f"{chunks['molecules_read'] + chunks['molecules_drawn']} (molecules); the rest drawn by this run.")


def half_chance(r: dict) -> str:
    if not r["n"]:
        return "–"
    return f"{math.log(2) / r['rate']:,.0f}" if r["hits"] else f"≥ {math.log(2) / r['upper95']:,.0f}"


def render(res: dict) -> str:
    img, mol = res["images"], res["molecules"]
    s, n = img["summary"], img["summary"]["n"]
    sel = SELECTION["images"]
    lines = ["# Hard targets: how rare they are under the unsteered priors", "",
             f"Written by `{res['command']}` ({res['wall_s']} s wall, {res['cpu_s']} s CPU, {res['threads']} thread)"
             + (" — QUICK MODE: small samples, a smoke run, not the published numbers." if res["quick"] else "."),
             "A target is **rare** when the one-sided 95% upper bound on its prior rate is ≤ 1/1,000. "
             "The targets are code: `rewardsteer.bench.targets.IMAGE_TARGETS` and "
             "`rewardsteer.bench.mol_targets.MOLECULE_TARGETS`." + cache_note(res.get("chunks")),
             "", "## Image targets", "",
             f"Prior: {n:,} unsteered `mnist-onestep` samples (cond=None). Real: the {s['real_n']:,} MNIST test digits, "
             "held to the same rule (judged class, not label).", "",
             f"| target | class + ranges | prior hits /{n:,} (95% UB) | held-out /{max(n - sel, 0):,} | "
             f"class ∧ realism ∧ peak, then each range alone | real /{s['real_n']:,} (rate) | best-of-N for 50% |",
             "|---|---|---|---|---|---|---|"]
    for name, r in img["targets"].items():
        parts = ", ".join(f"{a}: {k}" for a, k in r["prior_parts"].items())
        lines.append(f"| {name} | {r['class']}: {fmt_ranges(r['ranges'])} | {fmt_rate(r['prior'])} | "
                     f"{held(r)} | {r['prior_class_realistic']:,}; {parts} | "
                     f"{r['real']['hits']} ({r['real']['rate']:.2%}) | {half_chance(r['prior'])} |")
    rq, pq = img["realism_quantiles"]["real"], img["realism_quantiles"]["prior"]
    lines += ["", f"Prior overall: all judges agree on {s['judges_agree'] / n:.1%}, realism passes {s['realism_pass'] / n:.1%}, "
              f"peak passes {s['peak_pass'] / n:.3%}, judged classes {min(s['class_counts']):,}–{max(s['class_counts']):,} "
              f"each. Real: judges agree on {s['real_judges_agree'] / s['real_n']:.1%}, realism passes "
              f"{s['real_realism_pass'] / s['real_n']:.1%}, peak passes {s['real_peak_pass'] / s['real_n']:.1%}. "
              "Best-of-N for 50%: the samples a perfect selector needs for an even chance of one success, ln 2 / rate "
              "(≥ ln 2 / upper bound when the prior never met it); the issue's bar asks ≥ 1,000.", "",
              "| realism (`mnist-realism`) | " + " | ".join(rq) + " |", "|---|" + "---|" * len(rq),
              "| real test digits | " + " | ".join(f"{v:.3f}" for v in rq.values()) + " |",
              "| prior samples | " + " | ".join(f"{v:.3f}" for v in pq.values()) + " |", "",
              "## Molecule targets", "",
              f"Prior: {mol['n']:,} unsteered `moses_mdlm({MOL_STEPS})` samples ({mol['valid'] / mol['n']:.1%} valid). "
              f"Reference: the first {mol['test_n']:,} molecules of the MOSES test split.", "",
              f"| target | ranges | prior hits /{mol['n']:,} (95% UB) | rare "
              f"| held-out /{max(mol['n'] - SELECTION['molecules'], 0):,} "
              f"| valid prior meeting each range alone | MOSES test /{mol['test_n']:,} (rate) |", "|---|---|---|---|---|---|---|"]
    for name, r in mol["targets"].items():
        flag = "yes" if r["certified_rare"] else "**no**"
        if not r["rare_by_design"]:
            flag += " (reference row)"
        parts = ", ".join(f"{p}: {k}" for p, k in r["prior_parts"].items())
        lines.append(f"| {name} | {fmt_ranges(r['ranges'])} | {fmt_rate(r['prior'])} | {flag} | "
                     f"{held(r)} | {parts} | "
                     f"{r['test']['hits']} ({r['test']['rate']:.1%}) |")
    lines += ["", "| property | sd on MOSES test (the objective's unit) | median, MOSES test | median, prior |",
              "|---|---|---|---|"]
    lines += [f"| {p} | {v['spread_test_sd']:.4g} | {v['median_test']} | {v['median_prior']} |"
              for p, v in mol["properties"].items()]
    lines += ["", "## Rules", ""] + [f"- **{k}**: {v}" for k, v in res["rules"].items()]
    lines += ["", "## Caveats", "", *CAVEATS]
    return "\n".join(lines) + "\n"


CAVEATS = [
    "- The attributes read ink as pixels > 0.5, so dimming a digit thins it (a real 0 dimmed to 0.7 meets thin-0 2.4 "
    "times as often), and neither the realism monitor nor the judges object; the peak gate (brightest pixel ≥ 0.9) "
    "rejects uniform dimming, but a stroke dimmed only at its edges still reads thinner.",
    "- Thresholds were picked after looking at the prior (the first 25k images / 4k molecules) and at real data; the "
    "held-out columns count only later samples, which played no part.",
    "- Thin targets (thin-0, thin-8) can be met by samples whose strokes are faint or broken: they pass the realism "
    "gate and every judge. A steering method may exploit this; a stricter (per-class) realism gate would close part of it.",
    "- Moment slant responds to shape as well as lean (7s with a long top bar read as left-leaning): targets are "
    "defined on the measurement.",
    "- Thickness (ink area over skeleton length) is biased up for thick, short strokes (the skeleton loses about "
    "w − 1 px at each end); every target uses its thin side, where the bias is small.",
    "- Height is nearly constant on MNIST (digits are size-normalised to a 20-px box), so short targets are rare among "
    "real digits too; the prior draws heights of 21–22 px that real digits never have.",
    "- The molecule targets are rare because the bundled prior is far from MOSES (compare the medians above), not "
    "because they are rare chemistry: they measure how far steering pulls a weak prior toward the data.",
    "- The issue's example (issue-example) is met by the prior more often than 1/1,000 and is kept only as a reference row.",
]


if __name__ == "__main__":
    main()
