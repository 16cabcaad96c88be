"""Hooks into `rewardsteer run` for programs that drive it (the web demo streams its trace through one)."""

from __future__ import annotations

from contextvars import ContextVar

# A method callback (`callback(state) -> dict | None`, see docs/steering.md) that `rewardsteer run` passes to the
# method it runs, when set in the running context.
RUN_CALLBACK: ContextVar = ContextVar("rewardsteer_run_callback", default=None)


def run_hooks() -> dict:
    """Extra keyword arguments for the method `rewardsteer run` calls: {"callback": ...} when one is set."""
    callback = RUN_CALLBACK.get()
    return {"callback": callback} if callback is not None else {}
