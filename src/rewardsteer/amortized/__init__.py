"""Amortized alignment: pay for steering once in training, then one generator call per steered sample.

- `train_noise(..., kind="noise-net")`: a golden-noise network z -> z* (Zhou et al. 2024).
- `train_noise(..., kind="learned-noise")`: a learned initial distribution per condition (FIND, Chen et al. 2024).
- `finetune(...)`: LoRA reward fine-tuning of the generator (DRaFT / AlignProp-style, with a KL to the base).
Each returns a `Trained` whose `.generator(target)` is a one-step generator every method accepts, and whose
`.save(out)` writes safetensors + card.json for `load_amortized(out, base_generator, target)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import OneStepGenerator, Reward
from ..errors import RewardsteerError
from ..wrap import one_step_generator
from .artifacts import base_fingerprint, load_amortized, read_card, save_amortized
from .lora import add_lora, base_model, output_kl
from .noise import LearnedNoise, NoisedGenerator, NoiseNetwork
from .trainer import LoRAApproach, NoiseMapApproach, TrainConfig, TrainReport, train

__all__ = ["LearnedNoise", "NoiseNetwork", "NoisedGenerator", "TrainConfig", "TrainReport", "Trained", "add_lora",
           "base_model", "finetune", "load_amortized", "output_kl", "read_card", "train_noise"]


@dataclass
class Trained:
    """A trained amortizer: `generator(target)` gives the steered one-step generator."""

    kind: str
    module: torch.nn.Module  # the noise map, or the LoRA-adapted generator itself
    base: OneStepGenerator
    conditions: list
    report: TrainReport
    card: dict

    def generator(self, target: Any = None) -> OneStepGenerator:
        if self.kind == "lora":
            return self.base
        cond = None if len(self.conditions) == 1 else self.conditions.index(target) if target in self.conditions else -1
        if cond == -1:
            raise RewardsteerError(f"this noise map was trained for targets {self.conditions}; got {target!r}")
        return NoisedGenerator(self.base, self.module, cond)

    def save(self, out: str | Path) -> Path:
        return save_amortized(out, self.kind, self.module, self.card)


def _card(kind: str, base: OneStepGenerator, base_name: str | None, reward: Reward, conditions, cfg: TrainConfig,
          report: TrainReport, extra: dict) -> dict:
    return {"base": {"name": base_name or type(base).__name__, "fingerprint": base_fingerprint(base),
                     "noise_shape": list(base.noise_shape)},
            "reward": reward.name, "conditions": list(conditions), **extra,
            "training": {"config": asdict(cfg), "cost": report.cost()}, "evals": report.evals}


def train_noise(generator, reward: Reward, *, kind: str = "noise-net", conditions: Sequence[Any] = (None,),
                generator_cond: Any = None, config: TrainConfig | None = None, out: str | Path | None = None,
                resume: bool = False, watch: Mapping[str, Reward] | None = None, base_name: str | None = None,
                width: int = 32, blocks: int = 3, log=None, progress: bool = True) -> Trained:
    """Train a noise map in front of a frozen one-step generator by backpropagating the reward through it.

    kind="noise-net": z* = z + f(z, c) with ReNO's chi prior on z* (golden noise, Zhou et al. 2024);
    kind="learned-noise": z* = μ_c + σ_c z with KL to N(0, I) (FIND, Chen et al. 2024). `conditions` are the
    targets the reward is told per sample (classes 0..9 for the bundled task; (None,) for one prompt), and
    `generator_cond` what the generator is asked for (None: any digit). With `out`, checkpoints go there and
    the result is saved there with its card.
    """
    base = one_step_generator(generator, "train_noise")
    cfg = config or TrainConfig()
    shape, n = tuple(base.noise_shape), len(conditions)
    torch.manual_seed(cfg.seed)  # the map's initial weights; every later draw uses the run's own generator
    if kind == "noise-net":
        noise_map = NoiseNetwork(shape, n, width, blocks)
    elif kind == "learned-noise":
        noise_map = LearnedNoise(shape, n)
    else:
        raise RewardsteerError(f"kind must be 'noise-net' or 'learned-noise', got {kind!r}")
    noise_map.to(next(iter(base.parameters()), torch.zeros(())).device)
    approach = NoiseMapApproach(base, noise_map, kind, generator_cond)
    report = train(approach, reward, conditions=conditions, config=cfg, out=out, resume=resume, watch=watch, log=log,
                   progress=progress)
    card = _card(kind, base, base_name, reward, conditions, cfg, report,
                 {"architecture": noise_map.config, "generator_cond": generator_cond})
    trained = Trained(kind, noise_map.eval(), base, list(conditions), report, card)
    if out is not None:
        trained.save(out)
    return trained


def finetune(generator, reward: Reward, *, rank: int = 4, alpha: float | None = None, targets: list[str] | None = None,
             target: Any = None, generator_cond: Any = None, config: TrainConfig | None = None,
             out: str | Path | None = None, resume: bool = False, watch: Mapping[str, Reward] | None = None,
             base_name: str | None = None, log=None, progress: bool = True) -> Trained:
    """LoRA reward fine-tuning of a one-step generator (adapters from `peft`, Hu et al. 2021) by direct reward
    backpropagation (DRaFT, Clark et al. 2023; AlignProp, Prabhudesai et al. 2023) with β·KL to the frozen base
    (`lora` module docstring: the smoothed-joint KL). The generator is adapted in place; `target` is what the
    reward scores (e.g. class 7), `generator_cond` what the generator is asked for."""
    base = one_step_generator(generator, "finetune")
    cfg = config or TrainConfig()
    fp = base_fingerprint(base)  # of the base weights, before adapters exist
    torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn from the global RNG by peft
    add_lora(base, rank, alpha, targets)
    approach = LoRAApproach(base, generator_cond)
    report = train(approach, reward, conditions=(target,), config=cfg, out=out, resume=resume, watch=watch, log=log,
                   progress=progress)
    lora = {"rank": rank, "alpha": alpha or rank, "targets": targets or _targets(base)}
    card = _card("lora", base, base_name, reward, (target,), cfg, report, {"lora": lora, "generator_cond": generator_cond})
    card["base"]["fingerprint"] = fp
    trained = Trained("lora", base, base, [target], report, card)
    if out is not None:
        trained.save(out)
    return trained


def _targets(generator) -> list[str]:
    from .lora import DEFAULT_TARGETS, adapted_network

    return DEFAULT_TARGETS[type(adapted_network(generator)).__name__]
