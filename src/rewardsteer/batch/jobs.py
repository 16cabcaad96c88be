"""Batch jobs as data: one JSON object per line of a JSONL file (or one row of a CSV file) holding a run's options
(a `rewardsteer.runs.RunSpec`, spelled as `rewardsteer run`'s options), e.g.

    {"model": "mnist-onestep", "class": 7, "method": "best_of_n", "candidates": 64, "n": 4, "max_nfe": 64}

Keys are `run`'s option names without the dashes (`max-nfe` and `max_nfe` both work; `generator` is `model`,
`budget: {"nfe": 64, "seconds": 30}` is `max_nfe` / `max_seconds`); a repeatable option (`reward`, `heldout`)
takes a string or a list (in CSV: values separated by `;`); an on/off option takes true or false. `name` is a
label for tables and is not part of the job. `out` and `progress` belong to the batch.

A job's id is a hash of its canonical JSON (keys sorted, values converted by RunSpec's own types, so the CSV cell
"7" and the JSON number 7 give the same id; defaults not filled in), and its seed, unless the job sets
`seed`, derives from the id: the same job gives the same samples wherever and whenever it runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RewardsteerError
from ..runs import check as check_run
from ..runs.spec import RunSpec

BATCH_OWNED = ("out", "progress")  # set by the batch for every job
LABEL = "name"
SEED_BITS = 31


class Problem(str):
    """A line of a jobs file that could not be read as a job (told apart from a JSON string value)."""


class JobsError(RewardsteerError):
    """A jobs file with invalid lines; the message lists each one as FILE:LINE: problem (`problems`), under a
    first line that `headline` gives alone."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []

    @property
    def headline(self) -> str:
        """One line: the count and the first problem (the command line prints this)."""
        first, *rest = str(self).splitlines()
        if not rest:
            return first
        more = f" (and {len(self.problems) - 1} more: --check lists them all)" if len(self.problems) > 1 else ""
        return f"{first.rstrip(':')}: {rest[0]}{more}"


@dataclass(frozen=True)
class Job:
    """One steering job: `options` are a RunSpec's keys and typed values (only those the job sets); `id` is the
    hash of their canonical JSON; `seed` the job's own or one derived from the id."""

    options: dict
    id: str
    seed: int
    line: int = 0
    name: str | None = None

    @property
    def spec(self) -> RunSpec:
        """The run this job is, with its seed."""
        spec = RunSpec.from_dict(self.options)
        return spec if "seed" in self.options else spec.replace(seed=self.seed)

    def argv(self, out: str | Path | None = None) -> list[str]:
        """The `rewardsteer run` arguments that run this job (with its seed; with --out when given)."""
        args = RunSpec.from_dict(self.options).to_argv()
        if "seed" not in self.options:  # the derived seed last, as a command line would add it
            args += ["--seed", str(self.seed)]
        if out is not None:
            args += ["--out", str(out), "--no-progress"]
        return args

    @property
    def label(self) -> str:
        """A short human description: the name if given, else the model, target and method."""
        if self.name:
            return self.name
        o = self.options
        parts = [o.get("pipeline") or o.get("model", "mnist-onestep")]
        if "prompt" in o:
            parts.append(repr(o["prompt"][:30]))
        if "class" in o:
            parts.append(f"class {o['class']}")
        parts.append(o.get("method", "default method"))
        return " ".join(str(p) for p in parts)

    def to_json(self) -> dict:
        return {"id": self.id, "line": self.line, "name": self.name, "seed": self.seed, "options": self.options}

    @classmethod
    def from_json(cls, d: dict) -> Job:
        return cls(d["options"], d["id"], d["seed"], d.get("line", 0), d.get("name"))


def normalize(raw: dict, *, list_separator: str | None = None) -> tuple[RunSpec, str | None]:
    """A job as written -> (its RunSpec, its name). Raises a one-line RewardsteerError for anything `rewardsteer
    run` would reject."""
    if not isinstance(raw, dict):
        raise RewardsteerError(f"a job is a JSON object of `rewardsteer run` options; got {type(raw).__name__}")
    raw = dict(raw)
    name = raw.pop(LABEL, None)
    for key in raw:
        if str(key).lstrip("-").replace("-", "_") in BATCH_OWNED:
            raise RewardsteerError(f"'{key}' is set by the batch for every job (each job writes under --out/jobs/ID)")
    return RunSpec.from_dict(raw, list_separator=list_separator), None if name is None else str(name)


