"""One training loop for every amortized approach: reward backpropagation through a frozen (or LoRA-adapted)
one-step generator, with a regularizer that keeps it near the prior.

Per step, for a batch of fresh noises z and conditions c (each a target the reward scores):
    loss = −mean_b [ r(x_b, c_b) − β · penalty_b ],   (x, penalty) = approach.sample(z, c)
where the penalty is ReNO's chi prior on z* (noise network), KL(N(μ_c, σ_c²) ‖ N(0, I)) (learned noise) or the
smoothed-joint KL to the base model (LoRA). Deterministic on the CPU (one seeded torch.Generator draws every
noise and condition), resumable (trainable weights, Adam moments, the RNG state and the cost so far are saved in
safetensors + JSON every few minutes and on Ctrl-C / SIGTERM), and it accounts its cost like any method: NFE,
backward passes, reward calls and seconds, so the break-even against per-sample steering can be computed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..budget import Meter
from ..bundled.training import Logger, optimizer_tensors, restore_optimizer
from ..core import Reward, make_rng, reference, reward_generators
from ..errors import RewardsteerError
from ..plumbing import score_heldout
from ..safety import deferred_signals, load_safetensors
from .lora import base_model, output_kl


class NoiseMapApproach:
    """A noise network or learned noise distribution in front of a frozen generator."""

    def __init__(self, base, noise_map: torch.nn.Module, kind: str, generator_cond: Any = None):
        self.base, self.module, self.kind, self.generator_cond = base, noise_map, kind, generator_cond
        self.base.requires_grad_(False)
        self.noise_map_calls = 1  # the map's own forward per sample; the generator's NFE is counted separately

    def sample(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_star = self.module(z, c)
        x = self.base(z_star.to(reference(self.base).dtype), self.generator_cond)
        return x, self.module.regularizer(z_star, c, z)

    def nfe_per_step(self, batch: int) -> int:
        return batch * self.base.nfe_per_call


class LoRAApproach:
    """A generator with LoRA adapters; the penalty is its smoothed-joint KL to the adapters-off base model."""

    kind = "lora"

    def __init__(self, generator, generator_cond: Any = None):
        self.generator, self.module, self.generator_cond = generator, generator, generator_cond

    def sample(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.generator(z, self.generator_cond)
        with torch.no_grad(), base_model(self.generator):
            x0 = self.generator(z, self.generator_cond)
        return x, output_kl(x, x0)

    def nfe_per_step(self, batch: int) -> int:
        return 2 * batch * self.generator.nfe_per_call  # the adapted pass and the base pass for the KL


@dataclass
class TrainConfig:
    steps: int = 300
    batch: int = 16
    lr: float = 1e-3
    reg: float = 0.01  # β
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 50
    eval_n: int = 64
    checkpoint_every_s: float = 120.0


@dataclass
class TrainReport:
    """What a training run spent and measured (an interrupted run raises KeyboardInterrupt instead)."""

    steps_done: int
    nfe: int
    backward: int
    reward_calls: int
    seconds: float
    stopped: str
    evals: list[dict] = field(default_factory=list)

    def cost(self) -> dict:
        return {k: getattr(self, k) for k in ("steps_done", "nfe", "backward", "reward_calls", "seconds")}


def trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


class _State:
    """Resumable state in OUT/checkpoint.{safetensors,json}: trainable tensors, Adam moments, RNG, costs, evals."""

    def __init__(self, out: Path | None):
        self.path = None if out is None else Path(out) / "checkpoint"

    def exists(self) -> bool:
        return self.path is not None and self.path.with_suffix(".json").is_file()

    def save(self, params: dict, opt, rngs: list[torch.Generator], meta: dict) -> None:
        if self.path is None:
            return
        tensors = {f"param/{n}": p.detach().cpu().contiguous().clone() for n, p in params.items()}
        tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in optimizer_tensors(opt, params.items()).items()})
        tensors.update({f"rng/{i}": g.get_state() for i, g in enumerate(rngs)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(self.path.with_suffix(".safetensors"))
        self.path.with_suffix(".json.tmp").write_text(json.dumps(meta))
        self.path.with_suffix(".json.tmp").replace(self.path.with_suffix(".json"))

    def load(self, params: dict, opt, rngs: list[torch.Generator]) -> dict:
        again = "use a fresh --out or drop --resume"
        try:
            meta = json.loads(self.path.with_suffix(".json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RewardsteerError(f"{self.path}.json: not a readable checkpoint ({' '.join(str(e).split())[:120]}); "
                                   f"{again}") from None
        if not isinstance(meta, dict) or not {"step", "nfe", "backward", "reward_calls", "seconds", "evals"} <= set(meta):
            raise RewardsteerError(f"{self.path}.json is not a rewardsteer training checkpoint; {again}")
        t = load_safetensors(self.path.with_suffix(".safetensors"))
        missing = [k for k in (*(f"param/{n}" for n in params), *(f"rng/{i}" for i in range(len(rngs)))) if k not in t]
        if missing:
            raise RewardsteerError(f"{self.path}: the checkpoint is for another model (no '{missing[0]}'); {again}")
        try:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(t[f"param/{n}"])
            restore_optimizer(opt, params.items(), {k: v.to(next(iter(params.values())).device) for k, v in t.items()})
            for i, g in enumerate(rngs):  # the training stream, then the reward's own (e.g. EOT transformations)
                g.set_state(t[f"rng/{i}"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise RewardsteerError(f"{self.path}: the checkpoint does not fit this run ({' '.join(str(e).split())[:120]}); "
                                   f"{again}") from None
        return meta


def draw_conditions(conditions: Sequence[Any], batch: int, rng: torch.Generator) -> torch.Tensor:
    """(B,) indices into `conditions`, uniform (all zeros when there is one)."""
    if len(conditions) == 1:
        return torch.zeros(batch, dtype=torch.long)
    return torch.randint(len(conditions), (batch,), generator=rng)


def reward_cond(conditions: Sequence[Any], idx: torch.Tensor, device) -> Any:
    """What the reward is told: the class of each sample (a (B,) tensor), or the single shared condition."""
    if len(conditions) == 1:
        return conditions[0]
    return torch.tensor([conditions[int(i)] for i in idx], device=device)


@torch.no_grad()
def evaluate(approach, reward: Reward, watch: Mapping[str, Reward], z: torch.Tensor, idx: torch.Tensor,
             conditions: Sequence[Any]) -> dict:
    """Means over a fixed evaluation set: the trained reward, the penalty and every watched reward (a judge's
    accuracy on the target as NAME/acc, and the fraction all judges agree on, as in every method's trace)."""
    x, penalty = approach.sample(z, idx.to(z.device))
    cond = reward_cond(conditions, idx, z.device)
    row = {"reward": float(reward(x, cond).float().mean()), "penalty": float(penalty.float().mean())}
    held = score_heldout(watch, x, cond, Meter())  # judges also give NAME/acc and judges_agree
    return {**row, **{k: float(v.mean()) for k, v in held.items()}}


def train(approach, reward: Reward, *, conditions: Sequence[Any] = (None,), config: TrainConfig | None = None,
          out: str | Path | None = None, resume: bool = False, watch: Mapping[str, Reward] | None = None,
          log: Callable[..., None] | None = None, progress: bool = True) -> TrainReport:
    """Train an amortized approach by reward backpropagation (DRaFT / AlignProp-style; the module docstring).

    `conditions`: the targets a sample can be trained for (e.g. classes 0..9; the map's condition index i stands
    for conditions[i]); (None,) for a single one. `watch`: rewards evaluated every `eval_every` steps on a fixed
    noise set (held-out judges, a gold reward), never optimized. Ctrl-C / SIGTERM save the checkpoint, then
    re-raise; with `resume=True` a run continues from OUT/checkpoint bit-for-bit.
    """
    cfg = config or TrainConfig()
    big = torch.finfo(torch.float32).max  # the weights are float32: a larger lr overflows in the optimizer
    if cfg.steps < 1 or cfg.batch < 1 or not 0 < cfg.lr < big or not 0 <= cfg.reg < math.inf or \
            not 0 < cfg.grad_clip < math.inf:
        raise RewardsteerError(f"training needs steps >= 1, batch >= 1, 0 < lr < {big:.2g} and finite reg >= 0, "
                               f"grad_clip > 0; got {asdict(cfg)}")
    if not reward.differentiable:
        raise RewardsteerError(f"reward '{reward.name}' is not differentiable: amortized training backpropagates it")
    watch = dict(watch or {})
    log = log or Logger(None)
    params = trainable(approach.module)
    if not params:
        raise RewardsteerError("nothing to train: the approach has no trainable parameters")
    device = next(iter(params.values())).device
    groups = getattr(approach.module, "optimizer_groups", None)
    opt = torch.optim.Adam(groups(cfg.lr) if groups is not None else params.values(), lr=cfg.lr)
    rng = make_rng(cfg.seed)
    rngs = [rng, *reward_generators(reward), *(g for w in watch.values() for g in reward_generators(w))]
    shape = tuple(approach.module.noise_shape if hasattr(approach.module, "noise_shape") else approach.generator.noise_shape)
    eval_rng = make_rng(cfg.seed + 10_000)
    z_eval = torch.randn((cfg.eval_n, *shape), generator=eval_rng).to(device)
    idx_eval = draw_conditions(conditions, cfg.eval_n, eval_rng)
    state = _State(None if out is None else Path(out))
    meta = {"step": 0, "nfe": 0, "backward": 0, "reward_calls": 0, "seconds": 0.0, "skipped": 0, "evals": []}
    if resume and state.exists():
        meta = state.load(params, opt, rngs)
        log(resumed_at=meta["step"])
    start, last_save = time.time() - meta["seconds"], time.time()
    if cfg.eval_every and not meta["evals"]:
        meta["evals"].append({"step": 0, **evaluate(approach, reward, watch, z_eval, idx_eval, conditions)})
        log(**meta["evals"][-1])

    def snapshot():
        meta["seconds"] = round(time.time() - start, 2)
        state.save(params, opt, rngs, meta)

    bar = tqdm(total=cfg.steps, initial=meta["step"], disable=not progress, desc=f"train {approach.kind}", leave=False)
    try:
        with deferred_signals() as safe_point:
            while meta["step"] < cfg.steps:
                safe_point(before=snapshot)  # Ctrl-C / SIGTERM: save between steps, then stop
                _step(approach, reward, conditions, cfg, params, opt, rng, shape, device, meta, bar)
                if cfg.eval_every and meta["step"] % cfg.eval_every == 0:
                    meta["evals"].append({"step": meta["step"], **evaluate(approach, reward, watch, z_eval, idx_eval,
                                                                           conditions)})
                    log(**meta["evals"][-1])
                if time.time() - last_save >= cfg.checkpoint_every_s:
                    snapshot()
                    last_save = time.time()
    except KeyboardInterrupt:
        log(stopped="interrupted", step=meta["step"], checkpoint=str(state.path))
        raise
    finally:
        bar.close()
    snapshot()
    return TrainReport(meta["step"], meta["nfe"], meta["backward"], meta["reward_calls"], meta["seconds"], "completed",
                       meta["evals"])


def _step(approach, reward, conditions, cfg: TrainConfig, params: dict, opt, rng, shape, device, meta: dict, bar) -> None:
    """One optimizer step on a fresh batch, with its cost added to `meta`."""
    z = torch.randn((cfg.batch, *shape), generator=rng).to(device)
    idx = draw_conditions(conditions, cfg.batch, rng)
    x, penalty = approach.sample(z, idx.to(device))
    r = reward(x, reward_cond(conditions, idx, device)).float()
    loss = -(r - cfg.reg * penalty.float()).mean()
    opt.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        opt.step()
        if not all(bool(torch.isfinite(p).all()) for p in params.values()):  # never trained on, never saved
            raise RewardsteerError(f"training diverged at step {meta['step'] + 1}: the weights are no longer finite "
                                   f"(lr {cfg.lr:g}); lower --lr. Nothing was saved from this step on")
    else:
        meta["skipped"] += 1  # a non-finite reward never reaches the weights
    meta["nfe"] += approach.nfe_per_step(cfg.batch)
    meta["backward"] += cfg.batch
    meta["reward_calls"] += cfg.batch
    meta["step"] += 1
    bar.update(1)
    bar.set_postfix(reward=f"{float(r.detach().mean()):.3f}")
