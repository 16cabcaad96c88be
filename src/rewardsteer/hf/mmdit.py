"""FLUX.1 and Stable Diffusion 3 / 3.5 (MM-DiT transformers on the rectified-flow path) as rewardsteer samplers.

Both are flow-matching models: x_t = (1 − σ)·x̂ + σ·ε, the transformer predicts v = ε − x̂ (Esser et al. 2024,
"Scaling Rectified Flow Transformers", SD3; Black Forest Labs 2024, FLUX.1). The path arithmetic, the
stochastic DDIM-η conversion of their ODE (the path's marginals for an exact x0-prediction, η = 0 is their
Euler sampler; tests/test_flow_sde.py) and the VAE decode
are `LatentSampler`'s; this module only says how each transformer is called, matching diffusers 0.42's
`FluxPipeline` and `StableDiffusion3Pipeline.__call__`:

- FLUX: latents are (C, H/8, W/8) here (the noise ReNO optimizes) and packed into 2×2 patches, (HW/256, 4C)
  tokens, only for the transformer call; the timestep is σ (t/1000); FLUX.1-dev's guidance is an embedding
  input (`guidance_scale`), real CFG only with a negative prompt and `true_cfg_scale` > 1; the schedule is
  sigmas = linspace(1, 1/N, N), shifted by μ(image tokens) when the scheduler uses dynamic shifting (dev).
- SD3: latents are (C, H/8, W/8) (the transformer patchifies itself); the timestep is t in [0, 1000]; CFG
  batches [negative, prompt] when guidance_scale > 1 (negative "" by default); μ only with dynamic shifting.

Prompt encodings (CLIP + T5) are computed once when the sampler is built.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import RewardsteerError
from .checks import warn_pipeline_truncation
from .loading import quiet_loading
from .sampler import LatentSampler, enable_checkpointing, vae_scale_factor

DEFAULT_T5_LENGTH = {"flux": 512, "sd3": 256}  # the pipelines' max_sequence_length defaults
DEFAULT_SAMPLE_SIZE = 128  # latent side both pipelines default to (1024×1024 images)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """FLUX's 2×2 patch packing: (B, C, h, w) -> (B, h/2·w/2, 4C), as diffusers' FluxPipeline._pack_latents."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack_latents`: (B, h/2·w/2, 4C) -> (B, C, h, w)."""
    b, _, c4 = x.shape
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def image_ids(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(h/2·w/2, 3) RoPE positions of FLUX's packed image tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


class FluxSampler(LatentSampler):
    """FLUX.1 (schnell or dev) as a `Sampler` over unpacked latents (C, H/8, W/8); see the module notes."""

    def __init__(self, transformer, vae, scheduler, conds: dict[str, torch.Tensor], text_ids: torch.Tensor,
                 steps: int, guidance_scale: float, true_cfg_scale: float, eta: float, height: int, width: int,
                 decode_batch: int | None = None, schedule: dict | None = None):
        factor = vae_scale_factor(vae)
        h, w = height // factor, width // factor
        super().__init__(vae, scheduler, conds, steps, true_cfg_scale, eta, (transformer.config.in_channels // 4, h, w),
                         decode_batch, schedule)
        self.transformer = transformer.eval().requires_grad_(False)
        self.guidance_scale = guidance_scale  # embedded guidance (FLUX.1-dev); schnell has no guidance embedding
        self.register_buffer("txt_ids", text_ids.detach(), persistent=False)
        self.register_buffer("img_ids", image_ids(h, w, text_ids.device, text_ids.dtype), persistent=False)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    def denoise(self, x, i, conds):
        b, _, h, w = x.shape
        t = torch.full((b,), self.timesteps[i], device=x.device, dtype=torch.float32).to(x.dtype) / 1000  # as diffusers
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance_scale, device=x.device, dtype=torch.float32)
        out = self.transformer(hidden_states=pack_latents(x), timestep=t, guidance=guidance,
                               pooled_projections=conds["pooled_projections"],
                               encoder_hidden_states=conds["encoder_hidden_states"], txt_ids=self.txt_ids,
                               img_ids=self.img_ids, return_dict=False)[0]
        return unpack_latents(out, h, w)


class SD3Sampler(LatentSampler):
    """Stable Diffusion 3 / 3.5 as a `Sampler` over latents (C, H/8, W/8); see the module notes."""

    def __init__(self, transformer, vae, scheduler, conds: dict[str, torch.Tensor], steps: int, guidance_scale: float,
                 eta: float, height: int, width: int, decode_batch: int | None = None, schedule: dict | None = None):
        factor = vae_scale_factor(vae)
        super().__init__(vae, scheduler, conds, steps, guidance_scale, eta,
                         (transformer.config.in_channels, height // factor, width // factor), decode_batch, schedule)
        self.transformer, self.guidance_scale = transformer.eval().requires_grad_(False), guidance_scale

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    def denoise(self, x, i, conds):
        t = torch.full((x.shape[0],), self.timesteps[i], device=x.device, dtype=torch.float32)
        return self.transformer(hidden_states=x, timestep=t, encoder_hidden_states=conds["encoder_hidden_states"],
                                pooled_projections=conds["pooled_projections"], return_dict=False)[0]


def _shift_mu(scheduler, tokens: int, fallback_max_shift: float) -> float | None:
    """μ of the resolution-dependent timestep shift (SD3 paper §5.3.2), as each pipeline computes it from the
    number of image tokens; None when the scheduler does not shift dynamically."""
    if not scheduler.config.get("use_dynamic_shifting", False):
        return None
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    cfg = scheduler.config
    return calculate_shift(tokens, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                           cfg.get("base_shift", 0.5), cfg.get("max_shift", fallback_max_shift))


def _stack(negative: torch.Tensor | None, positive: torch.Tensor) -> torch.Tensor:
    return positive if negative is None else torch.cat([negative, positive])


def build_mmdit(pipe, family: str, prompt: str, *, negative_prompt, guidance_scale, true_cfg_scale, steps, eta, height,
                width, decode_batch, checkpoint, max_sequence_length) -> LatentSampler:
    """A FluxSampler or SD3Sampler from a loaded pipeline (placement already checked by the caller)."""
    if type(pipe.scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
        raise RewardsteerError(f"{type(pipe).__name__} needs its FlowMatchEulerDiscreteScheduler; got "
                               f"{type(pipe.scheduler).__name__}")
    transformer, factor = pipe.transformer, vae_scale_factor(pipe.vae)
    # one latent at a time through the VAE unless told otherwise: at 1024² its decoder is a ReNO step's memory peak
    decode_batch = 1 if decode_batch is None else decode_batch
    height = height or DEFAULT_SAMPLE_SIZE * factor
    width = width or DEFAULT_SAMPLE_SIZE * factor
    multiple = factor * (2 if family == "flux" else transformer.config.patch_size)  # FLUX packs 2×2 latents
    if height % multiple or width % multiple:
        raise RewardsteerError(f"height and width must be multiples of {multiple} for {type(pipe).__name__}; "
                               f"got {height}x{width}")
    length = max_sequence_length or DEFAULT_T5_LENGTH[family]
    warn_pipeline_truncation(pipe, prompt, length)
    device = transformer.device
    h, w = height // factor, width // factor
    if checkpoint:
        enable_checkpointing(transformer, pipe.vae)
    with torch.no_grad(), quiet_loading():  # encoded once; diffusers' truncation notice is replaced by ours
        if family == "flux":
            cfg = true_cfg_scale > 1 and negative_prompt is not None
            pe, pooled, text_ids = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                                      num_images_per_prompt=1, max_sequence_length=length)
            ne = npooled = None
            if cfg:
                ne, npooled, _ = pipe.encode_prompt(prompt=negative_prompt, prompt_2=None, device=device,
                                                    num_images_per_prompt=1, max_sequence_length=length)
        else:
            cfg = guidance_scale > 1
            pe, ne, pooled, npooled = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device=device,
                                                         num_images_per_prompt=1, do_classifier_free_guidance=cfg,
                                                         negative_prompt=negative_prompt, max_sequence_length=length)
    conds = {"encoder_hidden_states": _stack(ne if cfg else None, pe),
             "pooled_projections": _stack(npooled if cfg else None, pooled)}
    if family == "flux":
        sigmas = None if pipe.scheduler.config.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        schedule = {"sigmas": sigmas, "mu": _shift_mu(pipe.scheduler, (h // 2) * (w // 2), 1.15)}
        return FluxSampler(transformer, pipe.vae, pipe.scheduler, conds, text_ids, steps, guidance_scale,
                           true_cfg_scale if cfg else 1.0, eta, height, width, decode_batch, schedule)
    patch = transformer.config.patch_size
    schedule = {"mu": _shift_mu(pipe.scheduler, (h // patch) * (w // patch), 1.16)}
    return SD3Sampler(transformer, pipe.vae, pipe.scheduler, conds, steps, guidance_scale, eta, height, width,
                      decode_batch, schedule)
