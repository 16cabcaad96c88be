"""Rewards for text-to-image steering: CLIP score and the preference models built on CLIP (PickScore, HPS v2),
heads on CLIP image features (aesthetic-MLP style), JPEG compressibility, and suppression of a concept.
Preprocessing is plain torch, so gradients reach the pixels.

Samples are images in [0, 1], shape (B, 3, H, W). One `CLIPFeatures` can be shared by several rewards, so a
CLIP score, an aesthetic head and a concept penalty on the same images load the CLIP weights once.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as ckpt

from ..core import Reward
from ..errors import RewardsteerError, WeightsError
from ..safety import load_safetensors
from .checks import warn_if_truncated
from .loading import CLIP_MEAN, CLIP_STD, load_clip


def clip_preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """CLIPImageProcessor in torch, differentiable: shorter side to `size` (bicubic, antialiased), centre crop,
    normalize. (B, 3, H, W) in [0, 1] -> (B, 3, size, size)."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, int(h * scale)), max(size, int(w * scale))  # truncated, as CLIPImageProcessor does
    x = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    return (x - x.new_tensor(mean).view(1, 3, 1, 1)) / x.new_tensor(std).view(1, 3, 1, 1)


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPFeatures:
    """L2-normalized CLIP image and text embeddings (Radford et al. 2021) from a transformers `CLIPModel`.

    With `checkpoint=True` the image tower's activations are recomputed in backward (Chen et al. 2016):
    transformers only checkpoints in training mode, so the whole tower is wrapped here instead.
    """

    def __init__(self, model, tokenizer=None, size: int | None = None, mean=CLIP_MEAN, std=CLIP_STD,
                 checkpoint: bool = False):
        self.model, self.tokenizer, self.checkpoint = model.eval().requires_grad_(False), tokenizer, checkpoint
        self.size, self.mean, self.std = size or model.config.vision_config.image_size, mean, std
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @classmethod
    def load(cls, name, dtype=None, device=None, checkpoint: bool = False) -> CLIPFeatures:
        """From a hub name (e.g. openai/clip-vit-large-patch14) or a local folder, safetensors only."""
        model, tokenizer, prep = load_clip(name, dtype, device)
        return cls(model, tokenizer, checkpoint=checkpoint, **prep)

    @property
    def dim(self) -> int:
        return self.model.config.projection_dim

    def _embed(self, pixels):
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) unit vectors."""
        p = next(self.model.parameters())
        # resize in fp32, then the model's dtype: CPU has no bf16 backward for antialiased bicubic resizing
        pixels = clip_preprocess(images.to(p.device, torch.float32), self.size, self.mean, self.std).to(p.dtype)
        if self.checkpoint and torch.is_grad_enabled() and pixels.requires_grad:
            return ckpt(self._embed, pixels, use_reentrant=False)
        return self._embed(pixels)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (len, D) unit vectors, cached: a prompt is embedded once per run."""
        key = tuple(texts)
        if key not in self._text_cache:
            if self.tokenizer is None:
                raise RewardsteerError("this CLIPFeatures has no tokenizer: pass tokenizer= or use CLIPFeatures.load")
            for text in texts:
                warn_if_truncated(self.tokenizer, text, what="the CLIP reward")
            tok = self.tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
            tok = {k: v.to(next(self.model.parameters()).device) for k, v in tok.items()}
            self._text_cache[key] = F.normalize(_features(self.model.get_text_features(**tok)).float(), dim=-1)
        return self._text_cache[key]


class CLIPScore(Reward):
    """scale·cos(CLIP(image), CLIP(target)); scale 100 is CLIPScore as in torchmetrics (Hessel et al. 2021 use
    2.5·max(cos, 0)); `pickscore` and `hps_score` are this reward with their papers' scales.

    The target is `prompt` (text), `image` (a reference image in [0, 1]), or, when both are None, the
    condition passed at scoring time: a string or a list with one string per sample.
    """

    def __init__(self, features: CLIPFeatures, prompt: str | None = None, image: torch.Tensor | None = None,
                 name: str = "clip", scale: float = 100.0):
        self.features, self.prompt, self.name, self.differentiable = features, prompt, name, True
        self.scale = scale
        self.target_image = None
        if image is not None:
            with torch.no_grad():
                self.target_image = features.images(image if image.ndim == 4 else image[None])

    def target(self, cond: Any, batch: int) -> torch.Tensor:
        if self.target_image is not None:
            return self.target_image
        text = self.prompt if self.prompt is not None else cond
        if isinstance(text, str):
            return self.features.texts([text])
        if isinstance(text, list | tuple) and len(text) == batch and all(isinstance(t, str) for t in text):
            return self.features.texts(list(text))
        raise RewardsteerError(f"reward '{self.name}' needs a text: pass prompt=, image=, or a string condition")

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        img = self.features.images(samples)
        return self.scale * (img * self.target(cond, samples.shape[0]).to(img.device)).sum(-1)


def pickscore(features: CLIPFeatures, prompt: str | None = None, name: str = "pickscore") -> CLIPScore:
    """PickScore (Kirstain et al. 2023): logit_scale.exp()·cos(image, prompt) under the fine-tuned CLIP-H
    `yuvalkirstain/PickScore_v1` (load it with `CLIPFeatures.load`; its processor is CLIP-H's: shorter side to
    224, bicubic, centre crop, OpenAI mean/std, which `clip_preprocess` does in torch). ReNO (Eyring et al.
    2024) weights it 0.05 in its default reward mix."""
    return CLIPScore(features, prompt=prompt, name=name, scale=float(features.model.logit_scale.detach().exp()))


