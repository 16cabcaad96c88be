"""A batch's output folder is safe (issue 25): one batch at a time holds it (a second refuses with one line, shards
share it, a killed batch's lock is taken over), --check needs no --out, and a folder that stops being writable
mid-batch ends in one line with nothing half-written, resumable.

Tests run as root here, where chmod does not stop writes: the read-only folder is simulated by making the writes
themselves fail with EROFS (the job's own outputs, or the batch's status file), as a read-only remount would."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewardsteer.batch.manifest import LOCK, batch_lock
from rewardsteer.errors import RewardsteerError

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"method": "best_of_n", "candidates": 8, "n": 2, "reward": "mnist-proxy-0", "heldout": "mnist-judge",
         "robust": "none"}


def write_jobs(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_a_second_batch_on_the_same_folder_refuses_while_the_first_runs(tmp_path, run_cli):
    slow = {**SMALL, "method": "reno", "iters": 100000, "max_seconds": 4, "class": 1}
    path = write_jobs(tmp_path / "jobs.jsonl", [slow, {**SMALL, "class": 2}])
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "rewardsteer.cli", "batch", str(path), "--out", str(out),
                              "--threads", "1", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, text=True)
    try:
        deadline = time.time() + 120
        while f"pid {first.pid}" not in ((out / LOCK).read_text() if (out / LOCK).exists() else "") and \
                first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        second = run_cli("batch", str(path), "--out", str(out), "--no-progress")
        running = first.poll() is None
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert running, "the first batch ended before the second started: make its job slower"
    assert second.returncode == 2 and second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert second.stderr.startswith(f"error: another `rewardsteer batch` is running on {out} (pid {first.pid}")
    assert first.returncode == 0, stderr[-2000:]
    assert sorted(r["line"] for r in records(out)) == [1, 2]  # each job computed and recorded once
    again = run_cli("batch", str(path), "--out", str(out), "--no-progress")  # the lock is free again
    assert again.returncode == 0 and "resuming: 2 of 2" in again.stdout


def test_shards_share_the_folder_and_a_killed_batchs_lock_is_taken_over(tmp_path):
    with batch_lock(tmp_path, (0, 2)), batch_lock(tmp_path, (1, 2)):  # two shards of one file: together
        with pytest.raises(RewardsteerError, match="for shard 0/2"):
            with batch_lock(tmp_path, (0, 2)):
                pass
        with pytest.raises(RewardsteerError, match="another `rewardsteer batch` is running"):
            with batch_lock(tmp_path, None):  # the whole file overlaps every shard
                pass
    code = ("import os, signal, sys; from pathlib import Path; from rewardsteer.batch.manifest import batch_lock\n"
            "with batch_lock(Path(sys.argv[1])): os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    stale = (tmp_path / LOCK).read_text()
    assert killed.returncode == -signal.SIGKILL and stale.startswith("pid ") and f"pid {os.getpid()} " not in stale
    with batch_lock(tmp_path, None):  # the dead process's lock is gone with it
        assert (tmp_path / LOCK).read_text().startswith(f"pid {os.getpid()} ")


def test_check_needs_no_out(tmp_path, run_cli):
    path = write_jobs(tmp_path / "jobs.jsonl", [{**SMALL, "class": 3}])
    out = run_cli("batch", str(path), "--check")
    assert out.returncode == 0 and "1 valid job(s)" in out.stdout and out.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]


@pytest.mark.parametrize("where", ["the job's outputs", "the batch's status file"])
def test_a_folder_that_turns_unwritable_mid_batch_ends_in_one_line_and_resumes(tmp_path, monkeypatch, run_cli, where):
    import rewardsteer.batch.runner as runner
    import rewardsteer.runs.images as images

    path = write_jobs(tmp_path / "jobs.jsonl", [{**SMALL, "class": c} for c in (1, 2)])
    out = tmp_path / "out"
    calls = []

    def read_only(original):
        def write(*args, **kwargs):
            calls.append(args)
            if len(calls) > 1:  # the first job's write goes through; then the folder is read-only
                raise OSError(errno.EROFS, "Read-only file system", str(args[-1] if where == "the job's outputs"
                                                                         else args[0]))
            return original(*args, **kwargs)
        return write

    if where == "the job's outputs":
        monkeypatch.setattr(images, "image_writer", read_only(images.image_writer))
    else:
        monkeypatch.setattr(runner, "write_atomic", read_only(runner.write_atomic))
    stopped = run_cli("batch", str(path), "--out", str(out), "--no-progress")
    assert stopped.returncode == 2 and stopped.stderr.count("\n") == 1 and "Traceback" not in stopped.stderr
    assert stopped.stderr.startswith(f"error: --out {out} cannot be written any more (Read-only file system")
    assert "run the same command again to resume" in stopped.stderr
    assert [r["line"] for r in records(out)] == [1]
    assert not list((out / "jobs").glob(".tmp-*")), "a half-written job folder was left behind"

    monkeypatch.undo()  # writable again: the same command resumes
    resumed = run_cli("batch", str(path), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 1 of 2" in resumed.stdout
    assert sorted(r["line"] for r in records(out)) == [1, 2] and all(r["status"] == "done" for r in records(out))
