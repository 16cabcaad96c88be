"""The steering-core benchmarks run in their quick modes and write well-formed results."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_quick(tmp_path):
    out = tmp_path / "overhead.json"
    load("overhead").main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["ratio_reno_over_bare"] > 0 and set(result["seconds_per_iteration"]) == {"reno", "bare"}


def test_methods_quick(tmp_path):
    out = tmp_path / "methods.json"
    load("methods").main(["--quick", "--out", str(out), "--doc", str(tmp_path / "methods.md")])
    rows = json.loads(out.read_text())["rows"]
    assert {r["method"] for r in rows} == {"best_of_n", "random_search", "zero_order_search", "reno"}
    assert all(r["nfe_per_output"] <= 5 for r in rows)  # the equal-NFE budget holds for every method


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
