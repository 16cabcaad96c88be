"""Trained amortizers on disk: weights in safetensors beside a card (`card.json`) that says what they are, which
base model they belong to and what their training cost; loading checks all of it and gives back a generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..core import OneStepGenerator
from ..errors import RewardsteerError
from ..safety import load_safetensors
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
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise RewardsteerError(f"the trained {kind} has non-finite weights ({', '.join(bad[:3])}): training diverged; "
                               f"nothing was saved to {out}. Lower --lr")
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
        raise RewardsteerError(f"{card_path}: not a readable card ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(card, dict):
        raise RewardsteerError(f"{card_path}: a card is a JSON object; this one is a {type(card).__name__}")
    if card.get("kind") not in WEIGHTS:
        raise RewardsteerError(f"{card_path}: unknown kind {card.get('kind')!r}; expected one of {sorted(WEIGHTS)}")
    if not (Path(path) / WEIGHTS[card["kind"]]).is_file():
        raise RewardsteerError(f"{path}: the card is here but {WEIGHTS[card['kind']]} is missing")
    need = "lora" if card["kind"] == "lora" else "architecture"
    if not isinstance(card.get(need), dict):
        raise RewardsteerError(f"{card_path}: the card has no '{need}' object; it was not written by rewardsteer")
    return card


def check_amortized(path: str | Path) -> dict:
    """Everything about a saved amortizer that needs no base model: its card, its safetensors weights (pickles and
    corrupt files refused), and that the weights fit the card's architecture. Returns the card."""
    card = read_card(path)
    tensors = load_safetensors(Path(path) / WEIGHTS[card["kind"]])
    if card["kind"] == "lora":
        lora = card["lora"]
        if not isinstance(lora.get("rank"), int) or not isinstance(lora.get("targets"), list) or \
                not all("lora_" in k for k in tensors):
            raise RewardsteerError(f"{path}: the card's 'lora' entry or the adapter's tensors are not an adapter "
                                   "written by `rewardsteer finetune`")
        return card
    load_into(noise_map(path, card), tensors, path, card["kind"])
    return card


def load_into(net: torch.nn.Module, tensors: dict, path, kind: str) -> torch.nn.Module:
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        raise RewardsteerError(f"{path}: {WEIGHTS[kind]} does not match its card: {' '.join(str(e).split())[:200]}") \
            from None
    return net


def noise_map(path, card: dict) -> torch.nn.Module:
    """The untrained noise map the card describes; one line when its architecture does not build."""
    config = card["architecture"]
    try:
        return NOISE_MAPS[card["kind"]](**{k: (tuple(v) if k == "noise_shape" else v) for k, v in config.items()})
    except (TypeError, ValueError, RuntimeError) as e:
        raise RewardsteerError(f"{path}: the card's architecture does not build a {card['kind']}: "
                               f"{' '.join(str(e).split())[:200]}") from None


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
    tensors = load_safetensors(Path(path) / WEIGHTS[kind])
    if kind == "lora":
        check_amortized(path)
        lora = card["lora"]
        condition_for(card, target)
        try:
            add_lora(base, lora["rank"], lora.get("alpha"), lora["targets"])
        except (ValueError, TypeError, KeyError) as e:
            raise RewardsteerError(f"{path}: the card's LoRA layers do not fit this generator: "
                                   f"{' '.join(str(e).split())[:200]}") from None
        load_adapter_state(base, tensors)
        return base
    shape = tuple(card["architecture"].get("noise_shape") or ())
    if shape != tuple(base.noise_shape):
        raise RewardsteerError(f"{path}: this {kind} is for noise of shape {shape}, the generator draws "
                               f"{tuple(base.noise_shape)}")
    net = load_into(noise_map(path, card), tensors, path, kind)
    return NoisedGenerator(base, net.eval().requires_grad_(False), condition_for(card, target))


def describe(path: Path) -> str:
    """One line about a saved amortizer, for `rewardsteer run --amortized`."""
    card = read_card(path)
    cost = card.get("training", {}).get("cost", {})
    return (f"{card['kind']} from {path} (base {card['base']['name']}, targets {card.get('conditions')}, trained "
            f"{cost.get('steps_done', '?')} steps, {json.dumps(cost.get('nfe'))} NFE)")
