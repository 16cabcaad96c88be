"""Mutation testing of the core maths with mutmut, one module at a time against the fast tests that cover it.

mutmut 3 reads one configuration (pyproject's [tool.mutmut]) and keeps one set of results per working directory,
so each module gets its own directory, mutants/<module>/, holding a generated pyproject.toml (the project's
pytest settings plus this module's `only_mutate` and test selection), a mirror of src/ whose files are symlinks
to the real ones (the bundled weights are linked, not copied), and links to tests/, docs/ and benchmarks/.
mutmut runs there with one worker (`--max-children 1`, OMP_NUM_THREADS=1), so results are cached per module and
a re-run only re-tests the functions that changed.

Score per module = killed / (mutants − equivalent), where killed counts timeouts and "no tests" counts as
survived. Equivalent mutants (no test can tell them apart from the original) are listed in mutation_equivalents.py with a
one-line reason; lines that only build error messages or progress-bar text are not mutated
(DO_NOT_MUTATE_PATTERNS). Results go to docs/mutation.json and to the table in docs/testing.md.

Usage:
    python benchmarks/mutation.py                      # every module (make mutation; hours on 2 cores)
    python benchmarks/mutation.py --modules budget rewards/aggregates
    python benchmarks/mutation.py --quick              # one small module, < 1 minute (run by the test suite)
    python benchmarks/mutation.py --survivors budget   # diffs of the surviving mutants of a module
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/rewardsteer"
MIN_SCORE = 0.85

# module -> (test files that cover it, mutant-name globs to restrict to or None for every function). mutmut runs a
# mutant against only the tests that executed its function, so whole files cost little; slow tests that only
# exercise the plumbing (CLI, benchmarks) are left out.
REFERENCE = ["tests/test_reference.py", "tests/test_method_contracts.py",  # formulas, and the contracts around them
             "tests/test_particle_contracts.py"]
METHODS_TESTS = ["tests/test_methods.py", *REFERENCE, "tests/test_properties.py"]
SMC_TESTS = ["tests/test_smc_methods.py", "tests/test_smc_toy.py", *REFERENCE, "tests/test_discrete.py",
             "tests/test_properties.py", "-k", "not test_cli and not benchmark"]
MODULES: dict[str, tuple[list[str], list[str] | None]] = {
    "budget": (["tests/test_properties.py"], None),
    "rewards/aggregates": (["tests/test_ensemble.py", "tests/test_properties.py", "-k", "not test_cli"], None),
    "rewards/base": (["tests/test_ensemble.py", *REFERENCE, "tests/test_reward_contracts.py", "-k",
                 "not test_cli"], None),
    "rewards/stacked": (["tests/test_stacked.py", "tests/test_ensemble.py", "-k", "not test_cli"], None),
    "plumbing": (METHODS_TESTS, None),
    "methods/best_of_n": (METHODS_TESTS, None),
    "methods/reno": (METHODS_TESTS, None),
    "methods/search": (METHODS_TESTS, None),
    "smc/core": (["tests/test_smc_core.py", "tests/test_properties.py"], None),
    "smc/driver": (SMC_TESTS, None),
    "smc/fk": (SMC_TESTS, None),
    "smc/das": (SMC_TESTS, None),
    "smc/svdd": (SMC_TESTS, None),
    "smc/guidance": (SMC_TESTS[:-2] + ["tests/test_api_polish.py::test_reward_guidance_moves_samples_up_a_linear_reward",
                                        "tests/test_api_polish.py::test_reward_guidance_refuses_what_it_cannot_do",
                                        *SMC_TESTS[-2:]], None),
    "bundled/masked": (["tests/test_discrete.py", *REFERENCE], None),
    "molecules/rewards": (["tests/test_molecules.py", *REFERENCE, "tests/test_molecule_reward_contracts.py"],
                          None),
    "bundled/flow": (["tests/test_sampler.py", *REFERENCE,
              "tests/test_bundled_models.py::test_mixture_prior_is_differentiable_and_uniform_over_classes"],
             ["rewardsteer.bundled.flow.x_mixture_weights*", "rewardsteer.bundled.flow.x_split_code*",
              "rewardsteer.bundled.flow.x_class_labels*",
              "rewardsteer.bundled.flow.xǁFlowSamplerǁvelocity*", "rewardsteer.bundled.flow.xǁFlowSamplerǁpredict_x0*",
              "rewardsteer.bundled.flow.xǁFlowSamplerǁtransition*"]),
    "hf/rewards": (["tests/test_hf_rewards.py"], None),
    "hf/sampler": (["tests/test_hf_sampler_contracts.py", "tests/test_hf.py", "tests/test_hf_flow.py", "-k",
                    "contracts or sampler or step or transition or euler or generator_matches or marginals or "
                    "gradients or packing or reload or unsupported"], None),
    "hf/pipelines": (["tests/test_hf_sampler_contracts.py", "tests/test_hf.py", "tests/test_hf_flow.py", "-k",
                      "contracts or sampler or step or transition or euler or generator_matches or marginals or "
                      "gradients or packing or reload or unsupported"], None),
}
# the order of a full run: the examples first (each module's results are written as it finishes)
ORDER = ["smc/das", "smc/fk", "rewards/aggregates", "smc/core", "budget", "methods/reno", "methods/search", "smc/svdd",
         "bundled/flow", "smc/guidance", "molecules/rewards", "bundled/masked", "rewards/base", "plumbing",
         "methods/best_of_n", "smc/driver", "hf/rewards", "hf/sampler", "hf/pipelines", "rewards/stacked"]
assert sorted(ORDER) == sorted(MODULES)
# --quick: the Meter's fitting of work into a budget against its property tests, in its own working directory
# (22 mutants, about 40 s)
QUICK = ("budget", ["tests/test_properties.py", "-k", "meter"], ["rewardsteer.budget.xǁMeterǁunits_that_fit*"])

# Lines that only build messages or progress-bar text: mutating their strings tests the wording, not the maths.
DO_NOT_MUTATE_PATTERNS = [
    r"raise \w+\(",
    r"^\s*f?\"[^\"]*\"[)\s,]*$",  # a message's continuation line
    r"^\s*f?\"[^\"]*\"\s*f?\"",
    r"warnings\.warn\(",
    r"bar\.set_postfix|bar\.update|tqdm\(",
]

# the equivalent mutants and their reasons: a table of their own, beside this script
sys.path.insert(0, str(Path(__file__).parent))
from mutation_equivalents import EQUIVALENT  # noqa: E402


def module_path(module: str) -> str:
    return f"{PKG}/{module}.py"


def mutant_prefix(module: str) -> str:
    return "rewardsteer." + module.replace("/", ".")


def job(module: str, quick: bool = False) -> tuple[str, list[str], list[str] | None]:
    """(working directory name, test selection, mutant globs) of a module's run."""
    if quick:
        return "quick-" + QUICK[0], QUICK[1], QUICK[2]
    tests, only = MODULES[module]
    return module.replace("/", "-"), tests, only