def job_id(options: dict) -> str:
    """The hash of the canonical JSON of a job's options (sorted keys, no spaces): 16 hex digits."""
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def seed_from_id(jid: str) -> int:
    return int(jid[:8], 16) % 2**SEED_BITS


def make_job(raw: dict, line: int = 0, list_separator: str | None = None, check: bool = True) -> Job:
    """A validated Job from a dict as written in a jobs file (`check`: also the names the run resolves: models,
    rewards, held-out judges, transforms, aggregates, conditions, method/model pairs; `rewardsteer.runs.check`)."""
    spec, name = normalize(raw, list_separator=list_separator)
    if check:
        check_run(spec)
    options = spec.to_dict()
    jid = job_id(options)
    seed = options.get("seed", seed_from_id(jid))
    return Job(options, jid, seed, line, name)


def read_rows(path: Path) -> list[tuple[int, Any, str | None]]:
    """(line number, raw job or the `Problem` that kept it from being read, CSV list separator) for each job in a
    JSONL or CSV file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise JobsError(f"{path} is not a text file (byte {e.start} is not UTF-8); a jobs file is JSONL or CSV") from None
    except OSError as e:
        raise JobsError(f"{path}: cannot read the jobs file: {e.strerror or type(e).__name__}") from None
    rows: list[tuple[int, Any, str | None]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        for row in reader:
            if None in row:
                rows.append((reader.line_num, Problem("more cells than the header has columns"), None))
                continue
            if not any((v or "").strip() for v in row.values()):
                continue
            if None in row.values():  # a short row: an empty cell must be written as one (a,,c)
                missing = [k for k, v in row.items() if v is None]
                rows.append((reader.line_num, Problem(f"fewer cells than the header has columns (no {', '.join(missing)})"),
                             None))
                continue
            rows.append((reader.line_num, {k.strip(): v.strip() for k, v in row.items() if k}, ";"))
        return rows
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            rows.append((i, json.loads(s), None))
        except json.JSONDecodeError as e:
            rows.append((i, Problem(f"not valid JSON: {e.msg} (column {e.colno})"), None))
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            rows.append((i, Problem(f"not a usable JSON value: {' '.join(str(e).split())[:120]}"), None))
    return rows


MAX_LISTED = 20


def load_jobs(path: str | Path, check: bool = True) -> list[Job]:
    """Every job in a JSONL or CSV file, validated before any runs: all bad lines are reported together, each as
    FILE:LINE: problem; two lines that are the same job are an error (give one a distinct `seed`)."""
    path = Path(path)
    if path.is_dir():
        raise RewardsteerError(f"{path} is a folder; give a jobs file (.jsonl or .csv)")
    if not path.is_file():
        raise RewardsteerError(f"jobs file not found: {path}")
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".ndjson"):
        raise RewardsteerError(f"{path}: a jobs file is JSONL (.jsonl, one JSON object per line) or CSV (.csv)")
    jobs, errors, seen = [], [], {}
    for line, raw, sep in read_rows(path):
        if isinstance(raw, Problem):
            errors.append(f"{path}:{line}: {raw}")
            continue
        try:
            job = make_job(raw, line, sep, check=check)
        except RewardsteerError as e:
            errors.append(f"{path}:{line}: {e}")
            continue
        if job.id in seen:
            errors.append(f"{path}:{line}: the same job as line {seen[job.id]} (id {job.id}); give one a distinct "
                          "\"seed\" to run it twice")
            continue
        seen[job.id] = line
        jobs.append(job)
    if errors:
        listed = errors[:MAX_LISTED] + ([f"... and {len(errors) - MAX_LISTED} more"] if len(errors) > MAX_LISTED else [])
        raise JobsError(f"{len(errors)} invalid job(s) in {path}; nothing was run:\n" + "\n".join(listed), errors)
    if not jobs:
        raise JobsError(f"{path} holds no jobs")
    return jobs


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """`I/K` -> (I, K) with 0 <= I < K; None for no shard."""
    if not shard:
        return None
    try:
        i, k = (int(v) for v in shard.split("/"))
        assert 0 <= i < k
    except (ValueError, AssertionError):
        raise RewardsteerError(f"--shard takes I/K with 0 <= I < K (e.g. 0/4); got '{shard}'") from None
    return i, k


def select_shard(jobs: list[Job], shard: str | None) -> list[Job]:
    """`I/K`: the jobs whose id falls in shard I of K (by id, so a job's shard does not depend on the file's order)."""
    parsed = parse_shard(shard)
    if parsed is None:
        return jobs
    i, k = parsed
    return [j for j in jobs if int(j.id, 16) % k == i]
