"""Hugging Face integration: steer diffusers pipelines with transformers CLIP rewards (`pip install rewardsteer[hf]`).

diffusers and transformers are imported only when a loader runs, so `import rewardsteer.hf` stays cheap.
"""

from .loading import load_clip, load_pipeline, parse_dtype
from .mmdit import FluxSampler, SD3Sampler
from .pipelines import diffusers_sampler, from_diffusers
from .rewards import (
    CLIPFeatures,
    CLIPHead,
    CLIPScore,
    JPEGCompressibility,
    MLPHead,
    Suppress,
    clip_preprocess,
    hps_score,
    pickscore,
    suppress_concept,
)
from .sampler import DiffusersSampler, LatentSampler, UnrolledDiffusers, path_coefficients

__all__ = [
    "CLIPFeatures", "CLIPHead", "CLIPScore", "DiffusersSampler", "FluxSampler", "JPEGCompressibility", "LatentSampler",
    "MLPHead", "SD3Sampler", "Suppress",
    "clip_preprocess", "diffusers_sampler", "from_diffusers", "hps_score", "load_clip", "load_pipeline", "parse_dtype",
    "pickscore",
    "path_coefficients", "suppress_concept", "UnrolledDiffusers",
]
