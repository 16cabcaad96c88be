"""Guards shared by the commands that run for a long time: an output folder that cannot be written is found before
any compute is spent, and SIGTERM (what job schedulers send) stops a run the way Ctrl-C does."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import RewardsteerError, WeightsError

SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: the shell's code for "ended by SIGTERM"
SIGINT_EXIT = 130


def check_writable(out: str | Path, what: str = "--out", create: bool = True) -> Path:
    """Prove that files can be written in folder `out`, before any compute is spent, by making it (and its parents)
    and writing a probe file in it; without `create`, the folders this made are removed again. A one-line
    RewardsteerError names the folder and the reason otherwise."""
    out = Path(out)
    made = []
    try:
        if out.exists() and not out.is_dir():
            raise RewardsteerError(f"{what} {out} exists and is not a folder")
        parent = next(p for p in out.absolute().parents if p.exists())
        if not parent.is_dir():
            raise RewardsteerError(f"{what} {out} cannot be written: {parent} is a file, not a folder")
        target = out.absolute()
        missing = [target, *target.parents[:len(target.parents) - len(parent.parents) - 1]][::-1]  # top down
        for folder in missing if not out.exists() else []:
            folder.mkdir()
            made.append(folder)
        probe = out / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except RewardsteerError:
        raise
    except OSError as e:
        reason = e.strerror or type(e).__name__
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
        raise RewardsteerError(f"{what} {out} cannot be written: {reason}{where}; choose another folder") from None
    finally:
        if not create:
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return out


def check_writable_file(path: str | Path, what: str = "--out") -> Path:
    """A file about to be written: not a folder, in a folder that can be written (checked as `check_writable`
    does, leaving no folder behind)."""
    path = Path(path)
    if path.is_dir():
        raise RewardsteerError(f"{what} {path} is a folder; give a file name, e.g. {path / 'out.csv'}")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise RewardsteerError(f"{what} {path} cannot be written: {parent} is a file, not a folder")
    check_writable(path.parent, f"{what} {path}: its folder", create=False)
    return path


def check_file_name(name: str, what: str = "--name") -> str:
    """A plain file name (no folders, not '.' or '..'), so files named after it stay inside their folder."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise RewardsteerError(f"{what} must be a plain file name without folders (e.g. bt); got {name!r}")
    return name


def _click_check(check):
    """A click callback from a check that raises RewardsteerError: the message becomes click's one line."""
    def callback(ctx, param, value):
        import click

        if value is None:
            return value
        try:
            check(value, f"--{param.name.replace('_', '-')}")
        except RewardsteerError as e:
            raise click.BadParameter(str(e).removeprefix(f"--{param.name.replace('_', '-')} "), ctx, param) from None
        return value
    return callback


def check_finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise RewardsteerError(f"{what} must be a finite number; got {value}")
    return value


writable_out_option = _click_check(lambda value, what: check_writable(value, what, create=False))
writable_out_option.__doc__ = "A click callback for an --out folder: fail at parse time, before any compute is spent."
writable_file_option = _click_check(check_writable_file)
file_name_option = _click_check(check_file_name)
finite_option = _click_check(check_finite)  # click's FloatRange lets nan and inf through


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is when it arrives, so every Ctrl-C path (partial results saved) runs."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread. Yields a dict whose
    "signal" is set to "SIGTERM" once one arrived, so the caller can exit with 143 instead of 130."""
    state = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        state["signal"] = "SIGTERM"
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(state: dict) -> int:
    return SIGTERM_EXIT if state.get("signal") == "SIGTERM" else SIGINT_EXIT


@contextlib.contextmanager
def deferred_signals():
    """Within the block, Ctrl-C and SIGTERM are held until the caller reaches a safe point: the block gets
    `safe_point(before=None)`, which, once a signal arrived, runs `before()` (e.g. save a checkpoint between two
    training steps, never inside one), restores the previous handlers and re-delivers the signal to them (so the
    CLI still exits 130 / 143 with its usual message). Outside the main thread it does nothing."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda before=None: None
        return
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in watched}

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)

    def safe_point(before=None):
        if pending:
            if before is not None:
                before()
            restore()
            signal.raise_signal(pending[0])

    for s in watched:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield safe_point
    finally:
        restore()


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing pickles (torch.save / .pt / .ckpt) and naming bad files."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    with path.open("rb") as f:
        head = f.read(9)
    # a safetensors file is an 8-byte header length then its JSON header ("{"); that length's first byte may well
    # be 0x80 or "PK", so only a file without the JSON brace is taken for a pickle (0x80) or a zip (torch.save)
    if head[8:9] != b"{" and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise WeightsError(f"{path} is a pickle / torch.save file; rewardsteer loads only safetensors "
                           "(convert it with safetensors.torch.save_file(state_dict, 'model.safetensors'))")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a valid safetensors file (corrupt or truncated?): {e}") from None