def pyproject(module: str, quick: bool = False) -> str:
    """The project's pytest settings plus this module's [tool.mutmut]."""
    import tomllib

    pytest_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    _, tests, _ = job(module, quick)
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in pytest_cfg.items() if k != "addopts"]
    lines += ['addopts = "-p no:cacheprovider"', "", "[tool.mutmut]", 'source_paths = ["src"]',
              f"only_mutate = {json.dumps([module_path(module)])}",
              f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
              f"do_not_mutate_patterns = {json.dumps(DO_NOT_MUTATE_PATTERNS)}",
              'process_isolation = "forkserver"', "use_git_change_detection = false", ""]
    return "\n".join(lines)


def workdir(module: str, base: Path, quick: bool = False) -> Path:
    """mutants/<module>/ with its config, a symlinked mirror of src/ and links to tests/, docs/, benchmarks/."""
    work = base / job(module, quick)[0]
    work.mkdir(parents=True, exist_ok=True)
    (work / "pyproject.toml").write_text(pyproject(module, quick))
    for root, dirs, files in os.walk(ROOT / "src"):
        rel = Path(root).relative_to(ROOT)
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "weights") and not d.endswith(".egg-info")]
        (work / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = work / rel / f
            if not link.is_symlink():
                link.symlink_to(Path(root) / f)
    links = {work / "tests": ROOT / "tests"}
    for name in ("docs", "benchmarks"):
        links[work / "mutants" / name] = ROOT / name
    links[work / "mutants" / PKG / "weights"] = ROOT / PKG / "weights"  # read by bundled-model tests, never copied
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)
    return work


