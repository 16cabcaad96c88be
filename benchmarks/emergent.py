"""The emergent-digit sampler (issue 28, item 1): prior bars, the decision curve, particles that change the digit.

On N samples (default 1,000) of `models.emergent_sampler` with cond=None, for the ODE (eta = 0) and the SDE
(eta = 1), T = 20 steps, guidance 2: each judge's confident share and class shares, the Fréchet distance in
`mnist-judge` features to the 10k test digits over that of the same sampler's class-conditional samples, UNet rows
per sample, and per step how often the class predicted from x_t (and of x̂0) is the final class. Then FK and SVDD
toward a digit on the emergent sampler and on `flow_sampler`'s mixture prior: how often the returned sample's class
differs from the class its ancestor x_0 had at step 0. Bars and definitions: `rewardsteer.bench.emergent`.

Parts, each written to RESULTS/PART.json when it finishes (rerunning skips finished parts unless --force), so the
long run can go in pieces, in parallel processes, and be reported from whatever has finished:
    ode, sde                    the prior settings (about 30–40 min each at N = 1,000 on a loaded 2-core machine)
    conditional-ode, -sde       the class-conditional Fréchet reference (half the cost; without it the report
                                uses docs/models.md's number and says so)
    particles                   FK and SVDD on both samplers
Usage:
    python benchmarks/emergent.py [--parts ode,sde,...] [--n 1000] [--render-only]
        -> benchmarks/results/emergent/*.json, docs/benchmarks/emergent.{json,md,png}, docs/models.md's section
    python benchmarks/emergent.py --quick --out DIR   (a few dozen samples, 4 steps, < 60 s; what the test runs)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rewardsteer import models
from rewardsteer.bench import emergent as em
from rewardsteer.bench import emergent_report
from rewardsteer.bundled.training import EMERGENT_BEGIN, EMERGENT_END, write_section

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("ode", "sde", "conditional-ode", "conditional-sde", "particles")
ETA = {"ode": 0.0, "sde": 1.0}
# docs/models.md (docs/models-eval.json): the conditional samples' Fréchet, (eta, steps) -> (value, samples)
DOCS_CONDITIONAL = {(0.0, 20): (2.56, 1000), (1.0, 20): (4.40, 200)}


def label(kind: str, steps: int) -> str:
    return f"{'ODE (eta=0)' if kind == 'ode' else 'SDE (eta=1)'}, {steps} steps"


def run_setting(kind: str, a, judges: dict, reference: torch.Tensor, log) -> dict:
    sampler = models.emergent_sampler(a.steps, a.guidance, eta=ETA[kind], prune=a.prune)
    traj = em.sample_with_decisions(sampler, a.n, a.seed, judges["mnist-judge"], a.batch, log)
    final = judges["mnist-judge"](traj.images).argmax(1)
    return {**em.prior_measurements(traj.images, judges, reference), "rows_per_sample": traj.rows / a.n,
            "seconds": round(traj.seconds, 1), "normalized": sampler.normalized,
            "decision_curve": em.decision_curve(sampler, traj, final)}


def run_conditional(kind: str, a, judges: dict, reference: torch.Tensor, log) -> dict:
    sampler = models.emergent_sampler(a.steps, a.guidance, eta=ETA[kind], prune=a.prune)
    images, cost = em.conditional_samples(sampler, a.n, a.seed, a.batch)
    acc = float(judges["mnist-judge"](images).argmax(1).eq(torch.arange(a.n) % 10).float().mean())
    log(f"conditional {kind}: {cost}")
    return {"n": a.n, "frechet_judge": em.frechet_to_test(judges["mnist-judge"], images, reference),
            "judge_accuracy": acc, **cost}


def run_particles(a, judges: dict, log) -> dict:
    samplers = {"emergent": models.emergent_sampler(a.steps, a.guidance, eta=1.0, prune=a.prune),
                "mixture prior": models.flow_sampler(a.steps, a.guidance, eta=1.0)}
    runs = em.particle_check(samplers, a.methods.split(","), a.target, a.outputs, a.particles, a.seed, judges, log)
    return {"target": a.target, "steps": a.steps, "seed": a.seed, "runs": runs}


def run_part(part: str, a, judges: dict, reference: torch.Tensor, log) -> dict:
    if part in ETA:
        return run_setting(part, a, judges, reference, log)
    if part.startswith("conditional-"):
        return run_conditional(part.split("-", 1)[1], a, judges, reference, log)
    return run_particles(a, judges, log)


def conditional_reference(kind: str, setting: dict, parts: dict, steps: int) -> tuple[float | None, str, float | None]:
    """(Fréchet of the conditional samples, where it comes from, their UNet rows per sample)."""
    cond = parts.get(f"conditional-{kind}")
    if cond is not None and cond["n"] == setting["n"]:
        return cond["frechet_judge"], f"measured, n={cond['n']}", cond["rows_per_sample"]
    value, n = DOCS_CONDITIONAL.get((ETA[kind], steps), (None, None))
    return value, "not measured" if value is None else f"docs, n={n}", None


def render(parts: dict, a, out_dir: Path) -> dict:
    """Combine the finished parts into emergent.json / .md / .png in `out_dir`."""
    settings, notes = {}, []
    for kind in ETA:
        s = parts.get(kind)
        if s is None:
            notes.append(f"{label(kind, a.steps)}: not finished, so not reported.")
            continue
        ref, source, cond_rows = conditional_reference(kind, s, parts, s["config"]["steps"])
        settings[label(kind, s["config"]["steps"])] = {
            **{k: v for k, v in s.items() if k != "config"}, **em.bars(s, ref), "conditional_frechet": ref,
            "conditional_source": source, "conditional_rows_per_sample": cond_rows}
        if source.startswith("docs") and not source.endswith(f"n={s['n']}"):
            notes.append(f"{label(kind, s['config']['steps'])}: the conditional Fréchet comes from docs/models.md at a "
                         f"different sample count ({source}); a Fréchet distance grows as samples shrink, so read the "
                         "ratio as approximate.")
    result = {"commands": sorted({p["command"] for p in parts.values()}), "settings": settings,
              "particles": parts.get("particles"), "notes": notes, "plot": "emergent.png",
              "parts": {k: v.get("config") for k, v in parts.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "emergent.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "emergent.md").write_text(emergent_report.markdown(result))
    if settings:
        emergent_report.plot(settings, out_dir / "emergent.png")
    if a.models_md is not None and settings:
        write_section(a.models_md, emergent_report.models_section(result), EMERGENT_BEGIN, EMERGENT_END)
    return result


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--n", type=int, default=1000, help="samples per prior setting (and per conditional reference)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--prune", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="fk,svdd", help="particle methods (fk, svdd, das)")
    p.add_argument("--target", type=int, default=7, help="the digit the particle methods steer toward")
    p.add_argument("--outputs", type=int, default=20, help="outputs per particle run")
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--reference", type=int, default=None, help="test digits in the Fréchet reference (default all 10k)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "emergent")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks", help="where emergent.{json,md,png} go")
    p.add_argument("--models-md", type=Path, default=ROOT / "docs" / "models.md",
                   help="the markdown file whose emergent-sampler section is rewritten (none with --quick)")
    p.add_argument("--force", action="store_true", help="rerun parts that have finished")
    p.add_argument("--render-only", action="store_true", help="only write the report from the finished parts")
    p.add_argument("--quick", action="store_true", help="30 samples, 4 steps, 2 outputs × 2 particles (the test)")
    a = p.parse_args(argv)
    unknown = set(a.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if a.quick:
        a.n, a.steps, a.batch, a.outputs, a.particles, a.reference = 30, 4, 30, 2, 2, 1000
        a.results, a.models_md = a.out / "parts", None
    return a


def main(argv=None) -> dict:
    a = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    command = "python benchmarks/emergent.py " + " ".join(sys.argv[1:] if argv is None else argv)
    config = {k: v for k, v in vars(a).items() if k in ("n", "steps", "guidance", "prune", "batch", "seed", "methods",
                                                        "target", "outputs", "particles", "reference", "quick")}
    parts = {}
    a.results.mkdir(parents=True, exist_ok=True)
    todo = [] if a.render_only else a.parts.split(",")
    judges = {name: models.classifier(name) for name in models.HELDOUT_JUDGES}
    todo_reference = any(p != "particles" for p in todo)
    reference = em.reference_features(judges["mnist-judge"], a.reference) if todo_reference else None
    for part in todo:
        path = a.results / f"{part}.json"
        if path.is_file() and not a.force:
            continue
        start = time.time()
        print(f"[{part}] started", flush=True)
        out = run_part(part, a, judges, reference, lambda msg, part=part: print(f"[{part}] {msg}", flush=True))
        out |= {"config": config, "command": command, "part_seconds": round(time.time() - start, 1)}
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"[{part}] done in {time.time() - start:.0f} s", flush=True)
    for part in PARTS:
        path = a.results / f"{part}.json"
        if path.is_file():
            parts[part] = json.loads(path.read_text())
    return render(parts, a, a.out)


if __name__ == "__main__":
    main()
