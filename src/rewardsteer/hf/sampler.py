"""Diffusers pipelines as rewardsteer generators: a stochastic multi-step `Sampler` for particle methods, and
one-step / few-step generators differentiable in the initial noise for noise optimization.

Notation: every supported scheduler is read as a Gaussian path over the latents, x_t = α_t·x̂ + σ_t·ε
(DDIM, Song et al. 2021, §3), with (α, σ) taken per step from the scheduler's own timesteps:
  - DDPM / DDIM: α = √ᾱ_t, σ = √(1 − ᾱ_t) (variance preserving);
  - Euler / Euler-ancestral (Karras et al. 2022): the scheduler's sigma s is variance exploding,
    x_VE = x / α with α = 1/√(1 + s²), σ = s·α; the UNet's input scale_model_input(x_VE) = x_VE/√(s² + 1) is
    exactly x, so the state here is always the UNet input;
  - FlowMatchEuler (rectified flow, SD3 / FLUX): α = 1 − s, σ = s, the model predicts v = ε − x̂.
Step i maps (α_t, σ_t) -> (α_s, σ_s); the last step lands on clean latents (α = 1, σ = 0, std 0).

Transition: the DDIM posterior with η (Song et al. 2021, eqs. 12 and 16),
    x_s ~ N(α_s·x̂ + √(σ_s² − std²)·ε̂,  std²),   std = η·σ_s·√(1 − (α_t σ_s / (α_s σ_t))²).
Its marginals are those of the path for any η and any (α, σ) (mean α_s x̂, variance σ_s²), so:
η = 0 is DDIM (and Euler in VE coordinates); η = 1 is DDPM's ancestral posterior (Ho et al. 2020), and,
divided by α_s, it is k-diffusion's Euler-ancestral step (σ_up = η·s_s·√(1 − s_s²/s_t²)). For flow matching
this same posterior on the α = 1 − σ path is the stochastic conversion we use for SMC: it keeps the flow's
marginals and, at η = 0, is the flow's deterministic Euler sampler.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from ..core import Sampler, ddim_posterior
from ..errors import RewardsteerError
from ..flow import UnrolledSampler
from .loading import load_pipeline, parse_dtype

SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
              "FlowMatchEulerDiscreteScheduler")
PREDICTIONS = ("epsilon", "v_prediction", "sample", "flow")


def path_coefficients(scheduler, steps: int) -> tuple[list[float], list[float], list[float], str, float]:
    """(model timesteps (N,), α (N+1,), σ (N+1,), prediction type, initial noise scale) for `steps` steps.

    The initial state is diffusers' own: randn × init_noise_sigma in the scheduler's coordinates, here times α_0
    for Euler schedulers (for "trailing" spacing that is σ_0/√(1+σ_0²) ≈ 0.998, not 1, as in SD-Turbo's pipeline).

    The scheduler is deep-copied first, so the pipeline's own scheduler keeps its state (from_config would
    drop settings a pipeline patched in, such as steps_offset).
    """
    name = type(scheduler).__name__
    if name not in SCHEDULERS:
        raise RewardsteerError(f"scheduler {name} is not supported; use one of {', '.join(SCHEDULERS)}, e.g. "
                               "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)")
    sch = copy.deepcopy(scheduler)
    sch.set_timesteps(steps)
    times, init = sch.timesteps.double(), float(getattr(sch, "init_noise_sigma", 1.0))  # flow: pure noise
    if name.startswith("FlowMatch"):
        s = sch.sigmas.double()[: steps + 1]
        alpha, sigma, pred = 1 - s, s, "flow"
    elif name.startswith("Euler"):
        s = sch.sigmas.double()[: steps + 1]
        alpha = (1 + s**2).rsqrt()
        sigma, pred, init = s * alpha, sch.config.prediction_type, init * float(alpha[0])
    else:
        abar = sch.alphas_cumprod.double()[sch.timesteps.long()]
        alpha = torch.cat([abar.sqrt(), abar.new_ones(1)])
        sigma, pred = torch.cat([(1 - abar).sqrt(), abar.new_zeros(1)]), sch.config.prediction_type
    if pred not in PREDICTIONS:
        raise RewardsteerError(f"prediction_type '{pred}' is not supported; expected one of {PREDICTIONS}")
    alpha[-1], sigma[-1] = 1.0, 0.0  # the last step always lands on clean latents
    return times.tolist(), alpha.tolist(), sigma.tolist(), pred, init


class DiffusersSampler(Sampler):
    """A diffusers UNet pipeline as a `Sampler` over latents: per step the x0-prediction and a Gaussian
    transition with explicit mean and std (module notation). Prompt embeddings are computed once and cached.

    The UNet, VAE and text encoder are frozen; `decode` runs the VAE `decode_batch` samples at a time so
    big batches fit. No method here is wrapped in no_grad: noise optimization backpropagates through it.
    """

    def __init__(self, unet, vae, scheduler, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor | None,
                 steps: int, guidance_scale: float, eta: float, height: int, width: int, decode_batch: int | None = None,
                 added: dict[str, torch.Tensor] | None = None):
        super().__init__()
        if steps < 1 or eta < 0:
            raise RewardsteerError(f"steps must be >= 1 and eta >= 0; got steps={steps}, eta={eta}")
        self.unet, self.vae = unet.eval().requires_grad_(False), vae.eval().requires_grad_(False)
        self.num_steps, self.guidance_scale, self.eta, self.decode_batch = steps, guidance_scale, eta, decode_batch
        embeds = prompt_embeds if negative_embeds is None else torch.cat([negative_embeds, prompt_embeds])
        self.register_buffer("embeds", embeds.detach(), persistent=False)  # (1 or 2, L, D): [uncond,] cond
        self.added_keys = tuple(added or ())  # SDXL: pooled text embeddings and size ids, same row layout
        for k, v in (added or {}).items():
            self.register_buffer(k, v.detach(), persistent=False)
        self.timesteps, self.alphas, self.sigmas, self.prediction, self.init_scale = path_coefficients(scheduler, steps)
        # clip_sample (off in latent-diffusion configs): ε̂ is then re-derived from the clipped x̂, as in DDPM's
        # posterior and DDIM's use_clipped_model_output=True.
        self.clip_sample = scheduler.config.get("clip_sample_range", 1.0) if scheduler.config.get("clip_sample") else None
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if height % factor or width % factor:
            raise RewardsteerError(f"height and width must be multiples of {factor}; got {height}x{width}")
        self.state_shape = (unet.config.in_channels, height // factor, width // factor)
        # Per-step DDIM posterior coefficients (module notation), in float64 once rather than per call.
        self.coef = [ddim_posterior(self.alphas[i], self.sigmas[i], self.alphas[i + 1], self.sigmas[i + 1], eta)
                     for i in range(steps)]

    def sample_noise(self, n: int, generator: torch.Generator, device=None, dtype=None) -> torch.Tensor:
        """x_0: standard normal times diffusers' initial noise scale (`init_scale`, 1 except Euler "trailing")."""
        return super().sample_noise(n, generator, device, dtype) * self.init_scale

    def model_output(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The UNet's raw output at step i, with classifier-free guidance (Ho & Salimans 2022, eq. 6)."""
        b, t = x.shape[0], x.new_tensor(self.timesteps[i])
        both = self.guidance_scale > 1 and self.embeds.shape[0] == 2

        def rows(c):  # (1 or 2, ...) -> (2B, ...): B unconditional rows then B conditional; or (B, ...) conditional
            return c.repeat_interleave(b, 0) if both else c[-1:].expand(b, *c.shape[1:])

        kw = {"encoder_hidden_states": rows(self.embeds)}
        if self.added_keys:
            kw["added_cond_kwargs"] = {k: rows(getattr(self, k)) for k in self.added_keys}
        xin = x.to(self.unet.dtype)
        out = self.unet(torch.cat([xin, xin]) if both else xin, t, **kw)[0]
        if not both:
            return out
        out_u, out_c = out.chunk(2)
        return out_u + self.guidance_scale * (out_c - out_u)

    def predict_x0(self, x: torch.Tensor, i: int, cond: Any = None) -> torch.Tensor:
        a, s = self.alphas[i], self.sigmas[i]
        out, xf = self.model_output(x, i).float(), x.float()  # schedule arithmetic in fp32 even for fp16 models
        if self.prediction == "epsilon":
            x0 = (xf - s * out) / a
        elif self.prediction == "v_prediction":
            x0 = a * xf - s * out  # Salimans & Ho 2022, v = α·ε − σ·x̂
        elif self.prediction == "flow":
            x0 = xf - s * out
        else:
            x0 = out
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return x0.to(x.dtype)

    def transition(self, x: torch.Tensor, i: int, x0_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_x0, c_eps, std = self.coef[i]
        eps = (x - self.alphas[i] * x0_pred) / self.sigmas[i]  # ε̂ implied by the x0-prediction
        return c_x0 * x0_pred + c_eps * eps, x.new_tensor(std)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] through the VAE, `decode_batch` samples at a time."""
        cfg = self.vae.config
        lat = x.to(self.vae.dtype) / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        chunks = lat.split(self.decode_batch or lat.shape[0])
        img = torch.cat([self.vae.decode(c)[0] for c in chunks])
        return (img / 2 + 0.5).clamp(0, 1).to(x.dtype)


class UnrolledDiffusers(UnrolledSampler):
    """G(z) for z ~ N(0, I): the deterministic sampler run from z × `init_scale` (ReNO's prior stays standard)."""

    def forward(self, z: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return super().forward(z * self.sampler.init_scale, cond)


def _build(pipe_or_path, prompt, negative_prompt, guidance_scale, steps, eta, height, width, dtype, device,
           decode_batch, checkpoint) -> DiffusersSampler:
    dtype = parse_dtype(dtype)
    pipe = load_pipeline(pipe_or_path, dtype) if isinstance(pipe_or_path, str | os.PathLike) else pipe_or_path
    unet = getattr(pipe, "unet", None)
    if unet is None or not hasattr(pipe, "encode_prompt") or unet.config.addition_embed_type not in (None, "text_time"):
        raise RewardsteerError(f"{type(pipe).__name__} is not supported yet: rewardsteer steers text-to-image UNet "
                               "pipelines (Stable Diffusion 1.x / 2.x / XL, SD-Turbo, SDXL-Turbo)")
    if device is not None or dtype is not None:
        pipe = pipe.to(device=device, dtype=dtype)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    height = height or unet.config.sample_size * factor
    width = width or unet.config.sample_size * factor
    cfg = guidance_scale > 1
    with torch.no_grad():  # the prompt is fixed for the whole run: encode it once
        enc = pipe.encode_prompt(prompt=prompt, device=unet.device, num_images_per_prompt=1,
                                 do_classifier_free_guidance=cfg, negative_prompt=negative_prompt)
    pe, ne, added = enc[0], enc[1], None
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled embeddings + (original, crop, target) sizes
        ids = pe.new_tensor([[height, width, 0, 0, height, width]])
        added = {"text_embeds": torch.cat([enc[3], enc[2]]) if cfg else enc[2],
                 "time_ids": torch.cat([ids, ids]) if cfg else ids}
    if checkpoint:  # diffusers' own per-block checkpointing; it is active in eval mode
        for m in (unet, pipe.vae):
            if getattr(m, "_supports_gradient_checkpointing", False):
                m.enable_gradient_checkpointing()
    return DiffusersSampler(unet, pipe.vae, pipe.scheduler, pe, ne if cfg else None, steps, guidance_scale, eta,
                            height, width, decode_batch, added)


def diffusers_sampler(pipe_or_path, prompt: str, *, negative_prompt: str | None = None, guidance_scale: float = 7.5,
                      steps: int = 50, eta: float = 1.0, height: int | None = None, width: int | None = None,
                      dtype: torch.dtype | str | None = None, device=None, decode_batch: int | None = None,
                      checkpoint: bool = False) -> DiffusersSampler:
    """A diffusers pipeline (object, local folder or hub name) as a stochastic `Sampler` for particle
    methods (FK steering, DAS, SVDD). `eta` = 1 is DDPM / Euler-ancestral sampling; see the module notes.
    """
    return _build(pipe_or_path, prompt, negative_prompt, guidance_scale, steps, eta, height, width, dtype, device,
                  decode_batch, checkpoint)


def from_diffusers(pipe_or_path, prompt: str, *, negative_prompt: str | None = None, guidance_scale: float = 0.0,
                   steps: int = 1, height: int | None = None, width: int | None = None, dtype: torch.dtype | str | None = None,
                   device=None, decode_batch: int | None = None, checkpoint: bool = False) -> UnrolledDiffusers:
    """A diffusers pipeline as a one-step generator G(z) = decode(deterministic `steps`-step sampler from z),
    differentiable in z, for best-of-N, search and ReNO (Eyring et al. 2024 steer SD-Turbo and SDXL-Turbo with
    steps=1).

    `guidance_scale` 0 suits distilled models (SD-Turbo); `checkpoint=True` recomputes activations in backward:
    per step (UnrolledSampler) and per block inside the UNet and VAE decoder (diffusers' checkpointing).
    Load with dtype=torch.float16 / bfloat16 on a GPU; ReNO keeps its noise and regularizer in fp32.
    """
    sampler = _build(pipe_or_path, prompt, negative_prompt, guidance_scale, steps, 0.0, height, width, dtype, device,
                     decode_batch, checkpoint)
    return UnrolledDiffusers(sampler, checkpoint=checkpoint)