def mutmut_bin() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


def run_module(module: str, base: Path, log, quick: bool = False, retest: bool = False) -> dict:
    work = workdir(module, base, quick)
    _, _, only = job(module, quick)
    if retest:  # mutmut re-maps tests to functions only for new tests: re-map all, edited tests included
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    if retest and (work / "mutants" / (module_path(module) + ".meta")).exists():
        # first the mutants of functions edited since (mutmut re-runs only those), then last time's survivors
        run_mutmut(work, only, log)
        last = score(module, work, 0.0, quick)
        survived = last["survived"] + last["equivalent_names"]  # equivalents too: one that is killed is not one
        if not survived:
            return score(module, work, 0.0, quick)
        only = survived
    start = time.time()
    run_mutmut(work, only, log)
    return score(module, work, time.time() - start, quick)


def run_mutmut(work: Path, names: list[str] | None, log) -> None:
    """`mutmut run` in a module's working directory, one worker, on `names` (globs) or every pending mutant."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([mutmut_bin(), "run", "--max-children", "1", *(names or [])], cwd=work, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(proc.stdout)
    if proc.returncode != 0:
        lines = [x for x in proc.stdout.replace("\r", "\n").splitlines() if x.strip() and x.strip()[0] not in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"]
        raise SystemExit(f"mutmut failed in {work.name} (exit {proc.returncode}); last output:\n" + "\n".join(lines[-40:]))


def statuses(module: str, work: Path, quick: bool = False) -> dict[str, str]:
    """mutant name -> mutmut's status, for the mutants of `module` (restricted to its globs)."""
    from fnmatch import fnmatch

    from mutmut.stats import status_by_exit_code

    meta = json.loads((work / "mutants" / (module_path(module) + ".meta")).read_text())
    _, _, only = job(module, quick)
    out = {}
    for name, code in meta["exit_code_by_key"].items():
        if only and not any(fnmatch(name, g) for g in only):
            continue
        out[name] = status_by_exit_code[code]
    return out


def score(module: str, work: Path, seconds: float, quick: bool = False) -> dict:
    st = statuses(module, work, quick)
    equivalent = sorted(n for n in st if n in EQUIVALENT)
    wrongly = [n for n in equivalent if st[n] in ("killed", "timeout")]
    if wrongly:
        raise SystemExit(f"listed as equivalent but killed (remove them from mutation_equivalents.py): {wrongly}")
    killed = sorted(n for n, s in st.items() if s in ("killed", "timeout"))
    unchecked = sorted(n for n, s in st.items() if s == "not checked")
    survived = sorted(n for n, s in st.items() if n not in EQUIVALENT and s not in ("killed", "timeout"))
    considered = len(st) - len(equivalent)
    return {"module": module_path(module), "mutants": len(st), "equivalent": len(equivalent), "equivalent_names": equivalent,
            "killed": len(killed),
            "survived": survived, "not_checked": unchecked,
            "score": round(len(killed) / considered, 4) if considered else 1.0, "seconds": round(seconds, 1),
            "tests": job(module, quick)[1]}


