"""Batch jobs as data: one JSON object per line of a JSONL file (or one row of a CSV file) holding `rewardsteer
run`'s options, e.g.

    {"model": "mnist-onestep", "class": 7, "method": "best_of_n", "candidates": 64, "n": 4, "max_nfe": 64}

Keys are `run`'s option names without the dashes (`max-nfe` and `max_nfe` both work; `generator` is `model`,
`budget: {"nfe": 64, "seconds": 30}` is `max_nfe` / `max_seconds`); a repeatable option (`reward`, `heldout`)
takes a string or a list (in CSV: values separated by `;`); an on/off option takes true or false. `name` is a
label for tables and is not part of the job. `out` and `progress` belong to the batch.

A job's id is a hash of its canonical JSON (keys sorted, values converted by the CLI's own option types, so the
CSV cell "7" and the JSON number 7 give the same id; defaults not filled in), and its seed, unless the job sets
`seed`, derives from the id: the same job gives the same samples wherever and whenever it runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import RewardsteerError

BATCH_OWNED = ("out", "progress")  # set by the batch for every job
ALIASES = {"generator": "model", "target": "class", "rewards": "reward", "heldouts": "heldout"}
BUDGET_KEYS = {"nfe": "max_nfe", "backward": "max_backward", "reward_calls": "max_reward_calls",
               "seconds": "max_seconds"}
LABEL = "name"
SEED_BITS = 31


class JobsError(RewardsteerError):
    """A jobs file with invalid lines; the message lists each one as FILE:LINE: problem."""


@dataclass(frozen=True)
class Job:
    """One steering job: `options` are `rewardsteer run` options (canonical names, typed values, only those the
    job sets); `id` is the hash of their canonical JSON; `seed` the job's own or one derived from the id."""

    options: dict
    id: str
    seed: int
    line: int = 0
    name: str | None = None

    def argv(self, out: str | Path | None = None) -> list[str]:
        """The `rewardsteer run` arguments that run this job (with its seed; with --out when given)."""
        args = options_to_argv(self.options)
        if "seed" not in self.options:
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


def _run_command() -> click.Command:
    from ..cli import run

    return run


def option_table() -> dict[str, tuple[click.Option, bool]]:
    """Job key -> (the `run` option, the value a bare flag means): every spelling of every option, e.g.
    `class` and `target`, `standardize` (True) and `raw` (False)."""
    table: dict[str, tuple[click.Option, bool]] = {}
    for p in _run_command().params:
        if not isinstance(p, click.Option) or p.name in BATCH_OWNED:
            continue
        for opt in p.opts:
            table[_key(opt)] = (p, True)
        for opt in p.secondary_opts:
            table[_key(opt)] = (p, False)
        table.setdefault(p.name, (p, True))
    return table


def _key(opt: str) -> str:
    return opt.lstrip("-").replace("-", "_")


def canonical_key(p: click.Option) -> str:
    return _key(p.opts[0])


def options_to_argv(options: dict) -> list[str]:
    """Canonical job options -> `rewardsteer run` arguments."""
    table = option_table()
    args: list[str] = []
    for key, value in options.items():
        p, _ = table[key]
        if p.is_flag:
            args.append(p.opts[0] if value else (p.secondary_opts or [None])[0])
            if args[-1] is None:
                args.pop()
        elif p.multiple:
            for v in value:
                args += [p.opts[0], str(v)]
        else:
            args += [p.opts[0], str(value)]
    return args


