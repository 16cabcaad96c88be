"""One steering run driven from a program (the web page): the form's options become a `RunSpec`, checked as
`rewardsteer run` checks them, and `rewardsteer.runs.execute` runs it in a thread. Each run keeps its own log, trace
rows and summary (no process-wide stdout redirection), so concurrent runs never mix."""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path

import click

from ..errors import RewardsteerError
from ..runs import check, execute
from ..runs.spec import RunSpec, spec_fields
from .policy import PagePolicy


def run_defaults() -> dict:
    """`rewardsteer run`'s defaults by job key (`class`, `reward`, `max_nfe`, ...)."""
    return {f.metadata["key"]: f.default for f in spec_fields()}


def changed_options(form: dict) -> dict:
    """The form's values that differ from `rewardsteer run`'s defaults (empty fields dropped), so the run sees
    exactly what a command line with those options would."""
    defaults = run_defaults()
    out = {}
    for key, value in form.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, float) and value.is_integer() and isinstance(defaults.get(key), int):
            value = int(value)
        if isinstance(value, (list, tuple)):
            value = list(value)
        if key in defaults and value == defaults[key] and key != "seed":  # the seed always (a batch would derive one)
            continue
        out[key] = value
    return out


def one_line(exc: BaseException) -> str:
    """The CLI's one-line error for `exc` (`error: ...`), never a traceback."""
    if isinstance(exc, click.ClickException):
        msg = exc.format_message()
    elif isinstance(exc, RewardsteerError):
        msg = str(exc)
    else:
        msg = f"{type(exc).__name__}: {exc}"
    return "error: " + " ".join(msg.split())


def log_line(line: str) -> str:
    """Write a page's error to the server log (stderr) as the one line the page shows; returns it."""
    print(f"rewardsteer serve: {line}", file=sys.stderr, flush=True)
    return line


class SteeringRun:
    """`rewardsteer run` with `options` (job keys, as in a batch jobs file) into `out`, in a thread, within `policy`
    (default: the page's: bundled names, no paths, capped budgets). While it runs, `rows` grows by one (nfe, mean
    score, best score) per method iteration; `stop()` asks the method to stop (it returns what it has, stopped
    "callback"). Afterwards: `error` (a one-line message) or the files in `out`."""

    def __init__(self, options: dict, out: str | Path, policy: PagePolicy | None = None):
        policy = policy or PagePolicy()
        spec = policy.capped(RunSpec.from_dict(policy.confine(options)))
        self.spec = check(spec)  # the CLI's checks and messages; raises RewardsteerError
        self.out = Path(out)
        self.rows: list[tuple[int, float, float]] = []
        self.log: list[str] = []
        self.result = None
        self.error: str | None = None
        self.interrupted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.perf_counter()

    def start(self) -> SteeringRun:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _callback(self, state: dict):
        meter, scores = state.get("meter"), state.get("scores")
        if meter is not None and scores is not None:
            s = scores.detach().float().flatten()
            s = s[s.isfinite()]
            best = float(state["best_scores"].max()) if "best_scores" in state else (float(s.max()) if s.numel() else math.nan)
            self.rows.append((int(meter.nfe), float(s.mean()) if s.numel() else math.nan, best))
        return {"stop": True} if self._stop.is_set() else None

    def _run(self) -> None:
        try:
            self.result = execute(self.spec, self.out, callback=self._callback, progress=False, log=self.log.append)
            self.interrupted = self.result.stopped == "interrupted"
        except KeyboardInterrupt:
            self.interrupted = True
        except BaseException as e:  # noqa: BLE001 - shown on the page as one line, like the CLI
            self.error = one_line(e)

    @property
    def summary(self) -> list[str]:
        """This run's notes and its Result's summary (score, held-out, judges, cost, monitor)."""
        lines = [line for line in self.log if not line.startswith("partial result saved")]
        if self.result is not None:
            lines += str(self.result.summary()).splitlines()
        return [line for line in lines if line.strip()]

    def files(self) -> dict[str, Path]:
        return {name: self.out / f for name, f in (("result", "result.json"), ("grid", "grid.png"),
                                                   ("trace", "trace.png")) if (self.out / f).is_file()}
