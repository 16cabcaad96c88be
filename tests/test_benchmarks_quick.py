"""The steering-core benchmarks run in their quick modes and write well-formed results."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from rewardsteer import models
from rewardsteer.bench.overopt_report import judges_verdict

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mutation_quick(tmp_path, capsys):
    """`make mutation`'s quick mode: mutmut on the Meter's budget fitting against its property tests (about 40 s),
    so the mutation setup cannot rot; it exits non-zero below 85% killed."""
    pytest.importorskip("mutmut", reason="mutation testing needs mutmut (installed by `make dev`)")
    assert load("mutation").main(["--quick", "--base", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    killed, total = map(int, re.match(r"src/rewardsteer/budget.py: (\d+)/(\d+) killed", line).groups())
    assert total >= 20 and killed / total >= 0.85, line


def test_overhead_quick(tmp_path):
    out = tmp_path / "overhead.json"
    load("overhead").main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["ratio_reno_over_bare"] > 0 and set(result["seconds_per_iteration"]) == {"reno", "bare"}


# A verdict line as the reports write them: an explicit pair, one budget, the all-judges rule, yes or no.
VERDICT = re.compile(r"^- (?P<x>\S+) beats (?P<y>\S+) at (?P<where>(?:(?!\b\d+ of \d+\b).)+?) "
                     r"under all judges: (?P<verdict>yes|no) \(.+\)$")


def test_verdict_regex_refuses_vacuous_statements():
    ok = "- reno beats best_of_n at 32 NFE/output under all judges: no (mnist-judge 90.0% vs 85.0% (sd ≤ 6.0%) fails)"
    assert VERDICT.match(ok)
    for vacuous in ("**FK beats best-of-N on the held-out judge at 0 of 3 budgets**: at 80 NFE/output ...",
                    "- FK beats best-of-N at 0 of 3 budgets under all judges: no (none)",
                    "- reno beats best_of_n at 32 NFE/output under all judges (mnist-judge only)",
                    "- reno beats best_of_n at 32 NFE/output: yes (mnist-judge 90% vs 85%)"):
        assert not VERDICT.match(vacuous), vacuous


def check_judge_columns(row, judges):
    assert list(row["judges"]) == judges
    for j in judges:
        for key in ("acc", "acc_sd"):
            assert 0.0 <= row["judges"][j][key] <= 1.0, (j, key, row)
        assert row["judges"][j]["logp"] <= 0.0
    assert 0.0 <= row["judges_agree"] <= 1.0 and 0.0 <= row["judges_agree_sd"] <= 1.0
    # every judge must assign an output to the target for it to count as agreed
    assert row["judges_agree"] <= min(row["judges"][j]["acc"] for j in judges) + 1e-9


def check_report(doc, judges, pairs):
    text = doc.read_text()
    assert doc.with_suffix(".png").stat().st_size > 0
    assert "stands only if it holds under every held-out judge" in text
    assert all(f"`{j}`" in text for j in judges)
    section = text.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.strip()]
    verdicts = [line for line in lines if VERDICT.match(line)]
    assert len(verdicts) == pairs and verdicts[0] == lines[0]  # the section opens with verdicts, one per pair
    assert not re.search(r"\b0 of \d+\b", text)
    return verdicts


@pytest.mark.slow
def test_methods_quick(tmp_path, capsys):
    out, doc = tmp_path / "methods.json", tmp_path / "methods.md"
    load("methods").main(["--quick", "--out", str(out), "--doc", str(doc)])
    saved = json.loads(out.read_text())
    rows, judges = saved["rows"], saved["judges"]
    assert "mnist-judge" in judges and saved["config"]["threads"] == 1
    missing = [j for j in models.HELDOUT_JUDGES if j not in judges]  # skipped with a printed note, never silently
    printed = capsys.readouterr().out
    assert len(saved["notes"]) == len(missing) and all(f"judge '{j}' skipped" in printed for j in missing)
    assert {r["method"] for r in rows} == {"best_of_n", "random_search", "zero_order_search", "reno"}
    assert all(r["nfe_per_output"] <= r["nfe_budget"] for r in rows)  # the equal-NFE budget holds for every method
    for r in rows:
        check_judge_columns(r, judges)
        assert len(r["per_seed"]["judges_agree"]) == 3  # the spread is over 3 seeds
    ref, efficiency = saved["reference"], saved["efficiency"]
    assert ref["method"] == "best_of_n" and ref["nfe_budget"] == 16
    assert {e["method"] for e in efficiency} == {r["method"] for r in rows}
    for e in efficiency:
        if e["reached"]:
            assert e["judges_agree"] >= ref["judges_agree"] and 0 < e["ratio"] <= 1.0
    verdicts = check_report(doc, judges, pairs=3 * 2)  # 3 methods against best-of-N at 2 budgets
    assert {VERDICT.match(v)["y"] for v in verdicts} == {"best_of_n"}
    assert "## Compute efficiency" in doc.read_text()
    load("methods").main(["--render", str(out), "--doc", str(tmp_path / "again.md")])  # the report alone, again
    assert (tmp_path / "again.md").read_text() == doc.read_text().replace("methods.png", "again.png")


@pytest.mark.slow
def test_particles_tiny_reports_every_judge(tmp_path):
    out, doc = tmp_path / "particles.json", tmp_path / "particles.md"
    methods = ["best_of_n", "fk_max", "svdd"]
    load("particles").main(["--tiny", "--quick", "--methods", *methods, "--judges", "ja", "jb", "jc",
                            "--out", str(out), "--doc", str(doc)])
    saved = json.loads(out.read_text())
    assert saved["judges"] == ["ja", "jb", "jc"] and saved["config"]["seeds"] == 2
    for r in saved["rows"]:
        check_judge_columns(r, ["ja", "jb", "jc"])
    check_report(doc, ["ja", "jb", "jc"], pairs=2)  # fk_max and svdd against best-of-N at one K
    load("particles").main(["--render", str(out), "--doc", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text() == doc.read_text().replace("particles.png", "again.png")


def test_particles_renders_results_written_before_the_judges(tmp_path):
    """--render reads an old results file (mnist-judge only, no accuracy spread): every verdict is no."""
    old = ROOT / "tests" / "data" / "particles-wave1.json"  # the wave-1 results file, kept as written then
    rows = json.loads(old.read_text())["rows"]
    assert "judges" not in rows[0]
    load("particles").main(["--render", str(old), "--doc", str(tmp_path / "p.md")])
    verdicts = check_report(tmp_path / "p.md", ["mnist-judge"], pairs=7 * len({r["budget"] for r in rows}))
    assert all(VERDICT.match(v)["verdict"] == "no" for v in verdicts)


def test_all_judges_verdict():
    def row(**acc):
        return {"judges": {j: {"acc": a, "acc_sd": 0.02} for j, a in acc.items()}, "judges_agree": min(acc.values())}

    base = row(a=0.5, b=0.5)
    assert VERDICT.match(judges_verdict("x", "y", "8 NFE/output", row(a=0.9, b=0.9), base, seeds=3))["verdict"] == "yes"
    assert judges_verdict("x", "y", "8 NFE/output", row(a=0.9, b=0.51), base, seeds=3).endswith(
        "b 51.0% vs 50.0% (sd ≤ 2.0%) fails; judges agree 51.0% vs 50.0%)")  # one judge short: no
    assert ": no (" in judges_verdict("x", "y", "8", row(a=0.9, b=0.9), base, seeds=1)  # one seed: no spread
    assert ": no (" in judges_verdict("x", "y", "8", row(a=0.9), base, seeds=3)  # a judge not measured: no


def test_checkpoint_memory_quick(tmp_path):
    out = tmp_path / "ckpt.json"
    load("checkpoint_memory").main(["--quick", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert [r["checkpoint"] for r in rows] == [False, True] and "memory_saved_mb" in rows[1]


def test_ensemble_speed_quick(tmp_path):
    out = tmp_path / "ens.json"
    load("ensemble_speed").main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [r["backward"] for r in result["rows"]] == [False, True]
    assert all(r["speedup_wide"] > 0 and r["speedup_vmap"] > 0 for r in result["rows"])
    assert {r["path"] for r in result["profile"]} == {"loop", "wide", "vmap"}
    assert all(r["conv_ms"] > 0 for r in result["profile"])


def test_molecules_benchmark_tiny(tmp_path):
    pytest.importorskip("rdkit", reason="the molecule benchmark needs RDKit (pip install 'rewardsteer[molecules]')")
    out = tmp_path / "molecules.json"
    load("molecules").main(["--tiny", "--rewards", "qed", "--out", str(out)])
    result = json.loads(out.read_text())
    table = result["rewards"]["qed"]
    assert [(row["method"], row["k"]) for row in table] == [("sample", 1), ("best_of_n", 2), ("fk", 2), ("svdd", 2)]
    for row in table:
        s = row["summary"]
        assert 0 <= s["qed"][0] <= 1 and s["validity"][0] == 1.0 and s["nfe_per_molecule"][0] > 0
    nfe = {row["method"]: row["summary"]["nfe_per_molecule"][0] for row in table}
    assert nfe["best_of_n"] == nfe["fk"] == 2 * 4 and nfe["svdd"] == 1 + 2 * 4  # equal NFE by construction
