"""Shared plumbing of the training scripts: seeding, logging, EMA, saving a model with its card."""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .data import MNIST_LICENSE

# docs/models.md: the sections other scripts write (evaluate_molecules, benchmarks/emergent.py) and evaluate (MNIST)
# keeps when it rewrites the file
MOLECULES_BEGIN, MOLECULES_END = "<!-- evaluate_molecules: begin -->", "<!-- evaluate_molecules: end -->"
EMERGENT_BEGIN, EMERGENT_END = "<!-- benchmarks/emergent: begin -->", "<!-- benchmarks/emergent: end -->"
KEPT_SECTIONS = ((MOLECULES_BEGIN, MOLECULES_END), (EMERGENT_BEGIN, EMERGENT_END))


def write_section(path: Path, section: str, begin: str, end: str, new_file: str = "") -> None:
    """Put `section` between the markers `begin` and `end` of the markdown file `path`, replacing an earlier one
    (appended at the end the first time; a missing file starts as `new_file`)."""
    text = path.read_text() if path.exists() else new_file
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def seed_everything(seed: int, threads: int | None = None) -> torch.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)


class Logger:
    """Prints and appends JSON lines, so a long background run can be followed with `tail -f`."""

    def __init__(self, path: Path | None, append: bool = False):
        self.path = path
        self.start = time.time()
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not append:
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


class Batches:
    """Endless minibatch indices: a fresh permutation from `gen` whenever the current one runs out. An
    iterator whose state (perm, pos) a `Checkpoint` saves, so a resumed run sees the same batches."""

    def __init__(self, n: int, batch: int, gen: torch.Generator):
        self.n, self.batch, self.gen = n, batch, gen
        self.perm, self.pos = torch.randperm(n, generator=gen), 0

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        self.pos += self.batch
        return self.perm[self.pos - self.batch:self.pos]



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


def optimizer_tensors(opt: torch.optim.Optimizer, named_params) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state (Adam moments, step) as `opt/NAME/FIELD` tensors, for safetensors."""
    names = {id(p): n for n, p in named_params}
    return {f"opt/{names[id(p)]}/{k}": torch.as_tensor(v)
            for group in opt.param_groups for p in group["params"] for k, v in opt.state.get(p, {}).items()}


def restore_optimizer(opt: torch.optim.Optimizer, named_params, tensors: dict[str, torch.Tensor]) -> None:
    """Put back what `optimizer_tensors` saved."""
    params = dict(named_params)
    for key, v in tensors.items():
        if key.startswith("opt/"):
            name, _, field = key[4:].rpartition("/")
            opt.state[params[name]][field] = v


class Checkpoint:
    """Resumable training state in safetensors + JSON (never pickle): model, EMA, optimizer moments, the
    schedule's step, the data RNG and the minibatch order. Written atomically every `every_s` seconds, so a
    run killed at any moment resumes from its last save with the same random stream as an uninterrupted run.
    """

    def __init__(self, path: Path, every_s: float = 180.0):
        self.path, self.every_s, self.last = Path(path), every_s, time.time()

    def exists(self) -> bool:
        return self.path.with_suffix(".json").is_file() and self.path.with_suffix(".safetensors").is_file()

    def due(self) -> bool:
        return time.time() - self.last >= self.every_s

    def save(self, step: int, model, ema: EMA, opt, sched, gen: torch.Generator, order: Batches, extra=None):
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"ema/{k}": v for k, v in ema.model.state_dict().items()})
        tensors.update(optimizer_tensors(opt, model.named_parameters()))
        tensors["rng"] = gen.get_state()
        tensors["order/perm"] = order.perm
        meta = {"step": step, "ema_updates": ema.updates, "sched": sched.state_dict()["last_epoch"],
                "order_pos": order.pos, "extra": extra or {}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp))
        tmp.replace(self.path.with_suffix(".safetensors"))
        self.path.with_suffix(".json.tmp").write_text(json.dumps(meta))
        self.path.with_suffix(".json.tmp").replace(self.path.with_suffix(".json"))
        self.last = time.time()

    def load(self, model, ema: EMA, opt, sched, gen: torch.Generator, order: Batches) -> tuple[int, dict]:
        """Restore everything `save` wrote; returns (the next step to run, the extra dict)."""
        t = load_file(str(self.path.with_suffix(".safetensors")))
        meta = json.loads(self.path.with_suffix(".json").read_text())
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model/")})
        ema.model.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema/")})
        ema.updates = meta["ema_updates"]
        restore_optimizer(opt, model.named_parameters(), t)
        sched.last_epoch = meta["sched"]
        sched._last_lr = [f(meta["sched"]) * g["initial_lr"] for f, g in zip(sched.lr_lambdas, opt.param_groups)]
        for g, lr in zip(opt.param_groups, sched._last_lr):
            g["lr"] = lr
        gen.set_state(t["rng"])
        order.perm, order.pos = t["order/perm"], meta["order_pos"]
        return meta["step"] + 1, meta["extra"]


def start_or_resume(checkpoint: Checkpoint | None, resume: bool, log_path: Path | None, model, ema: EMA, opt, sched,
                    gen: torch.Generator, order: Batches) -> tuple[int, Logger, float]:
    """(first step, logger, start time) of a run: restored from `checkpoint` when resuming (the log appended
    to, the wall time already spent carried over), else a fresh start."""
    first, spent = 0, 0.0
    if resume and checkpoint is not None and checkpoint.exists():
        first, extra = checkpoint.load(model, ema, opt, sched, gen, order)
        spent = extra.get("wall_seconds", 0.0)
    log = Logger(log_path, append=first > 0)
    if first:
        log(resumed_at=first)
    return first, log, time.time() - spent
