"""Batch runs (issue 13): jobs validated with line numbers, stable ids and seeds, a real batch killed with SIGKILL
and resumed (nothing lost, nothing duplicated, same samples as an uninterrupted re-sharded run), failures isolated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rewardsteer.batch import LocalBackend, load_jobs, make_job, run_batch
from rewardsteer.batch.jobs import JobsError, seed_from_id
from rewardsteer.batch.manifest import Manifest
from rewardsteer.safety import load_safetensors

SMALL = {"method": "best_of_n", "candidates": 8, "n": 2, "reward": "mnist-proxy-0", "heldout": "mnist-judge",
         "robust": "none"}


def write_jobs(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def samples(root: Path, job_id: str) -> torch.Tensor:
    return load_safetensors(root / "jobs" / job_id / "tensors.safetensors")["samples"]


def test_jobs_are_validated_whole_with_line_numbers(tmp_path):
    bad = write_jobs(tmp_path / "jobs.jsonl", [{**SMALL, "class": 3}, {"class": 11}, {"model": "mnist-gan"},
                                               {"frob": 1}, {**SMALL, "class": 3}, {"method": "fk"}])
    with bad.open("a") as f:
        f.write("not json\n")
    with pytest.raises(JobsError) as e:
        load_jobs(bad)
    msg = str(e.value)
    assert "6 invalid job(s)" in msg and "nothing was run" in msg
    for line, fragment in [(2, "11 is not in the range"), (3, "unknown generator 'mnist-gan'"),
                           (4, "unknown option 'frob'"), (5, "the same job as line 1"),
                           (6, "use --model mnist-flow"), (7, "not valid JSON")]:
        (row,) = [r for r in msg.splitlines() if f"jobs.jsonl:{line}: " in r]
        assert fragment in row, msg


def test_job_id_is_canonical_and_seed_derives_from_it(tmp_path):
    a = make_job({"class": 3, "method": "best_of_n", "candidates": 8, "reward": ["mnist-proxy-0", "mnist-proxy-1"],
                  "robust": "none", "name": "label only"})
    b = make_job({"robust": "none", "reward": "mnist-proxy-0;mnist-proxy-1", "candidates": "8", "method": "best_of_n",
                  "target": "3"}, list_separator=";")  # CSV-style strings, an alias, another key order, no label
    assert a.id == b.id and a.seed == b.seed == seed_from_id(a.id)
    assert make_job({**SMALL, "class": 3, "seed": 5}).seed == 5
    assert make_job({**SMALL, "class": 4}).id != make_job({**SMALL, "class": 3}).id
    csv = tmp_path / "jobs.csv"
    csv.write_text("class,method,candidates,reward,robust,name\n3,best_of_n,8,mnist-proxy-0;mnist-proxy-1,none,x\n")
    (job,) = load_jobs(csv)
    assert job.id == a.id and job.line == 2
    assert job.argv()[-2:] == ["--seed", str(job.seed)] and "--reward" in job.argv()


def _count_done(manifest: Path) -> int:
    return sum(1 for line in manifest.read_text().splitlines() if '"done"' in line) if manifest.exists() else 0


def test_sigkill_mid_batch_then_resume_loses_and_duplicates_nothing(tmp_path):
    jobs = [{**SMALL, "class": c, "candidates": 16} for c in range(6)]
    path = write_jobs(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rewardsteer.cli", "batch", str(path), "--out", str(out), "--workers", "2",
           "--threads", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while _count_done(out / "manifest.jsonl") < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the batch process only: its pool workers must die with it
        proc.wait(timeout=30)
        killed_at = _count_done(out / "manifest.jsonl")
        time.sleep(0.5)
        ps = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        survivors = [row for row in ps.splitlines() if "Z" not in row.split()[1]]  # zombies: nobody reaps them here
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= killed_at < len(jobs), f"killed after {killed_at} of {len(jobs)} jobs"
    assert survivors == [], "pool workers outlived the killed batch"

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {killed_at} of {len(jobs)}" in again.stdout
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ids = [j.id for j in load_jobs(path)]
    assert sorted(r["id"] for r in records) == sorted(ids)  # every job exactly once
    assert all(r["status"] == "done" for r in records)
    assert not list((out / "jobs").glob(".tmp-*")) and sorted(p.name for p in (out / "jobs").iterdir()) == sorted(ids)

    # the same jobs, uninterrupted, in this process and re-sharded (two shards, the file reversed): same samples
    ref = tmp_path / "ref"
    reversed_path = write_jobs(tmp_path / "reversed.jsonl", jobs[::-1])
    for shard in ("0/2", "1/2"):
        run_batch(reversed_path, ref, LocalBackend(1, threads=1), shard=shard, progress=False, echo=lambda s: None)
    ref_records = Manifest(ref / "manifest.jsonl").records
    for r in records:
        assert torch.equal(samples(out, r["id"]), samples(ref, r["id"]))
        a, b = r["spent"], ref_records[r["id"]]["spent"]
        assert (a["nfe"], a["backward"], a["reward_calls"]) == (b["nfe"], b["backward"], b["reward_calls"])
        assert r["score"] == ref_records[r["id"]]["score"]


def test_a_failing_job_is_recorded_and_the_batch_goes_on(tmp_path, monkeypatch, run_cli):
    from rewardsteer.rewards.base import ClassifierReward

    score = ClassifierReward.score

    def flaky(self, images, cond=None):
        if self.target == 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return score(self, images, cond)

    monkeypatch.setattr(ClassifierReward, "score", flaky)
    path = write_jobs(tmp_path / "jobs.jsonl", [{**SMALL, "class": 3}, {**SMALL, "class": 4},
                                                {**SMALL, "class": 5, "max_nfe": 1}, {**SMALL, "class": 6}])
    out = tmp_path / "out"
    lines = []
    s = run_batch(path, out, LocalBackend(1, threads=1), progress=False, echo=lines.append)
    assert len(s.done) == 2 and len(s.failed) == 2
    errors = {r["line"]: r["error"] for r in s.failed}
    assert "CUDA out of memory" in errors[2] and "RuntimeError" in errors[2]
    assert "budget" in errors[3] and "\n" not in errors[3]
    assert (out / "jobs" / s.failed[0]["id"] / "traceback.txt").is_file()
    table = (out / "table.csv").read_text().splitlines()
    assert len(table) == 5 and [row.split(",")[3] for row in table[1:]] == ["done", "failed", "failed", "done"]
    assert (out / "contact_sheet.png").is_file()
    assert any("FAILED" in line and "L2" in line for line in lines)

    again = run_batch(path, out, LocalBackend(1, threads=1), progress=False, echo=lines.append)
    assert again.skipped == 4 and len(again.failed) == 2  # finished (failed included) jobs are not rerun
    monkeypatch.setattr(ClassifierReward, "score", score)
    retried = run_batch(path, out, LocalBackend(1, threads=1), retry_failed=True, progress=False, echo=lines.append)
    assert len(retried.done) == 3 and len(retried.failed) == 1  # the impossible budget stays impossible

    cli = run_cli("batch", str(path), "--out", str(out), "--no-progress")
    assert cli.returncode == 1 and "1 failed" in cli.stdout and "L3" in cli.stdout


def test_batch_benchmark_quick(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("batch_bench", Path(__file__).parents[1] / "benchmarks" / "batch.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--out", str(tmp_path / "batch.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "batch.json").read_text())["jobs"] == 3
    assert result["match"]["cost_equal"] == 3 and result["match"]["samples_within_1e-5"] == 3
    assert result["ratio_pool_over_fastest_loop"] > 0 and set(result["seconds"]) == {"loop_1_thread", "pool"}
