"""Trained amortizers on disk: weights in safetensors beside a card (`card.json`) that says what they are, which
base model they belong to and what their training cost; loading checks all of it and gives back a generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..core import OneStepGenerator
from ..errors import RewardsteerError
from .lora import adapted_network, adapter_state, add_lora, fingerprint, load_adapter_state
from .noise import LearnedNoise, NoisedGenerator, NoiseNetwork

WEIGHTS = {"noise-net": "noise-net.safetensors", "learned-noise": "learned-noise.safetensors",
           "lora": "adapter.safetensors"}
NOISE_MAPS = {"noise-net": NoiseNetwork, "learned-noise": LearnedNoise}


def base_fingerprint(generator: OneStepGenerator) -> str:
    """The fingerprint of the network a noise map or an adapter was trained against."""
    return fingerprint(adapted_network(generator))


def save_amortized(out: str | Path, kind: str, module: torch.nn.Module, card: dict[str, Any]) -> Path:
    """Write the weights (`WEIGHTS[kind]`) and card.json into folder `out`; returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "lora":
        tensors = adapter_state(module)
    else:
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS[kind]), metadata={"kind": kind})
    (out / "card.json").write_text(json.dumps({"kind": kind, **card}, indent=2) + "\n")
    return out


def read_card(path: str | Path) -> dict:
    """The card of a saved amortizer folder; a missing or unreadable card is one line."""
    card_path = Path(path) / "card.json"
    if not card_path.is_file():
        raise RewardsteerError(f"{path}: no card.json here; point at a folder written by `rewardsteer train-noise` or "
                               "`rewardsteer finetune`")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        raise RewardsteerError(f"{card_path}: not a readable card ({e})") from None
    if card.get("kind") not in WEIGHTS:
        raise RewardsteerError(f"{card_path}: unknown kind {card.get('kind')!r}; expected one of {sorted(WEIGHTS)}")
    if not (Path(path) / WEIGHTS[card["kind"]]).is_file():
        raise RewardsteerError(f"{path}: the card is here but {WEIGHTS[card['kind']]} is missing")
    return card


def condition_for(card: dict, target: Any) -> int | None:
    """The map's condition index for a target (e.g. class 7), from the card's list of trained targets."""
    conditions = card.get("conditions", [None])
    if len(conditions) == 1:
        if target is not None and conditions[0] is not None and target != conditions[0]:
            raise RewardsteerError(f"this {card['kind']} was trained for target {conditions[0]}, not {target}")
        return None
    if target not in conditions:
        raise RewardsteerError(f"this {card['kind']} was trained for targets {conditions}; pass one of them, got {target!r}")
    return conditions.index(target)


def load_amortized(path: str | Path, base: OneStepGenerator, target: Any = None) -> OneStepGenerator:
    """A saved noise map or LoRA adapter applied to `base` (which an adapter modifies in place), as a generator.
    Refuses, in one line each: no card, an adapter or map for another base model, another noise shape."""
    card = read_card(path)
    kind = card["kind"]
    expected = card.get("base", {}).get("fingerprint")
    if expected and expected != base_fingerprint(base):
        raise RewardsteerError(f"{path}: this {kind} belongs to base model '{card['base'].get('name', '?')}' "
                               f"(fingerprint {expected}), not to the generator given ({base_fingerprint(base)})")
    tensors = load_file(str(Path(path) / WEIGHTS[kind]))
    if kind == "lora":
        lora = card["lora"]
        add_lora(base, lora["rank"], lora["alpha"], lora["targets"])
        load_adapter_state(base, tensors)
        condition_for(card, target)
        return base
    config = card["architecture"]
    if tuple(config["noise_shape"]) != tuple(base.noise_shape):
        raise RewardsteerError(f"{path}: this {kind} is for noise of shape {tuple(config['noise_shape'])}, the "
                               f"generator draws {tuple(base.noise_shape)}")
    noise_map = NOISE_MAPS[kind](**{k: (tuple(v) if k == "noise_shape" else v) for k, v in config.items()})
    noise_map.load_state_dict(tensors)
    return NoisedGenerator(base, noise_map.eval().requires_grad_(False), condition_for(card, target))


def describe(path: Path) -> str:
    """One line about a saved amortizer, for `rewardsteer run --amortized`."""
    card = read_card(path)
    cost = card.get("training", {}).get("cost", {})
    return (f"{card['kind']} from {path} (base {card['base']['name']}, targets {card.get('conditions')}, trained "
            f"{cost.get('steps_done', '?')} steps, {json.dumps(cost.get('nfe'))} NFE)")
