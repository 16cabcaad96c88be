"""Input checks for the Hugging Face integration: device / dtype combinations and prompt lengths.

Each check turns what would be a long traceback (or several lines of library warnings) deep inside diffusers
into one actionable line, raised before any weights move; over-long prompts are not an error (diffusers and
CLIP truncate them) but the user is told, in one warning, what was cut.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import RewardsteerError
from .loading import check_device_dtype, quiet_loading

# Pipeline components that hold weights; rewardsteer calls them directly, so they must share one device.
COMPONENTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def check_placement(pipe) -> torch.device:
    """The one device every weight-holding component of `pipe` is on, after checking its dtype can run there.
    Mixed dtypes are allowed (an fp32 VAE beside an fp16 UNet is the usual fix for SDXL's VAE)."""
    where = {}
    for name in COMPONENTS:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            p = next(module.parameters(), None)
            if p is not None:
                where[name] = (p.device, p.dtype)
    devices = {d for d, _ in where.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{k} on {d}" for k, (d, _) in where.items())
        raise RewardsteerError(f"the pipeline's components are on different devices ({listing}): pass device= "
                               "(--device) so rewardsteer moves them together")
    device = devices.pop() if devices else torch.device("cpu")
    for _name, (dev, dtype) in where.items():
        check_device_dtype(dev, dtype)
    return device


def warn_if_truncated(tokenizer, prompt: str | None, limit: int | None = None, what: str = "the text encoder") -> None:
    """Warn (once per call, one line) when `prompt` has more tokens than `limit` (default: the tokenizer's
    model_max_length), saying how many are kept and where the cut falls: the text after it has no effect."""
    if not prompt or tokenizer is None:
        return
    limit = limit or tokenizer.model_max_length
    with quiet_loading():  # transformers' own 'sequence length is longer than' line would repeat this one
        ids = tokenizer(prompt, truncation=False).input_ids
    if len(ids) <= limit:
        return
    kept = tokenizer.decode(ids[:limit], skip_special_tokens=True)
    tail = " ".join(kept.split()[-4:])
    warnings.warn(f"prompt is {len(ids)} tokens for {what} ({type(tokenizer).__name__}), which keeps {limit}: it is "
                  f"truncated after '...{tail}' and the rest is ignored", UserWarning, stacklevel=3)


def warn_pipeline_truncation(pipe, prompt: str | None, t5_length: int | None) -> None:
    """`warn_if_truncated` for each tokenizer a pipeline has: CLIP tokenizers at their own limit (77), T5 at the
    `max_sequence_length` the prompt is encoded with."""
    for attr, encoder in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"),
                          ("tokenizer_3", "text_encoder_3")):
        tok = getattr(pipe, attr, None)
        if tok is None or getattr(pipe, encoder, None) is None:
            continue  # SD3 without T5 encodes zeros for it: nothing is truncated
        is_t5 = "T5" in type(tok).__name__
        warn_if_truncated(tok, prompt, t5_length if is_t5 else None, f"{encoder}")
