"""Building a steerable sampler from a diffusers pipeline (object, local folder or hub name): the family's
denoiser (UNet: `sampler.DiffusersSampler`; SD3 / FLUX transformers: `mmdit`), its prompt encoded once, and the
family's default guidance. `diffusers_sampler` gives the stochastic sampler for particle methods, `from_diffusers`
the one-step generator for best-of-N, search and ReNO."""

from __future__ import annotations

import os

import torch

from ..errors import RewardsteerError
from .checks import check_device_dtype, check_placement, warn_pipeline_truncation
from .loading import load_pipeline, parse_dtype, quiet_loading
from .mmdit import build_mmdit
from .sampler import DiffusersSampler, LatentSampler, UnrolledDiffusers, enable_checkpointing, vae_scale_factor

SUPPORTED = ("StableDiffusionPipeline", "StableDiffusionXLPipeline (SD 1.x / 2.x / XL and their Turbo versions)",
             "FluxPipeline (FLUX.1 schnell / dev)", "StableDiffusion3Pipeline (SD3 / SD3.5, incl. Large Turbo)")
# guidance_scale=None means: (one-step generator, sampler) default per family. FLUX's is the embedded guidance of
# FLUX.1-dev (diffusers' default; schnell has no guidance embedding and ignores it).
DEFAULT_GUIDANCE = {"unet": (0.0, 7.5), "sd3": (0.0, 7.0), "flux": (3.5, 3.5)}


def pipeline_family(pipe) -> str:
    """'unet', 'flux' or 'sd3'; anything else is refused in one line naming what is supported."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if isinstance(pipe, FluxPipeline):
        return "flux"
    if isinstance(pipe, StableDiffusion3Pipeline):
        return "sd3"
    unet = getattr(pipe, "unet", None)
    if unet is not None and hasattr(pipe, "encode_prompt") and unet.config.addition_embed_type in (None, "text_time"):
        return "unet"
    raise RewardsteerError(f"{type(pipe).__name__} is not supported; rewardsteer steers text-to-image pipelines: "
                           f"{'; '.join(SUPPORTED)}")


def _build(pipe_or_path, prompt, *, one_step: bool, negative_prompt, guidance_scale, steps, eta, height, width, dtype,
           device, decode_batch, checkpoint, true_cfg_scale, max_sequence_length) -> LatentSampler:
    dtype = parse_dtype(dtype)
    check_device_dtype(device, dtype)  # before any weights load or move
    pipe = load_pipeline(pipe_or_path, dtype) if isinstance(pipe_or_path, str | os.PathLike) else pipe_or_path
    family = pipeline_family(pipe)
    if device is not None or dtype is not None:
        pipe = pipe.to(device=device, dtype=dtype)
    check_placement(pipe)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):  # no dropout in the prompt encodings
        if isinstance(getattr(pipe, name, None), torch.nn.Module):
            getattr(pipe, name).eval()
    if guidance_scale is None:
        guidance_scale = DEFAULT_GUIDANCE[family][0 if one_step else 1]
    if family != "unet":
        return build_mmdit(pipe, family, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                           true_cfg_scale=true_cfg_scale, steps=steps, eta=eta, height=height, width=width,
                           decode_batch=decode_batch, checkpoint=checkpoint, max_sequence_length=max_sequence_length)
    unet = pipe.unet
    factor = vae_scale_factor(pipe.vae)
    height = height or unet.config.sample_size * factor
    width = width or unet.config.sample_size * factor
    cfg = guidance_scale > 1
    warn_pipeline_truncation(pipe, prompt, None)
    with torch.no_grad(), quiet_loading():  # the prompt is fixed for the whole run: encode it once
        enc = pipe.encode_prompt(prompt=prompt, device=unet.device, num_images_per_prompt=1,
                                 do_classifier_free_guidance=cfg, negative_prompt=negative_prompt)
    pe, ne, added = enc[0], enc[1], None
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled embeddings + (original, crop, target) sizes
        ids = pe.new_tensor([[height, width, 0, 0, height, width]])
        added = {"text_embeds": torch.cat([enc[3], enc[2]]) if cfg else enc[2],
                 "time_ids": torch.cat([ids, ids]) if cfg else ids}
    if checkpoint:
        enable_checkpointing(unet, pipe.vae)
    return DiffusersSampler(unet, pipe.vae, pipe.scheduler, pe, ne if cfg else None, steps, guidance_scale, eta,
                            height, width, decode_batch, added)


def diffusers_sampler(pipe_or_path, prompt: str, *, negative_prompt: str | None = None,
                      guidance_scale: float | None = None, steps: int = 50, eta: float = 1.0, height: int | None = None,
                      width: int | None = None, dtype: torch.dtype | str | None = None, device=None,
                      decode_batch: int | None = None, checkpoint: bool = False, true_cfg_scale: float = 1.0,
                      max_sequence_length: int | None = None) -> LatentSampler:
    """A diffusers pipeline (object, local folder or hub name) as a stochastic `Sampler` for particle
    methods (FK steering, DAS, SVDD). `eta` = 1 is DDPM / Euler-ancestral sampling, and for FLUX / SD3 the
    stochastic conversion of their flow ODE (module notes). `guidance_scale` None: 7.5 for UNet pipelines, 7.0
    for SD3, 3.5 for FLUX (its embedded guidance; `true_cfg_scale` > 1 with a negative prompt adds real CFG).
    """
    return _build(pipe_or_path, prompt, one_step=False, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                  steps=steps, eta=eta, height=height, width=width, dtype=dtype, device=device,
                  decode_batch=decode_batch, checkpoint=checkpoint, true_cfg_scale=true_cfg_scale,
                  max_sequence_length=max_sequence_length)


def from_diffusers(pipe_or_path, prompt: str, *, negative_prompt: str | None = None, guidance_scale: float | None = None,
                   steps: int = 1, height: int | None = None, width: int | None = None, dtype: torch.dtype | str | None = None,
                   device=None, decode_batch: int | None = None, checkpoint: bool = False, true_cfg_scale: float = 1.0,
                   max_sequence_length: int | None = None) -> UnrolledDiffusers:
    """A diffusers pipeline as a one-step generator G(z) = decode(deterministic `steps`-step sampler from z),
    differentiable in z, for best-of-N, search and ReNO (Eyring et al. 2024 steer SD-Turbo, SDXL-Turbo and
    FLUX.1-schnell with steps=1).

    `guidance_scale` None: 0 for UNet pipelines and SD3 (distilled models: SD-Turbo, SD3.5 Large Turbo), 3.5
    for FLUX (embedded guidance, used by FLUX.1-dev only). `checkpoint=True` recomputes activations in backward:
    per step (UnrolledSampler) and per block inside the denoiser and VAE decoder (diffusers' checkpointing).
    FLUX's noise z is its unpacked latent (16, H/8, W/8); packing happens inside. Load with dtype=torch.bfloat16
    (or fp16) on a GPU; ReNO keeps its noise and regularizer in fp32.
    """
    sampler = _build(pipe_or_path, prompt, one_step=True, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                     steps=steps, eta=0.0, height=height, width=width, dtype=dtype, device=device,
                     decode_batch=decode_batch, checkpoint=checkpoint, true_cfg_scale=true_cfg_scale,
                     max_sequence_length=max_sequence_length)
    return UnrolledDiffusers(sampler, checkpoint=checkpoint)
