"""The bundled models: names, cards, and safe loading (safetensors only; pickles are refused)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ..errors import UnknownNameError, WeightsError
from ..safety import load_safetensors
from .emergent import TimeClassifier
from .judge_nets import RealismIndex, RFFClassifier, ViTClassifier
from .mol_nets import FingerprintMLP, MaskedDiffusionTransformer
from .nets import AttributeRegressor, Classifier, MLPClassifier, UNet

WEIGHTS_DIR = Path(__file__).parent.parent / "weights"  # src/rewardsteer/weights
BUNDLED = ("mnist-flow", "mnist-onestep", "mnist-judge", "mnist-judge-vit", "mnist-judge-rff",
           *(f"mnist-proxy-{k}" for k in range(5)), *(f"mnist-proxy-mlp-{k}" for k in range(3)), "mnist-realism", "moses-mdlm",
           *(f"moses-proxy-qed-{i}" for i in range(3)), "mnist-attr-proxy", "mnist-flow-tclassifier")
_ARCHITECTURES = {"UNet": UNet, "Classifier": Classifier, "MLPClassifier": MLPClassifier,
                  "ViTClassifier": ViTClassifier, "RFFClassifier": RFFClassifier, "RealismIndex": RealismIndex,
                  "MaskedDiffusionTransformer": MaskedDiffusionTransformer, "FingerprintMLP": FingerprintMLP,
                  "AttributeRegressor": AttributeRegressor, "TimeClassifier": TimeClassifier}


def model_card(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict:
    if name not in BUNDLED and weights_dir == WEIGHTS_DIR:
        raise UnknownNameError("model", name, BUNDLED)
    path = weights_dir / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"the card {path} is missing: reinstall rewardsteer or retrain with rewardsteer.train")
    return json.loads(path.read_text())


def list_models(weights_dir: Path = WEIGHTS_DIR) -> list[dict]:
    return [model_card(n, weights_dir) for n in BUNDLED if (weights_dir / f"{n}.json").is_file()]


_LOADED: dict | None = None  # name -> network, while keep_loaded() is on (batch workers)


def keep_loaded(on: bool = True) -> None:
    """Keep every network `load_network` reads in memory for the life of the process, so a batch worker running
    many jobs reads each model's file once. Each call still returns its own copy (a run may move its copy to
    another device or dtype in place)."""
    global _LOADED
    _LOADED = {} if on else None


def load_network(name: str, weights_dir: Path = WEIGHTS_DIR) -> torch.nn.Module:
    """The bundled network `name` in eval mode, gradients off for its parameters."""
    if _LOADED is not None:
        key = f"{weights_dir}/{name}"
        if key not in _LOADED:
            _LOADED[key] = _load_network(name, weights_dir)
        return copy.deepcopy(_LOADED[key])
    return _load_network(name, weights_dir)


def _load_network(name: str, weights_dir: Path) -> torch.nn.Module:
    card = model_card(name, weights_dir)
    arch = card["architecture"]
    net = _ARCHITECTURES[arch["class"]](**arch["config"])
    state = load_safetensors(weights_dir / f"{name}.safetensors")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise WeightsError(f"{weights_dir / (name + '.safetensors')} does not match its card: {e}") from None
    return net.eval().requires_grad_(False)
