"""`rewardsteer batch`: validate a jobs file, run the jobs not yet finished on a backend, record each in the
manifest as it finishes, and write the combined table and contact sheet.

The output folder:

    OUT/manifest.jsonl          one record per finished job (status done/failed, cost, scores), append-only
    OUT/batch.json              the jobs of the last start (id, line, seed, options)
    OUT/jobs/ID/                each job's files: result.json, tensors.safetensors, grid.png, trace.png,
                                job.json (the job and its `rewardsteer run` arguments), log.txt, status.json
    OUT/table.csv               one row per job; OUT/contact_sheet.png  each job's best sample

Started again with the same command, a batch skips finished jobs and redoes unfinished ones.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..safety import check_writable
from .jobs import Job, load_jobs, parse_shard, select_shard
from .manifest import STATUS_FILE, TMP_PREFIX, Manifest, OutputError, batch_lock, output_error, write_atomic
from .runner import JOBS_DIR, job_dir
from .summary import contact_sheets, table_rows, write_table


@dataclass
class BatchSummary:
    total: int
    done: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: int = 0
    not_run: int = 0
    seconds: float = 0.0
    paths: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run


def job_line(rec: dict, k: int, total: int) -> str:
    """The one-line summary printed as each job finishes."""
    head = f"[{k:>{len(str(total))}}/{total}] L{rec.get('line')} {rec['id'][:8]} {rec.get('label', '')}"
    if rec["status"] != "done":
        return f"{head}: FAILED: {rec.get('error')}"
    parts = []
    if rec.get("score"):
        parts.append(f"score {rec['score'][0]:.3f} -> {rec['score'][1]:.3f}")
    if rec.get("judges_agree"):
        a, b = rec["judges_agree"]
        parts.append(f"judges agree {a:.0%} -> {b:.0%}")
    spent = rec.get("spent") or {}
    parts.append(f"{spent.get('nfe', '?')} NFE, {rec.get('seconds', 0):.1f} s")
    if rec.get("alarm"):
        parts.append("OVER-OPTIMIZATION ALARM")
    return f"{head}: " + ", ".join(parts)


def _clear_stale(root: Path, jobs: list[Job], retry_failed: bool, manifest: Manifest) -> None:
    """Remove temporary folders left by a killed run of these jobs; with retry_failed, the failed jobs' folders."""
    ids = {j.id for j in jobs}
    jobs_dir = root / JOBS_DIR
    for tmp in root.glob(f"{TMP_PREFIX}*"):  # table.csv, batch.json, ... cut short while being written
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
    for tmp in jobs_dir.glob(f"{TMP_PREFIX}*"):
        if tmp.name[len(TMP_PREFIX):].split("-")[0] in ids:
            shutil.rmtree(tmp, ignore_errors=True)
    if retry_failed:
        for job in jobs:
            rec = manifest.final(job.id)
            folder = job_dir(root, job.id)
            if rec is not None and rec["status"] == "failed" and folder.exists():
                trash = jobs_dir / f"{TMP_PREFIX}{job.id}-retry"
                folder.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)


def run_batch(jobs_path: str | Path | None, out: str | Path, backend, *, jobs: list[Job] | None = None,
              shard: str | None = None, retry_failed: bool = False, progress: bool = True,
              echo: Callable[[str], None] = print) -> BatchSummary:
    """Run every unfinished job of `jobs_path` (or `jobs`) on `backend` with outputs under `out`, holding the folder's
    lock (`manifest.batch_lock`). An output folder that stops being writable raises `OutputError`: one line, the
    finished jobs recorded, resumable."""
    start = time.perf_counter()
    all_jobs = jobs if jobs is not None else load_jobs(jobs_path)  # the whole file is validated first
    jobs = select_shard(all_jobs, shard)
    if hasattr(backend, "connect"):
        backend.connect()  # e.g. Ray: an unreachable cluster is one line, before anything is written
    root = check_writable(out)  # before any compute
    with batch_lock(root, parse_shard(shard)):
        try:
            return _run(jobs_path, all_jobs, jobs, root, backend, shard, retry_failed, progress, echo, start)
        except OSError as e:
            raise output_error(root, e) from None