def _flag_value(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")
    raise RewardsteerError(f"'{key}' takes true or false; got {value!r}")


def normalize(raw: dict, *, list_separator: str | None = None) -> tuple[dict, str | None, click.Context]:
    """A job as written -> (canonical options, name, the `run` command's parsed context). Raises a one-line
    RewardsteerError (or click's own message for a bad value) for anything `rewardsteer run` would reject."""
    if not isinstance(raw, dict):
        raise RewardsteerError(f"a job is a JSON object of `rewardsteer run` options; got {type(raw).__name__}")
    table = option_table()
    raw = dict(raw)
    name = raw.pop(LABEL, None)
    if name is not None and not isinstance(name, str):
        name = str(name)
    budget = raw.pop("budget", None)
    if budget is not None:
        if not isinstance(budget, dict) or set(budget) - set(BUDGET_KEYS):
            raise RewardsteerError(f"'budget' is an object with keys from {', '.join(BUDGET_KEYS)}; got {budget!r}")
        for k, v in budget.items():
            raw.setdefault(BUDGET_KEYS[k], v)
    given: dict[str, Any] = {}
    for key, value in raw.items():
        k = ALIASES.get(_key(key), _key(key))
        if k in BATCH_OWNED:
            raise RewardsteerError(f"'{key}' is set by the batch for every job (each job writes under --out/jobs/ID)")
        if k not in table:
            known = sorted({canonical_key(p) for p, _ in table.values()} | {"budget", LABEL, *ALIASES})
            raise RewardsteerError(f"unknown job key '{key}'; known keys: {', '.join(known)}")
        if value is None or value == "":
            continue
        p, bare = table[k]
        ck = canonical_key(p)
        if ck in given:
            raise RewardsteerError(f"'{key}' repeats option '{ck}'")
        if p.is_flag:
            value = _flag_value(key, value) == bare
        elif p.multiple:
            if isinstance(value, str) and list_separator:
                value = [v.strip() for v in value.split(list_separator) if v.strip()]
            value = list(value) if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                raise RewardsteerError(f"'{key}' takes a string or a list of strings; got {raw[key]!r}")
        elif isinstance(value, (dict, list)):
            raise RewardsteerError(f"'{key}' takes one value; got {value!r}")
        given[ck] = value
    run = _run_command()
    try:
        # an --out that exists (the jobs' own go under the batch's --out) so only the job's options are checked
        ctx = run.make_context("run", [*options_to_argv(given), "--out", tempfile.gettempdir()])
    except click.ClickException as e:
        raise RewardsteerError(e.format_message()) from None
    options = {}
    for key in given:
        p, _ = table[key]
        v = ctx.params[p.name]
        options[key] = list(v) if isinstance(v, tuple) else v
    return options, name, ctx


def job_id(options: dict) -> str:
    """The hash of the canonical JSON of a job's options (sorted keys, no spaces): 16 hex digits."""
    canonical = json.dumps(options, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def seed_from_id(jid: str) -> int:
    return int(jid[:8], 16) % 2**SEED_BITS


def make_job(raw: dict, line: int = 0, list_separator: str | None = None, check: bool = True) -> Job:
    """A validated Job from a dict as written in a jobs file (`check`: also the names `run` resolves at run time:
    models, rewards, held-out judges, transforms, aggregates, conditions, method/model pairs)."""
    options, name, ctx = normalize(raw, list_separator=list_separator)
    if check:
        check_names(ctx)
    jid = job_id(options)
    seed = options.get("seed", seed_from_id(jid))
    return Job(options, jid, seed, line, name)


def check_names(ctx: click.Context) -> None:
    """The checks `rewardsteer run` makes on names and specs before it spends compute, done for a whole jobs file
    before the first job starts (loading a reward's weights once to prove it loads)."""
    from .. import cli
    from ..models import GENERATORS, reward_from_spec

    p, default = ctx.params, click.core.ParameterSource.DEFAULT
    given = {name for name in p if ctx.get_parameter_source(name) != default}
    if p["model"] == "moses-mdlm":
        from ..molecules import steer

        image_only = {"robust", "aggregate", "standardize", "pipeline", "condition"} & given
        if image_only:
            raise RewardsteerError(f"--{sorted(image_only)[0]} is an image option; molecule runs take --reward, "
                                   "--heldout, --method")
        steer.check_names(p["method"] if "method" in given else "svdd",
                          list(p["rewards"]) if "rewards" in given else [steer.DEFAULT_REWARD],
                          list(p["heldouts"]) if "heldouts" in given else [steer.DEFAULT_HELDOUT])
        return
    if p["pipeline"] is not None:
        if not p["prompt"]:
            raise RewardsteerError("--pipeline needs --prompt \"...\"")
        if "rewards" not in given:
            raise RewardsteerError("--pipeline needs --reward: clip:PATH_OR_ID, head:FILE.safetensors, "
                                   "suppress:CONCEPT or jpeg")
        return
    if p["model"] not in GENERATORS:
        from ..errors import UnknownNameError

        raise UnknownNameError("generator", p["model"], GENERATORS)  # the message `run` gives
    if p["method"] in cli.PARTICLE_METHODS and p["model"] != "mnist-flow":
        raise RewardsteerError(f"--method {p['method']} steers a multi-step stochastic sampler: use --model mnist-flow")
    cli._condition(p["condition"], p["target"])
    for spec in p["rewards"]:
        reward_from_spec(spec, p["target"])
    cli._heldout(p["heldouts"], p["target"])
    cli._transforms(p["robust"])
    if p["aggregate"]:
        from ..aggregates import aggregate_from_spec

        aggregate_from_spec(p["aggregate"])


def read_rows(path: Path) -> list[tuple[int, Any, str | None]]:
    """(line number, raw job or a parse error message, CSV list separator) for each job in a JSONL or CSV file."""
    text = path.read_text(encoding="utf-8")
    rows: list[tuple[int, Any, str | None]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        for row in reader:
            if None in row:
                rows.append((reader.line_num, "more cells than the header has columns", None))
                continue
            if not any((v or "").strip() for v in row.values()):
                continue
            rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}, ";"))
        return rows
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            rows.append((i, json.loads(s), None))
        except json.JSONDecodeError as e:
            rows.append((i, f"not valid JSON: {e.msg} (column {e.colno})", None))
    return rows


MAX_LISTED = 20


def load_jobs(path: str | Path, check: bool = True) -> list[Job]:
    """Every job in a JSONL or CSV file, validated before any runs: all bad lines are reported together, each as
    FILE:LINE: problem; two lines that are the same job are an error (give one a distinct `seed`)."""
    path = Path(path)
    if not path.is_file():
        raise RewardsteerError(f"jobs file not found: {path}")
    if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".ndjson"):
        raise RewardsteerError(f"{path}: a jobs file is JSONL (.jsonl, one JSON object per line) or CSV (.csv)")
    jobs, errors, seen = [], [], {}
    for line, raw, sep in read_rows(path):
        if isinstance(raw, str):
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
        raise JobsError(f"{len(errors)} invalid job(s) in {path}; nothing was run:\n" + "\n".join(listed))
    if not jobs:
        raise JobsError(f"{path} holds no jobs")
    return jobs


def select_shard(jobs: list[Job], shard: str | None) -> list[Job]:
    """`I/K`: the jobs whose id falls in shard I of K (by id, so a job's shard does not depend on the file's order)."""
    if not shard:
        return jobs
    try:
        i, k = (int(v) for v in shard.split("/"))
        assert 0 <= i < k
    except (ValueError, AssertionError):
        raise RewardsteerError(f"--shard takes I/K with 0 <= I < K (e.g. 0/4); got '{shard}'") from None
    return [j for j in jobs if int(j.id, 16) % k == i]
