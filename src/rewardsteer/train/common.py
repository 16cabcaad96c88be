"""Shared plumbing of the training scripts: seeding, logging, EMA, saving a model with its card."""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..data import MNIST_LICENSE


def seed_everything(seed: int, threads: int | None = None) -> torch.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)


class Logger:
    """Prints and appends JSON lines, so a long background run can be followed with `tail -f`."""

    def __init__(self, path: Path | None):
        self.path = path
        self.start = time.time()
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, **record):
        record = {"elapsed_s": round(time.time() - self.start, 1), **record}
        line = json.dumps(record)
        print(line, flush=True)
        if self.path:
            with self.path.open("a") as f:
                f.write(line + "\n")


class EMA:
    """Exponential moving average of weights with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p, 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces a run, recorded in the card."""
    return " ".join(["python -m", module, *(sys.argv[1:] if argv is None else argv)])


def batches(n: int, batch: int, gen: torch.Generator):
    """Endless minibatch indices: a fresh permutation from `gen` whenever the current one runs out."""
    perm, pos = torch.randperm(n, generator=gen), 0
    while True:
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos:pos + batch]
        pos += batch


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module, opt, sched, ema: EMA, clip: float = 1.0) -> None:
    """Backward, clip the gradient norm, step the optimizer and the schedule, update the EMA."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()
    ema.update(model)


def mnist_data_card(source: str, subset: str) -> dict:
    return {"dataset": "MNIST", "source": source, "subset": subset, "license": MNIST_LICENSE}


def save_model(model: torch.nn.Module, out_dir: Path, name: str, card: dict) -> Path:
    """Write `name.safetensors` (contiguous fp32 tensors) and `name.json` (its card)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    tensors.update({k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if not v.is_floating_point()})
    path = out_dir / f"{name}.safetensors"
    save_file(tensors, str(path), metadata={"name": name})
    card = {
        "name": name,
        "architecture": {"class": type(model).__name__, "config": model.config,
                         "parameters": sum(p.numel() for p in model.parameters())},
        **card,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
        "size_mb": round(path.stat().st_size / 2**20, 2),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return path
