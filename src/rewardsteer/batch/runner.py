"""Run one job: its RunSpec through `rewardsteer.runs.execute` into a temporary folder, then rename it to `jobs/ID`.

`execute(job, root)` is the one function every backend calls (the local pool, Ray, the in-process loop), so a
laptop run and a cluster run write the same files. It never raises for a job's own failure (a bad value, an
impossible budget, an exception, out of memory): the failure is recorded in the job's folder and returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
import traceback
import uuid
import warnings
from pathlib import Path

from .jobs import Job
from .manifest import STATUS_FILE, TMP_PREFIX, UNWRITABLE, output_error, publish_dir, write_atomic

JOBS_DIR = "jobs"
JOB_FILE, LOG_FILE, ERROR_FILE = "job.json", "log.txt", "traceback.txt"


def job_dir(root: str | Path, job_id: str) -> Path:
    return Path(root) / JOBS_DIR / job_id


def prepare_worker(threads: int | None = None, die_with_parent: bool = False) -> None:
    """Once per worker process: torch threads, networks kept loaded across jobs, and (pool workers) exit when
    the batch process dies, so a killed batch leaves no orphans computing."""
    import torch

    from ..bundled.hub import keep_loaded

    if threads:
        torch.set_num_threads(threads)
    keep_loaded(True)
    if die_with_parent:  # a pool worker: Ctrl-C is the batch process's to handle (it ends the workers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if die_with_parent and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the parent died before prctl took effect
                os._exit(1)


def record_from(job: Job, status: str, folder: Path, seconds: float, error: str | None = None) -> dict:
    """The manifest record of a finished job: status, cost and scores (from the folder's result.json if any)."""
    rec = {"id": job.id, "line": job.line, "name": job.name, "label": job.label, "status": status, "seed": job.seed,
           "error": error, "seconds": round(seconds, 3), "worker": f"{socket.gethostname()}:{os.getpid()}",
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    result = folder / "result.json"
    if result.is_file():
        meta = json.loads(result.read_text())
        s = meta.get("summary", {})
        rec.update(method=meta.get("method"), stopped=meta.get("stopped"), spent=meta.get("spent"),
                   score=s.get("score"), heldout=s.get("heldout"), judges=s.get("judges"),
                   judges_agree=s.get("judges_agree"), alarm=s.get("overoptimization_alarm"), outputs=s.get("outputs"))
    return rec


def _one_line(exc: BaseException) -> str:
    from ..errors import RewardsteerError

    if isinstance(exc, RewardsteerError):
        msg = str(exc)
    elif isinstance(exc, MemoryError):
        msg = "out of memory (MemoryError)"
    else:
        msg = f"{type(exc).__name__}: {exc}"
    return " ".join(msg.split())[:500] or type(exc).__name__


def execute(job: Job | dict, root: str | Path) -> dict:
    """Run `job` with its outputs under `root/jobs/ID`; return its manifest record (status done, failed, or
    interrupted: an interrupted job leaves nothing behind and runs again on resume). An output folder that
    cannot be written raises `OutputError` (the job's temporary folder removed), so the batch stops, resumable."""
    job = Job.from_json(job) if isinstance(job, dict) else job
    final = job_dir(root, job.id)
    if (final / STATUS_FILE).is_file():  # finished elsewhere (another shard, an earlier process)
        return json.loads((final / STATUS_FILE).read_text())
    tmp = final.parent / f"{TMP_PREFIX}{job.id}-{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        return _run_in(job, Path(root), tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(Path(root), e) from None


def _run_in(job: Job, root: Path, tmp: Path, final: Path) -> dict:
    from ..runs import execute as execute_run

    log, start = [], time.perf_counter()
    status, error = "done", None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            result = execute_run(job.spec, tmp, progress=False, log=log.append)
        log += [f"warning: {w.message}" for w in caught]
        log += [*str(result.summary()).splitlines(), "wrote " + ", ".join(str(p) for p in result.files.values())]
        if result.stopped == "interrupted":  # Ctrl-C inside the method: it returned what it had
            status, error = "interrupted", "interrupted"
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted"
    except OSError as e:
        if _unwritable(tmp, e):
            raise  # the folder, not the job: the batch stops
        status, error = "failed", _one_line(e)
        (tmp / ERROR_FILE).write_text("".join(traceback.format_exception(e)))
    except BaseException as e:  # noqa: BLE001 - a job's failure, whatever it is, is the job's, not the batch's
        status, error = "failed", _one_line(e)
        (tmp / ERROR_FILE).write_text("".join(traceback.format_exception(e)))
    seconds = time.perf_counter() - start
    if status == "interrupted":
        shutil.rmtree(tmp, ignore_errors=True)
        return {"id": job.id, "line": job.line, "status": "interrupted", "error": error}
    (tmp / LOG_FILE).write_text("".join(line + "\n" for line in log))
    (tmp / JOB_FILE).write_text(json.dumps({**job.to_json(), "argv": job.argv()}, indent=1) + "\n")
    record = record_from(job, status, tmp, seconds, error)
    write_atomic(tmp / STATUS_FILE, json.dumps(record, indent=1, default=str) + "\n")
    if not publish_dir(tmp, final):
        return json.loads((final / STATUS_FILE).read_text())
    return record


def _unwritable(tmp: Path, e: OSError) -> bool:
    """Whether an OSError raised while a job wrote its outputs means its folder cannot be written."""
    return e.errno in UNWRITABLE and (not tmp.is_dir() or str(e.filename or "").startswith(str(tmp)))
