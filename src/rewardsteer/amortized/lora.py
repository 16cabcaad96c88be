"""LoRA adapters on a one-step generator's network, through `peft` (Hu et al. 2021, "LoRA: Low-Rank Adaptation
of Large Language Models"), for reward fine-tuning by direct backpropagation (DRaFT: Clark et al. 2023;
AlignProp: Prabhudesai et al. 2023; on one-step / consistency generators as in RG-LCD, Li et al. 2024).

The adapters are injected in place (`peft.inject_adapter_in_model`), so the generator keeps its class, its
signature and its state-dict layout; with the adapters switched off it is exactly the base model again, which
is what the KL term compares against without a second copy of the weights.

KL to the base model: a one-step generator is deterministic, so its output distribution has no density. We use
the Gaussian-smoothed joint over (z, x), x | z ~ N(G(z), σ²I), whose KL is exactly
    KL_σ(θ ‖ 0) = E_z ‖G_θ(z) − G_0(z)‖² / (2σ²)
and, by the data-processing inequality, bounds the KL between the two smoothed output distributions from above.
σ only rescales it (σ = `KL_PIXEL_SD`); Gao et al.'s fit R(d) = d(α − β log d) keeps its form under d → k·d.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import torch

from ..core import OneStepGenerator
from ..errors import RewardsteerError

KL_PIXEL_SD = 0.1  # σ of the smoothing in the KL above, in the generator's output units ([0, 1] images here)
# Which layers get adapters, by the network's class: the bundled UNet's convolutions and conditioning projections
# (without those it cannot change which digit a noise becomes); diffusers' attention projections (their own choice).
_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
DEFAULT_TARGETS = {"UNet": ["conv1", "conv2", "emb"], "UNet2DConditionModel": _ATTENTION,
                   "FluxTransformer2DModel": _ATTENTION, "SD3Transformer2DModel": _ATTENTION}


def adapted_network(generator: OneStepGenerator) -> torch.nn.Module:
    """The network inside a one-step generator that fine-tuning adapts: `mnist-onestep`'s UNet, an unrolled
    sampler's denoiser, or a diffusers generator's UNet or (FLUX, SD3) transformer."""
    for path in ("model", "sampler.model", "sampler.unet", "sampler.transformer", "unet", "transformer"):
        obj: Any = generator
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.Module):
            return obj
    raise RewardsteerError(f"cannot find the network inside {type(generator).__name__} to fine-tune: it needs a "
                           "`model`, `unet`, `transformer` or `sampler.model` / `.unet` / `.transformer` module")


def fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a network's parameter names, shapes and first values: which base model an adapter or a
    noise map belongs to (cheap even for an SD UNet, and unchanged by moving devices or dtypes)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer", "")  # peft's name for an adapted layer's own weights
        h.update(f"{name}:{tuple(p.shape)}:".encode())
        h.update(p.detach().flatten()[:16].float().cpu().numpy().round(4).tobytes())
    return h.hexdigest()[:16]


def add_lora(generator: OneStepGenerator, rank: int = 4, alpha: float | None = None,
             targets: list[str] | None = None) -> OneStepGenerator:
    """Inject trainable LoRA adapters (`peft`) into the generator's network, in place; every other weight is
    frozen. Returns the same generator, now adapted (B starts at zero, so its outputs are unchanged)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:
        raise RewardsteerError('LoRA fine-tuning needs peft: pip install "rewardsteer[amortized]"') from e
    if rank < 1:
        raise RewardsteerError(f"LoRA rank must be >= 1, got {rank}")
    net = adapted_network(generator)
    targets = targets or DEFAULT_TARGETS.get(type(net).__name__)
    if not targets:
        raise RewardsteerError(f"no default LoRA targets for {type(net).__name__}: pass targets=[layer names]")
    for p in generator.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, init_lora_weights=True)
    inject_adapter_in_model(config, net)
    return generator


def lora_layers(generator: OneStepGenerator) -> list:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in generator.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def base_model(generator: OneStepGenerator):
    """Within the block the adapters are off: the generator is the frozen base model."""
    layers = lora_layers(generator)
    for m in layers:
        m.enable_adapters(False)
    try:
        yield generator
    finally:
        for m in layers:
            m.enable_adapters(True)


def adapter_state(generator: OneStepGenerator) -> dict[str, torch.Tensor]:
    """The adapter weights only (what gets saved), in fp32 on the CPU."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(adapted_network(generator))
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def load_adapter_state(generator: OneStepGenerator, state: dict[str, torch.Tensor]) -> None:
    """Copy saved adapter weights into an adapted generator; a key or shape mismatch is one line."""
    from peft import set_peft_model_state_dict

    own = adapter_state(generator)
    if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
        raise RewardsteerError("these adapter weights do not fit this generator's LoRA layers (another rank, "
                               "targets or base model)")
    set_peft_model_state_dict(adapted_network(generator), state)


def output_kl(tuned: torch.Tensor, base: torch.Tensor, sd: float = KL_PIXEL_SD) -> torch.Tensor:
    """Per sample ‖G_θ(z) − G_0(z)‖² / (2σ²): the smoothed-joint KL of the module docstring, in fp32."""
    return (tuned.float() - base.float()).flatten(1).pow(2).sum(1) / (2 * sd**2)
