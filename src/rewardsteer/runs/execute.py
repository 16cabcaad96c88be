"""`execute(spec, out)`: build the run, call its method, write its outputs, return the Result. Every front-end
(the CLI, batch jobs, the web page, the demo) runs through here, so an option means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .registry import build
from .spec import RunSpec


def execute(spec: RunSpec, out: str | Path, *, callback: Callable | None = None, progress: bool = True,
            log: Callable[[str], None] | None = None):
    """Run `spec` and write its files into `out` (result.json, tensors, grid.png, trace.png; molecules also
    samples.smi and properties.csv). `callback(state) -> dict | None` is passed to the method (docs/steering.md);
    `log(line)` receives notes about the set-up. The returned Result's `files` maps names to the files written.
    On an exception, a partial result that the method attached is written first, then the exception propagates."""
    log = log or (lambda line: None)
    plan = build(spec)
    for note in plan.notes:
        log(note)
    try:
        result = plan.run(callback, progress)
    except Exception as e:
        partial = getattr(e, "partial_result", None)
        if partial is not None:
            partial.files = plan.write(partial, out)
            log(f"partial result saved to {out}")
        raise
    result.files = plan.write(result, out)
    return result