def _run(jobs_path, all_jobs, jobs, root, backend, shard, retry_failed, progress, echo, start) -> BatchSummary:
    from tqdm.auto import tqdm

    (root / JOBS_DIR).mkdir(exist_ok=True)
    manifest = Manifest(root / "manifest.jsonl")
    write_atomic(root / "batch.json", json.dumps({"source": str(jobs_path) if jobs_path else None, "shard": shard,
                                                  "jobs": [j.to_json() for j in all_jobs]}, indent=1) + "\n")
    for job in jobs:  # folders published by a run killed before it wrote their manifest record
        status = job_dir(root, job.id) / STATUS_FILE
        if manifest.final(job.id) is None and status.is_file():
            manifest.append({**json.loads(status.read_text()), "recovered": True})
    _clear_stale(root, jobs, retry_failed, manifest)
    pending = [j for j in jobs if manifest.final(j.id) is None
               or (retry_failed and manifest.final(j.id)["status"] == "failed")]
    unrecorded = {j.id for j in pending}
    summary = BatchSummary(total=len(jobs), skipped=len(jobs) - len(pending))
    if summary.skipped:
        echo(f"resuming: {summary.skipped} of {len(jobs)} job(s) already finished in {root}")
    if pending:
        echo(f"running {len(pending)} job(s) on {backend.describe()}")
    bar = tqdm(total=len(jobs), initial=summary.skipped, desc="jobs", unit="job", disable=not progress,
               dynamic_ncols=True)
    write = tqdm.write if progress else echo
    k = summary.skipped
    try:
        for rec in backend.run(pending, root):
            if rec.get("status") == "interrupted":
                continue
            if rec["id"] in unrecorded:  # once per job and start, whatever a backend yields
                unrecorded.discard(rec["id"])
                manifest.append(rec)
            k += 1
            bar.update(1)
            write(job_line(rec, k, len(jobs)))
    except OutputError:
        raise  # the folder cannot take the table either
    except BaseException:  # Ctrl-C, SIGTERM: the table shows what finished
        with contextlib.suppress(OSError):
            _finish(summary, all_jobs, jobs, manifest, root, start)
        raise
    finally:
        bar.close()
    return _finish(summary, all_jobs, jobs, manifest, root, start)


def _finish(summary: BatchSummary, all_jobs, jobs, manifest: Manifest, root: Path, start: float) -> BatchSummary:
    """Count the jobs' final states and write table.csv and the contact sheets."""
    for job in jobs:
        rec = manifest.final(job.id)
        if rec is None:
            summary.not_run += 1
        elif rec["status"] == "done":
            summary.done.append(job.id)
        else:
            summary.failed.append(rec)
    records = {j.id: manifest.final(j.id) for j in all_jobs}
    summary.paths = {"manifest": manifest.path, "table": write_table(table_rows(all_jobs, records), root / "table.csv")}
    for path in contact_sheets(all_jobs, records, root):
        summary.paths[path.stem] = path
    summary.seconds = time.perf_counter() - start
    return summary


def summary_lines(s: BatchSummary) -> list[str]:
    lines = [f"batch: {len(s.done)} done, {len(s.failed)} failed, {s.not_run} not run, of {s.total} job(s) "
             f"({s.skipped} finished before this start); {s.seconds:.1f} s"]
    if s.failed:
        lines.append("failed:")
        lines += [f"  L{r.get('line')} {r['id']}: {r.get('error')}" for r in sorted(s.failed, key=lambda r: r.get("line", 0))]
    if s.not_run:
        lines.append("not finished: run the same command again to resume")
    lines.append("wrote " + ", ".join(str(p) for p in s.paths.values()))
    return lines
