"""The batch's files: an append-only JSONL manifest (one record per finished job) and atomic writes.

A job's outputs are written into a temporary folder that is renamed to `jobs/ID` only when complete, so a folder
named by a job id is always whole. The manifest is appended after the rename, one `write` of one line per
record; a line cut short by a kill is dropped the next time the manifest is opened. A batch killed between the
rename and the append finds the folder on restart and appends its record then ("recovered"), so nothing is lost
and nothing is recorded twice.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

FINAL = ("done", "failed")
STATUS_FILE = "status.json"
TMP_PREFIX = ".tmp-"


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish_dir(tmp: Path, final: Path) -> bool:
    """Rename a finished temporary folder to its final name; False (and `tmp` removed) when another process
    published that job first."""
    try:
        os.rename(tmp, final)
    except OSError:
        if (final / STATUS_FILE).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise
    fsync_dir(final.parent)
    return True


class Manifest:
    """`manifest.jsonl`: one JSON record per finished job (status done or failed, cost, scores). Records are only
    appended; the latest record of a job is its state."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        self._repair_and_read()

    def _repair_and_read(self) -> None:
        if not self.path.exists():
            self.path.touch()
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a record cut short by a kill: never completed, so never counted
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                self.records[rec["id"]] = rec

    def append(self, record: dict) -> None:
        line = (json.dumps(record, default=str, allow_nan=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: appended whole or (killed) cut short, never interleaved
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record["id"]] = record

    def final(self, job_id: str) -> dict | None:
        rec = self.records.get(job_id)
        return rec if rec is not None and rec.get("status") in FINAL else None
