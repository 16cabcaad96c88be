"""Diffusers pipelines as rewardsteer generators: a stochastic multi-step `Sampler` for particle methods, and
one-step / few-step generators differentiable in the initial noise for noise optimization.

Notation: every supported scheduler is read as a Gaussian path over the latents, x_t = α_t·x̂ + σ_t·ε
(DDIM, Song et al. 2021, §3), with (α, σ) taken per step from the scheduler's own timesteps:
  - DDPM / DDIM: α = √ᾱ_t, σ = √(1 − ᾱ_t) (variance preserving);
  - Euler / Euler-ancestral (Karras et al. 2022): the scheduler's sigma s is variance exploding,
    x_VE = x / α with α = 1/√(1 + s²), σ = s·α; the UNet's input scale_model_input(x_VE) = x_VE/√(s² + 1) is
    exactly x, so the state here is always the UNet input;
  - FlowMatchEuler (rectified flow, SD3 / FLUX): α = 1 − s, σ = s, the model predicts v = ε − x̂ (their
    transformer calls are in mmdit.py; `LatentSampler` here is what every pipeline shares).
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
from typing import Any

import torch

from ..bundled.flow import UnrolledSampler
from ..core import Sampler, ddim_posterior
from ..errors import RewardsteerError

SCHEDULERS = ("DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
              "FlowMatchEulerDiscreteScheduler")
PREDICTIONS = ("epsilon", "v_prediction", "sample", "flow")


def path_coefficients(scheduler, steps: int, sigmas=None, mu: float | None = None
                      ) -> tuple[list[float], list[float], list[float], str, float]:
    """(model timesteps (N,), α (N+1,), σ (N+1,), prediction type, initial noise scale) for `steps` steps.

    The initial state is diffusers' own: randn × init_noise_sigma in the scheduler's coordinates, here times α_0
    for Euler schedulers (for "trailing" spacing that is σ_0/√(1+σ_0²) ≈ 0.998, not 1, as in SD-Turbo's pipeline).
    `sigmas` and `mu` go to FlowMatchEuler's set_timesteps as FLUX's and SD3's pipelines pass them (custom
    sigmas; the resolution-dependent shift μ when the scheduler uses dynamic shifting).

    The scheduler is deep-copied first, so the pipeline's own scheduler keeps its state (from_config would
    drop settings a pipeline patched in, such as steps_offset).
    """
    name = type(scheduler).__name__
    if name not in SCHEDULERS:
        raise RewardsteerError(f"scheduler {name} is not supported; use one of {', '.join(SCHEDULERS)}, e.g. "
                               "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)")
    sch = copy.deepcopy(scheduler)
    flow = name.startswith("FlowMatch")
    if flow:
        sch.set_timesteps(steps, sigmas=None if sigmas is None else list(sigmas), mu=mu)
    elif sigmas is not None or mu is not None:
        raise RewardsteerError(f"sigmas / mu are FlowMatchEuler settings; {name} takes neither")
    else:
        sch.set_timesteps(steps)
    times, init = sch.timesteps.double(), float(getattr(sch, "init_noise_sigma", 1.0))  # flow: pure noise
    if flow:
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


def vae_scale_factor(vae) -> int:
    """Pixels per latent along each side (8 for the SD / SD3 / FLUX VAEs), as diffusers' pipelines compute it."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