def show(module: str, base: Path, names: list[str]) -> str:
    work = base / module.replace("/", "-")
    out = []
    for name in names:
        proc = subprocess.run([mutmut_bin(), "show", name], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        out.append(proc.stdout)
    return "\n".join(out)


def table(results: dict) -> str:
    rows = ["| module | mutants | equivalent | killed | score | tests |", "|---|---|---|---|---|---|"]
    for r in results.values():
        tests = " ".join(t.removeprefix("tests/") for t in r["tests"])
        rows.append(f"| `{r['module'].removeprefix('src/')}` | {r['mutants']} | {r['equivalent']} | {r['killed']} | "
                    f"{100 * r['score']:.1f}% | `{tests}` |")
    return "\n".join(rows)


def write_docs(results: dict, doc: Path) -> None:
    """Replace the generated block of docs/testing.md with the table and the equivalent mutants."""
    eq = "\n".join(f"- `{name}`: {why}" for name, why in sorted(EQUIVALENT.items())) or "- none"
    block = (f"<!-- mutation:begin (written by benchmarks/mutation.py) -->\n{table(results)}\n\n"
             f"Equivalent mutants (excluded from the score):\n\n{eq}\n<!-- mutation:end -->")
    text = doc.read_text() if doc.exists() else ""
    if "<!-- mutation:begin" in text:
        text = re.sub(r"<!-- mutation:begin.*?<!-- mutation:end -->", lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    doc.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", nargs="*", choices=list(MODULES), help="default: all")
    p.add_argument("--quick", action="store_true", help=f"only part of {QUICK[0]}; results under --base, docs untouched")
    p.add_argument("--base", type=Path, default=ROOT / "mutants", help="working directories (default ./mutants)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "mutation.json")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "testing.md")
    p.add_argument("--survivors", metavar="MODULE", choices=list(MODULES), help="print surviving mutants' diffs")
    p.add_argument("--fresh", action="store_true", help="delete cached results of the chosen modules first")
    p.add_argument("--retest", action="store_true", help="re-run the mutants that survived last time (after new tests)")
    p.add_argument("--rescore", action="store_true", help="recompute the scores from the cached results, run nothing")
    a = p.parse_args(argv)
    if a.survivors:
        r = score(a.survivors, a.base / a.survivors.replace("/", "-"), 0.0)
        print(show(a.survivors, a.base, r["survived"]))
        return 0
    modules = [QUICK[0]] if a.quick else (a.modules or ORDER)
    results = {} if a.quick or not a.out.exists() else json.loads(a.out.read_text())
    a.base.mkdir(parents=True, exist_ok=True)
    failed = []
    with open(a.base / "mutation.log", "a") as log:
        for module in modules:
            if a.fresh:
                shutil.rmtree(a.base / job(module, a.quick)[0], ignore_errors=True)
            try:
                if a.rescore:  # its seconds are the cached run's, added below
                    r = score(module, a.base / job(module, a.quick)[0], 0.0, a.quick)
                else:
                    r = run_module(module, a.base, log, a.quick, retest=a.retest)
            except SystemExit as e:  # one module's failure (e.g. its clean test run) does not stop the others
                print(e, flush=True)
                failed.append(module)
                continue
            if a.retest or a.rescore:  # the time of the run that produced the cached results, plus this one
                r["seconds"] = round(results.get(module, {}).get("seconds", 0.0) + (0.0 if a.rescore else r["seconds"]), 1)
            results[module] = r
            print(f"{r['module']}: {r['killed']}/{r['mutants'] - r['equivalent']} killed = {100 * r['score']:.1f}% "
                  f"({r['equivalent']} equivalent, {r['seconds']:.0f} s)", flush=True)
            if r["score"] < MIN_SCORE:
                failed.append(module)
            if not a.quick:  # merged into the file as it is now: two runs on different modules may share it
                current = json.loads(a.out.read_text()) if a.out.exists() else {}
                results = {**current, module: r}
                a.out.write_text(json.dumps(results, indent=1) + "\n")
    if not a.quick:
        results = json.loads(a.out.read_text()) if a.out.exists() else results
        write_docs({m: results[m] for m in MODULES if m in results}, a.doc)
    if failed:
        print(f"below {MIN_SCORE:.0%}: {', '.join(failed)} (python benchmarks/mutation.py --survivors MODULE)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
