"""The command line: help, models, a short run writing its report, and one-line errors with exit 2."""

import json
import subprocess
import sys

import pytest

from rewardsteer.cli import main


def test_console_script_runs_as_a_process():
    out = subprocess.run([sys.executable, "-m", "rewardsteer.cli", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Usage: rewardsteer" in out.stdout


def test_help_explains_itself(run_cli):
    out = run_cli("--help")
    assert out.returncode == 0 and "reward" in out.stdout and "run" in out.stdout and "models" in out.stdout


def test_run_help_sorts_every_option_under_a_heading(run_cli):
    from rewardsteer.commands.run import RunCommand, run

    out = run_cli("run", "--help")
    assert out.returncode == 0 and "Other options" not in out.stdout  # a new option must be given a section
    assert all(f"{title}:" in out.stdout for title in RunCommand.sections)
    listed = [n for names in RunCommand.sections.values() for n in names]
    assert sorted(listed) == sorted([p.name for p in run.params] + ["help"])  # each exactly once


def test_models_lists_cards(run_cli):
    out = run_cli("models")
    assert out.returncode == 0
    for name in ("mnist-flow", "mnist-onestep", "mnist-judge", "mnist-proxy-4"):
        assert name in out.stdout


@pytest.mark.parametrize("args, fragment", [
    (["run", "--model", "mnist-gan"], "unknown generator 'mnist-gan'; available: mnist-flow, mnist-onestep"),
    (["run", "--method", "magic"], "'magic' is not one of"),
    (["run", "--reward", "proxy:mnist-proxy-9"], "unknown classifier 'mnist-proxy-9'"),
    (["run", "--class", "10"], "10 is not in the range"),
    (["run", "--iters", "0"], "0 is not in the range"),
    (["run", "--max-nfe", "-5"], "budget nfe must be positive"),
    (["run", "--condition", "seven"], "--condition must be none, class or a digit"),
    (["frobnicate"], "No such command"),
    (["run", "--heldout", "mnist-judge-cnn"], "unknown reward 'mnist-judge-cnn'"),
    (["run", "--robust", "shift=2,spin=3"], "spin"),
    (["run", "--robust", "n=0"], "n"),
    (["run", "--pipeline", "x", "--prompt", "a cat", "--reward", "jpeg", "--heldout", "mnist-judge-vit"],
     "trained on 1x28x28 MNIST digits"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, args, fragment):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert fragment in out.stderr


def test_run_writes_report(run_cli, tmp_path):
    out = run_cli("run", "--class", "3", "--method", "reno", "--iters", "3", "--n", "2", "--reward", "proxies:2",
                  "--out", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("score (reno, completed)") and lines[1].startswith("held-out mnist-judge")
    assert "mnist-judge-vit" in lines[1] and "mnist-judge-rff" in lines[1] and "realism" in lines[1]
    assert lines[2].startswith("judges (target class): mnist-judge ") and "all agree" in lines[2]
    assert lines[3].startswith("cost: 8 NFE, 6 backward, 8 reward calls")
    for name in ("grid.png", "trace.png", "result.json", "tensors.safetensors"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "result.json").read_text())
    assert set(saved["member_scores"]) == {"mnist-proxy-0", "mnist-proxy-1"} and len(saved["trace"]) == 4


def test_main_entry_point_exit_code(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--class", "-1"])
    assert info.value.code == 2
