"""The batch's files: an append-only JSONL manifest (one record per finished job) and atomic writes.

A job's outputs are written into a temporary folder that is renamed to `jobs/ID` only when complete, so a folder
named by a job id is always whole. The manifest is appended after the rename, one `write` of one line per
record; a line cut short by a kill is dropped the next time the manifest is opened. A batch killed between the
rename and the append finds the folder on restart and appends its record then ("recovered"), so nothing is lost
and nothing is recorded twice.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from ..errors import RewardsteerError

FINAL = ("done", "failed")
LOCK = ".lock"
# an OSError with one of these codes means the output folder cannot be written (read-only, full, gone)
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOENT, errno.ENOTDIR, errno.EIO}


class OutputError(RewardsteerError):
    """The batch's output folder stopped being writable: the batch stops, its finished jobs stay recorded."""


def output_error(root: Path, e: OSError) -> OutputError:
    return OutputError(f"--out {root} cannot be written any more ({e.strerror or type(e).__name__}"
                       f"{': ' + str(e.filename) if e.filename else ''}); the batch stopped and the jobs finished so "
                       "far are recorded: make it writable and run the same command again to resume")


def live_owner(text: str) -> str:
    """'pid N on HOST' from a lock file, or '' when that process is gone (shards share the lock and write no pid)."""
    parts = text.split()
    if len(parts) == 4 and parts[0] == "pid" and parts[1].isdigit() and parts[3] == socket.gethostname():
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return ""
        except OSError:
            pass
    return " ".join(parts)


@contextlib.contextmanager
def batch_lock(root: Path, shard: tuple[int, int] | None = None):
    """Hold `root/.lock` while a batch runs (fcntl.flock: the kernel drops it when the process dies, so a stale lock
    from a killed batch is taken over). A whole-file batch locks it exclusively; a shard I/K shares it with the
    other shards and locks `.lock-shard-I-of-K` exclusively, so shards of one file cooperate in one folder and a
    second batch on the same jobs refuses with one line."""
    import fcntl

    wanted = [(LOCK, fcntl.LOCK_EX if shard is None else fcntl.LOCK_SH)]
    if shard is not None:
        wanted.append((f"{LOCK}-shard-{shard[0]}-of-{shard[1]}", fcntl.LOCK_EX))
    held = []
    try:
        for name, mode in wanted:
            f = open(root / name, "a+")
            held.append(f)
            try:
                fcntl.flock(f, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = live_owner(f.read())
                raise RewardsteerError(f"another `rewardsteer batch` is running on {root}"
                                       f"{f' ({owner})' if owner else ''}"
                                       f"{f' for shard {shard[0]}/{shard[1]}' if shard and name != LOCK else ''}: "
                                       "wait for it to finish, or use another --out") from None
            if mode == fcntl.LOCK_EX:
                f.truncate(0)
                f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
                f.flush()
        yield
    finally:
        for f in held:
            f.close()

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
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write of one line: appended whole or (killed) cut short, never interleaved
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise output_error(self.path.parent, e) from None
        self.records[record["id"]] = record

    def final(self, job_id: str) -> dict | None:
        rec = self.records.get(job_id)
        return rec if rec is not None and rec.get("status") in FINAL else None
