"""The leaderboard (issue 28): its arithmetic on synthetic cells, its quick run end to end, and its bad input."""

import json
import math

import pytest

from rewardsteer.bench.leaderboard import Task, compute_to_reach, pairwise_mean, summarize


def cell(method, budget, seed, successes, outputs=4, compute=None, task="t"):
    return {"method": method, "task": task, "domain": "images", "budget": budget, "seed": seed, "outputs": outputs,
            "successes": successes, "compute": compute or budget, "rows_per_nfe": 1.0, "stopped": "completed",
            "seconds": 0.1, "features": []}


def test_compute_to_reach_interpolates_in_log_compute_and_says_when_never():
    budgets = {"16": {"compute": 16.0, "rate": 0.0}, "64": {"compute": 64.0, "rate": 0.5}, "256": {"compute": 256.0, "rate": 1.0}}
    assert compute_to_reach(budgets, 0.5) == 64.0
    assert compute_to_reach(budgets, 0.75) == pytest.approx(128.0)  # halfway in log2 between 64 and 256
    assert compute_to_reach(budgets, 0.25) == pytest.approx(32.0)
    assert compute_to_reach({"16": {"compute": 16.0, "rate": 0.1}}, 0.5) is None
    assert compute_to_reach(budgets, 0.0) is None


def test_summary_rates_spread_and_the_reference():
    recs = [cell("best_of_n", 16, 0, 0), cell("best_of_n", 16, 1, 2), cell("best_of_n", 64, 0, 2), cell("best_of_n", 64, 1, 2),
            cell("reno", 16, 0, 2), cell("reno", 16, 1, 4)]
    s = summarize(recs, [Task("t", "images", None, None)])
    bon, reno = s["methods"]["best_of_n"], s["methods"]["reno"]
    assert bon["budgets"]["16"]["rate"] == 0.25 and bon["budgets"]["64"]["rate"] == 0.5
    assert bon["budgets"]["16"]["sd_over_seeds"] == pytest.approx(math.sqrt(0.125))  # rates 0 and 0.5
    assert s["reference"] == {"budget": 64, "rate": 0.5}
    assert reno["compute_to_reach_reference"] == 16.0 and bon["compute_to_reach_reference"] == 64.0
    assert pairwise_mean(__import__("torch").tensor([[0.0, 0.0], [3.0, 4.0]])) == 5.0


def test_quick_board_runs_end_to_end_and_resumes(tmp_path, run_cli):
    """The README's quick line with a target of one's own (CLASS:ATTR<=V), then --report-only on the same cells."""
    out = tmp_path / "q"
    cli = run_cli("bench", "leaderboard", "--quick", "--target", "3:thickness<=2,slant<=-0.15", "--out", str(out))
    assert cli.returncode == 0, cli.stderr
    data = json.loads((out / "leaderboard.json").read_text())
    methods = data["summary"]["methods"]
    assert set(methods) == {"best_of_n", "reno", "svdd"} and len(data["cells"]) == 2 + 2 + 2
    assert {c["task"] for c in data["cells"]} == {"3:thickness<=2,slant<=-0.15"}
    for c in data["cells"]:  # every method spent about the budget it was given, per output
        assert 0.5 * c["budget"] <= c["compute"] <= 1.1 * c["budget"] + 1, c
    svdd = [c for c in data["cells"] if c["method"] == "svdd"]
    assert all(c["rows_per_nfe"] > 1 for c in svdd)  # the emergent sampler evaluates several classes early on
    assert "| best_of_n |" in cli.stdout and (out / "leaderboard.png").stat().st_size > 0
    again = run_cli("bench", "leaderboard", "--quick", "--target", "3:thickness<=2,slant<=-0.15", "--report-only",
                    "--out", str(out))
    assert again.returncode == 0 and again.stderr == ""  # nothing re-run: no cell lines logged
    assert json.loads((out / "leaderboard.json").read_text())["cells"] == data["cells"]


@pytest.mark.parametrize("args, message", [(["--target", "thin-99"], "unknown image target 'thin-99'"),
                                           (["--target", "3:colour<=2"], "unknown attribute 'colour'"),
                                           (["--method", "annealing"], "unknown leaderboard method 'annealing'")])
def test_bad_board_input_is_one_line_and_exit_2(tmp_path, run_cli, args, message):
    out = run_cli("bench", "leaderboard", *args, "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and out.stderr.startswith(f"error: {message}") and out.stderr.count("\n") == 1
    assert not (tmp_path / "b" / "cells.jsonl").exists()
