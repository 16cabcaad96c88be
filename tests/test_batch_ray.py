"""The Ray backend (issue 13): a small batch as Ray tasks on a local Ray (ray.init(num_cpus=2)) writes the same
directory as the local backend: the same job folders, manifest records and samples."""

import json

import pytest
import torch

from rewardsteer.batch import LocalBackend, RayBackend, run_batch
from rewardsteer.batch.manifest import Manifest
from rewardsteer.safety import load_safetensors

JOBS = [{"class": c, "method": "best_of_n", "candidates": 8, "n": 2, "reward": "mnist-proxy-0",
         "heldout": "mnist-judge", "robust": "none"} for c in (1, 2, 3)]


def test_an_unreachable_ray_address_is_one_line_and_leaves_nothing(tmp_path, run_cli):  # before local_ray starts Ray here
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'rewardsteer[ray]')")
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(JOBS[0]) + "\n")
    out = run_cli("batch", str(path), "--out", str(tmp_path / "out"), "--ray", "127.0.0.1:1", "--no-progress")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: --ray 127.0.0.1:1: no Ray cluster answers there")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def local_ray():
    try:
        import ray
    except ImportError as e:
        pytest.skip(f"Ray is not installed (pip install 'rewardsteer[ray]'): {e}")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - report why, then skip: never a silent pass
        pytest.skip(f"Ray could not start on this machine: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()


def test_ray_batch_writes_the_same_directory_as_the_local_pool(tmp_path, local_ray):
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in JOBS))
    on_ray = run_batch(path, tmp_path / "ray", RayBackend(threads=1), progress=False, echo=lambda s: None)
    assert len(on_ray.done) == len(JOBS) and not on_ray.failed
    local = run_batch(path, tmp_path / "local", LocalBackend(1, threads=1), progress=False, echo=lambda s: None)
    ray_records, local_records = (Manifest(tmp_path / d / "manifest.jsonl").records for d in ("ray", "local"))
    assert sorted(ray_records) == sorted(local_records) == sorted(local.done)
    for jid, rec in ray_records.items():
        assert rec["status"] == "done" and rec["worker"] != local_records[jid]["worker"]  # ran in a Ray worker
        assert rec["score"] == local_records[jid]["score"] and rec["spent"]["nfe"] == local_records[jid]["spent"]["nfe"]
        a, b = (load_safetensors(tmp_path / d / "jobs" / jid / "tensors.safetensors")["samples"] for d in ("ray", "local"))
        assert torch.equal(a, b)
        assert sorted(p.name for p in (tmp_path / "ray" / "jobs" / jid).iterdir()) == \
            sorted(p.name for p in (tmp_path / "local" / "jobs" / jid).iterdir())
    again = run_batch(path, tmp_path / "ray", RayBackend(threads=1), progress=False, echo=lambda s: None)
    assert again.skipped == len(JOBS)  # resumable the same way

