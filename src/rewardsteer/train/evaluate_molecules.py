"""Measure the molecule model's unsteered samples with the MOSES metrics and record them in docs/molecules.md.

N molecules are sampled (seeded, batches of 500, timed) and scored by `rewardsteer.molecules.metrics`:
validity, uniqueness, novelty against the full MOSES train set (1,584,663), IntDiv1, and the Wasserstein-1
distances of QED, logP, SA and MW plus the FCD against a seeded 10,000-molecule subsample of MOSES test.
N MOSES train molecules, scored the same way, are the ceiling (novelty is 0 for them by definition).
MOSES's published baselines (Polykovskiy et al. 2020; 30,000 samples, 3 seeds, the full test set) stand
beside ours where the metric is the same; FCD depends on the sample sizes, so the train row is the fair yardstick.

    python -m rewardsteer.train.evaluate_molecules [--n 10000] [--steps 32] [--name moses-mdlm] [--weights DIR]
                                                   [--json docs/molecules-eval.json] [--markdown docs/models.md]
                                                   [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from ..bundled.training import MOLECULES_BEGIN as BEGIN
from ..bundled.training import MOLECULES_END as END
from ..bundled.training import write_section as write_marked_section
from ..molecules import moses_mdlm
from ..molecules.data import load_moses
from ..molecules.metrics import Reference, evaluate_samples

BARS = {"validity": 0.99, "uniqueness": 0.95, "novelty": 0.80, "seconds_per_1000": 60.0}
# MOSES paper / README table (test set, mean of 3 runs of 30,000 samples); unique@1k is 1.0 for all four.
PUBLISHED = {
    "CharRNN": {"validity": 0.9748, "unique@1000": 1.0, "unique@10000": 0.9994, "novelty": 0.8419, "intdiv1": 0.8562,
                "fcd": 0.0732},
    "VAE": {"validity": 0.9767, "unique@1000": 1.0, "unique@10000": 0.9984, "novelty": 0.6949, "intdiv1": 0.8558,
            "fcd": 0.0990},
    "AAE": {"validity": 0.9368, "unique@1000": 1.0, "unique@10000": 0.9973, "novelty": 0.7931, "intdiv1": 0.8557,
            "fcd": 0.5555},
    "JTN-VAE": {"validity": 1.0, "unique@1000": 1.0, "unique@10000": 0.9996, "novelty": 0.9143, "intdiv1": 0.8551,
                "fcd": 0.3954},
}
ROWS = {"validity": "Validity ↑", "uniqueness": "Uniqueness (all valid) ↑", "unique@1000": "Unique@1k ↑",
        "unique@10000": "Unique@10k ↑", "novelty": "Novelty ↑", "intdiv1": "IntDiv1 (≈ train)", "fcd": "FCD/Test ↓",
        "wasserstein_qed": "W1 QED ↓", "wasserstein_logp": "W1 logP ↓", "wasserstein_sa": "W1 SA ↓",
        "wasserstein_mw": "W1 MW ↓"}
BATCH = 500


def sample_smiles(sampler, n: int, seed: int) -> tuple[list[str], float]:
    """n unsteered molecules as SMILES, and the seconds it took (sampling and decoding)."""
    generator = torch.Generator().manual_seed(seed)
    smiles = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, BATCH):
            smiles += sampler.to_smiles(sampler.sample(n=min(BATCH, n - i), generator=generator))
    return smiles, time.perf_counter() - start


def seeded_subset(smiles: list[str], k: int, seed: int) -> list[str]:
    order = torch.randperm(len(smiles), generator=torch.Generator().manual_seed(seed))[:k]
    return [smiles[i] for i in order.tolist()]


def bars(metrics: dict, speed: dict) -> dict[str, bool]:
    """The quality bars: validity ≥ 99%, uniqueness ≥ 95%, novelty ≥ 80%, 1,000 molecules in ≤ 60 s."""
    quality = {k: metrics.get(k, 0.0) >= BARS[k] for k in ("validity", "uniqueness", "novelty")}  # absent: no valid molecule
    return {**quality, "seconds_per_1000": speed["seconds_per_1000"] <= BARS["seconds_per_1000"]}


def evaluate(name: str, weights_dir: Path | None, n: int, steps: int, reference_size: int, with_fcd: bool,
             seed: int = 0) -> dict:
    sampler = moses_mdlm(num_steps=steps, name=name, weights_dir=weights_dir)
    smiles, seconds = sample_smiles(sampler, n, seed)
    speed = {"seconds": round(seconds, 2), "molecules_per_second": round(n / seconds, 1),
             "seconds_per_1000": round(1000 * seconds / n, 2), "threads": torch.get_num_threads(), "device": "cpu"}
    train = load_moses("train")
    reference = Reference(seeded_subset(load_moses("test"), reference_size, seed))
    metrics = evaluate_samples(smiles, set(train), reference, with_fcd=with_fcd)
    train_row = evaluate_samples(seeded_subset(train, n, seed + 1), None, reference, with_fcd=with_fcd)
    return {"model": name, "steps": steps, "n": n, "seed": seed, "speed": speed, "metrics": metrics,
            "bars": bars(metrics, speed), "train_reference": train_row, "published_moses": PUBLISHED,
            "reference": f"MOSES test, seeded subsample of {reference_size:,}", "examples": smiles[:8]}


def markdown(report: dict) -> str:
    """The section of docs/molecules.md: our metrics, the train ceiling and MOSES's baselines, then the bars."""
    name, n, speed = report["model"], report["n"], report["speed"]
    cols = [f"{name} ({report['steps']} steps)", f"MOSES train ({n:,})", *(f"{m} (published)" for m in PUBLISHED)]
    rows = [f"| Metric | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    for key, label in ROWS.items():
        values = [report["metrics"].get(key), report["train_reference"].get(key), *(p.get(key) for p in PUBLISHED.values())]
        if values[0] is not None:
            rows.append(f"| {label} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in values) + " |")
    passed = [f"{k} {'pass' if ok else 'FAIL'}" for k, ok in report["bars"].items()]
    return "\n".join([
        f"## Unsteered samples of `{name}` vs MOSES",
        "",
        f"{n:,} samples (seed {report['seed']}) against {report['reference']}; novelty against all 1,584,663 MOSES "
        f"train molecules. Published columns: Polykovskiy et al. 2020 (MOSES paper), 30,000 samples, full test set.",
        "FCD grows as the sample sizes shrink: compare it with the MOSES train row, scored exactly like our samples.",
        "",
        *rows,
        "",
        f"Sampling: {n:,} molecules in {speed['seconds']:.1f} s on CPU (threads: {speed['threads']}): "
        f"{speed['molecules_per_second']:.1f} molecules/s, {speed['seconds_per_1000']:.1f} s per 1,000.",
        "",
        "Bars (validity ≥ 0.99, uniqueness ≥ 0.95, novelty ≥ 0.80, ≤ 60 s per 1,000): " + ", ".join(passed) + ".",
        "",
        "Examples: " + ", ".join(f"`{s}`" for s in report["examples"] if s),
    ])


def write_section(path: Path, section: str) -> None:
    """Put `section` between the markers of `path`, replacing an earlier one (the file is created if missing)."""
    write_marked_section(path, section, BEGIN, END, "# Molecules\n\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--name", default="moses-mdlm")
    p.add_argument("--weights", type=Path, default=None, help="weights directory (default: the bundled weights)")
    p.add_argument("--json", type=Path, default=None, help="default docs/molecules-eval.json (none with --quick)")
    p.add_argument("--markdown", type=Path, default=None,
                   help="default docs/models.md (its moses-mdlm section; none with --quick)")
    p.add_argument("--quick", action="store_true", help="50 samples, 200 reference molecules, no FCD, no docs")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with_fcd = not a.quick and importlib.util.find_spec("fcd") is not None
    if not a.quick and not with_fcd:
        print("FCD skipped: the `fcd` package is not installed (pip install fcd==1.2.2)")
    report = evaluate(a.name, a.weights, 50 if a.quick else a.n, a.steps, 200 if a.quick else 10000, with_fcd)
    section = markdown(report)
    print(section)
    json_path = a.json or (None if a.quick else Path("docs/molecules-eval.json"))
    markdown_path = a.markdown or (None if a.quick else Path("docs/models.md"))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown_path:
        write_section(markdown_path, section)
    return report


if __name__ == "__main__":
    main()