def hps_score(features: CLIPFeatures, prompt: str | None = None, name: str = "hps") -> CLIPScore:
    """HPS v2 / v2.1 (Wu et al. 2023): the plain cosine between image and prompt under HPS's fine-tuned CLIP-H
    (no logit scale; ReNO weights HPS v2.1 5.0 in its default mix). HPS ships open_clip checkpoints: convert them to
    a transformers CLIPModel folder first (docs/diffusers.md)."""
    return CLIPScore(features, prompt=prompt, name=name, scale=1.0)


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


class MLPHead(torch.nn.Module):
    """Linear layers read from a safetensors state dict, in key order (e.g. LAION's improved aesthetic
    predictor: layers.0 ... layers.7 with dropout and no activation between them). Any prefix works."""

    def __init__(self, state: dict[str, torch.Tensor], activation: str | None = None, source: str = "head"):
        super().__init__()
        weights = sorted((k for k, v in state.items() if k.endswith("weight") and v.ndim == 2), key=_natural_key)
        if not weights:
            raise WeightsError(f"{source} holds no 2-D '*weight' tensors: it is not a linear head")
        self.layers = torch.nn.ModuleList()
        for k in weights:
            w = state[k]
            bias = state.get(k[: -len("weight")] + "bias")
            if self.layers and self.layers[-1].out_features != w.shape[1]:
                raise WeightsError(f"{source}: layer {k} takes {w.shape[1]} inputs but the layer before gives "
                                   f"{self.layers[-1].out_features}")
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
            lin.weight.data.copy_(w)
            if bias is not None:
                lin.bias.data.copy_(bias)
            self.layers.append(lin)
        if self.layers[-1].out_features != 1:
            raise WeightsError(f"{source}: the last layer gives {self.layers[-1].out_features} outputs; a reward head gives 1")
        self.act = {None: None, "relu": F.relu, "gelu": F.gelu}[activation]
        self.in_features = self.layers[0].in_features

    @classmethod
    def from_safetensors(cls, path: str | Path, activation: str | None = None) -> MLPHead:
        """Read through hub.load_safetensors (pickles refused), frozen, in eval mode."""
        return cls(load_safetensors(path), activation, source=str(path)).eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, layer in enumerate(self.layers):
            x = layer(x)
            if self.act is not None and j < len(self.layers) - 1:
                x = self.act(x)
        return x.squeeze(-1)


class CLIPHead(Reward):
    """head(unit CLIP image embedding): aesthetic-MLP style rewards (LAION aesthetic predictor, Schuhmann et al.
    2022) from user-supplied safetensors. PickScore and HPS are whole fine-tuned CLIPModels instead: see
    `pickscore` and `hps_score`."""

    def __init__(self, features: CLIPFeatures, head: MLPHead, name: str = "aesthetic"):
        if head.in_features != features.dim:
            raise WeightsError(f"head '{name}' takes {head.in_features}-d features but this CLIP model gives {features.dim}")
        self.features, self.head, self.name, self.differentiable = features, head, name, True

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        emb = self.features.images(samples)  # L2-normalized, as LAION's heads expect
        p = next(self.head.parameters())
        return self.head(emb.to(p.device, p.dtype)).float()


class JPEGCompressibility(Reward):
    """−(JPEG size in kB) at `quality` (DDPO, Black et al. 2024, appendix: quality 95). Not differentiable:
    use it with best_of_n, search or particle methods."""

    def __init__(self, quality: int = 95, name: str = "jpeg"):
        if not 1 <= quality <= 100:
            raise RewardsteerError(f"JPEG quality must be in 1..100, got {quality}")
        self.quality, self.name, self.differentiable = quality, name, False

    @torch.no_grad()
    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        arr = (samples.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        sizes = []
        for a in arr:
            buf = io.BytesIO()
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="JPEG", quality=self.quality)
            sizes.append(buf.tell() / 1000)
        return -torch.tensor(sizes, device=samples.device)


class Suppress(Reward):
    """−scale·max(0, r(x) − margin): steer away from whatever `reward` measures, e.g. CLIP similarity to a
    concept (the text or image description of what to avoid). Below `margin` it costs nothing, so it can be
    added to another reward (WeightedSum, Ensemble) without fighting it where the concept is already absent."""

    def __init__(self, reward: Reward, margin: float = 0.0, scale: float = 1.0, name: str | None = None):
        self.reward, self.margin, self.scale = reward, margin, scale
        self.name, self.differentiable = name or f"not_{reward.name}", reward.differentiable

    def score(self, samples: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return -self.scale * F.relu(self.reward(samples, cond).float() - self.margin)


def suppress_concept(features: CLIPFeatures, concept: str | torch.Tensor, margin: float = 0.0, scale: float = 1.0,
                     name: str | None = None) -> Suppress:
    """Penalize CLIP similarity (100·cos) to a concept given as text or as a reference image in [0, 1]."""
    is_text = isinstance(concept, str)
    target = CLIPScore(features, prompt=concept if is_text else None, image=None if is_text else concept,
                       name=f"clip_{concept}" if is_text else "clip_image")
    return Suppress(target, margin, scale, name or (f"not:{concept}" if is_text else "not:image"))