class LatentSampler(Sampler):
    """What every diffusers pipeline shares as a `Sampler` over latents: the Gaussian path (module notation),
    classifier-free guidance, the DDIM-η transition with explicit mean and std, and the VAE decode.

    Subclasses hold the denoiser (`denoiser`) and say how to call it (`denoise`): a UNet here, FLUX's and SD3's
    transformers in `mmdit.py`. `conds` are the prompt encodings, computed once: each tensor has 1 row
    (conditional) or 2 rows (unconditional, conditional) and is repeated to the batch at every call. The
    denoiser and VAE are frozen; `decode` runs the VAE `decode_batch` samples at a time so big batches fit. No
    method here is wrapped in no_grad: noise optimization backpropagates through it.
    """

    def __init__(self, vae, scheduler, conds: dict[str, torch.Tensor], steps: int, cfg_scale: float, eta: float,
                 state_shape: tuple[int, ...], decode_batch: int | None = None, schedule: dict | None = None):
        super().__init__()
        if steps < 1 or eta < 0:
            raise RewardsteerError(f"steps must be >= 1 and eta >= 0; got steps={steps}, eta={eta}")
        self.vae = vae.eval().requires_grad_(False)
        self.num_steps, self.cfg_scale, self.eta, self.decode_batch = steps, cfg_scale, eta, decode_batch
        self.cond_keys = tuple(conds)
        for k, v in conds.items():
            self.register_buffer(k, v.detach(), persistent=False)
        self.cond_rows = next(iter(conds.values())).shape[0]  # 2: [unconditional, conditional]
        self.timesteps, self.alphas, self.sigmas, self.prediction, self.init_scale = path_coefficients(
            scheduler, steps, **(schedule or {}))
        # clip_sample (off in latent-diffusion configs): ε̂ is then re-derived from the clipped x̂, as in DDPM's
        # posterior and DDIM's use_clipped_model_output=True.
        self.clip_sample = scheduler.config.get("clip_sample_range", 1.0) if scheduler.config.get("clip_sample") else None
        self.state_shape = tuple(state_shape)
        # Per-step DDIM posterior coefficients (module notation), in float64 once rather than per call.
        self.coef = [ddim_posterior(self.alphas[i], self.sigmas[i], self.alphas[i + 1], self.sigmas[i + 1], eta)
                     for i in range(steps)]

    @property
    def denoiser(self) -> torch.nn.Module:
        raise NotImplementedError

    def denoise(self, x: torch.Tensor, i: int, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        """The denoiser's raw output at step i for inputs x (rows already matched to `conds`)."""
        raise NotImplementedError

    def sample_noise(self, n: int, generator: torch.Generator, device=None, dtype=None) -> torch.Tensor:
        """x_0: standard normal times diffusers' initial noise scale (`init_scale`, 1 except Euler "trailing")."""
        return super().sample_noise(n, generator, device, dtype) * self.init_scale

    def model_output(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The denoiser's output at step i, with classifier-free guidance (Ho & Salimans 2022, eq. 6)."""
        b = x.shape[0]
        both = self.cfg_scale > 1 and self.cond_rows == 2

        def rows(c):  # (1 or 2, ...) -> (2B, ...): B unconditional rows then B conditional; or (B, ...) conditional
            return c.repeat_interleave(b, 0) if both else c[-1:].expand(b, *c.shape[1:])

        xin = x.to(self.denoiser.dtype)
        out = self.denoise(torch.cat([xin, xin]) if both else xin, i, {k: rows(getattr(self, k)) for k in self.cond_keys})
        if not both:
            return out
        out_u, out_c = out.chunk(2)
        return out_u + self.cfg_scale * (out_c - out_u)

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


class DiffusersSampler(LatentSampler):
    """A diffusers UNet pipeline (SD 1.x / 2.x / XL and their Turbo versions) as a `Sampler` over latents: per
    step the x0-prediction and a Gaussian transition with explicit mean and std (module notation)."""

    def __init__(self, unet, vae, scheduler, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor | None,
                 steps: int, guidance_scale: float, eta: float, height: int, width: int, decode_batch: int | None = None,
                 added: dict[str, torch.Tensor] | None = None):
        factor = vae_scale_factor(vae)
        if height % factor or width % factor:
            raise RewardsteerError(f"height and width must be multiples of {factor}; got {height}x{width}")
        embeds = prompt_embeds if negative_embeds is None else torch.cat([negative_embeds, prompt_embeds])
        # SDXL's `added`: pooled text embeddings and size ids, same row layout as the embeddings
        super().__init__(vae, scheduler, {"encoder_hidden_states": embeds, **(added or {})}, steps, guidance_scale,
                         eta, (unet.config.in_channels, height // factor, width // factor), decode_batch)
        self.unet, self.guidance_scale = unet.eval().requires_grad_(False), guidance_scale

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    def denoise(self, x, i, conds):
        added = {k: v for k, v in conds.items() if k != "encoder_hidden_states"}
        kw = {"added_cond_kwargs": added} if added else {}
        return self.unet(x, x.new_tensor(self.timesteps[i]), encoder_hidden_states=conds["encoder_hidden_states"], **kw)[0]


class UnrolledDiffusers(UnrolledSampler):
    """G(z) for z ~ N(0, I): the deterministic sampler run from z × `init_scale` (ReNO's prior stays standard)."""

    def forward(self, z: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return super().forward(z * self.sampler.init_scale, cond)


def enable_checkpointing(*modules) -> None:
    """diffusers' own per-block gradient checkpointing; it is active in eval mode too."""
    for m in modules:
        if getattr(m, "_supports_gradient_checkpointing", False):
            m.enable_gradient_checkpointing()
