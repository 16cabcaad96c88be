"""Signal safety of single runs (issue 13): SIGTERM writes the partial result and exits 143; an --out that
cannot be written is a one-line error before any compute."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def test_sigterm_writes_the_partial_result_and_exits_143(tmp_path):
    out, log = tmp_path / "run", tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "rewardsteer.cli", "run", "--method", "reno", "--iters", "100000", "--n", "2",
           "--reward", "mnist-proxy-0", "--robust", "none", "--heldout", "mnist-judge", "--out", str(out)]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and " 5/100000" not in log.read_text():
            time.sleep(0.05)  # until reno has taken a few steps (its progress bar on stderr)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, log.read_text()[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["stopped"] == "interrupted" and len(result["trace"]) >= 5
    assert (out / "grid.png").is_file() and (out / "tensors.safetensors").is_file()
    assert "score (reno, interrupted)" in stdout and "Traceback" not in log.read_text()


@pytest.mark.parametrize("make_bad", ["under_a_file", "read_only"])
def test_unwritable_out_is_one_line_before_any_compute(tmp_path, run_cli, monkeypatch, make_bad):
    import rewardsteer.models

    if make_bad == "under_a_file":
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; the under_a_file case covers root")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "run"

    def no_compute(*args, **kwargs):
        raise AssertionError("a generator was loaded before --out was checked")

    monkeypatch.setattr(rewardsteer.models, "generator", no_compute)
    res = run_cli("run", "--method", "best_of_n", "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "cannot be written" in res.stderr and str(out) in res.stderr
