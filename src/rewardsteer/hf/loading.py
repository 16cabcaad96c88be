"""Loading diffusers pipelines and transformers CLIP models by hub name or local folder, safetensors only.

Every failure to find weights (not cached, hub unreachable, offline mode, no safetensors files) becomes one
`WeightsError` that says how to provide them, instead of a long traceback.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import RewardsteerError, WeightsError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# OpenAI CLIP's preprocessing constants (Radford et al. 2021), used when a folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32' / 'fp16' / 'bf16' (the CLI's names) or a torch dtype -> a torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise RewardsteerError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _load_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    return OSError, ValueError, HfHubHTTPError


def missing_weights(what: str, name: str, err: BaseException) -> WeightsError:
    """One line: what failed, the library's first line of why, and how to provide the weights."""
    if name.startswith(("./", "../", "/", "~")) and not Path(name).expanduser().exists():
        return WeightsError(f"could not load {what} '{name}': no such folder")
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    local = Path(name).exists()
    how = ("the folder must hold what save_pretrained writes, with .safetensors weights" if local else
           f"download them once on a machine with network (`hf download {name}`, then copy the Hugging Face cache "
           "and point HF_HOME at it), or pass a local folder written by save_pretrained with .safetensors weights")
    offline = " HF_HUB_OFFLINE=1 is set, so only the local cache is read." if os.environ.get("HF_HUB_OFFLINE") else ""
    return WeightsError(f"could not load {what} '{name}': {reason}. To provide the weights: {how}.{offline}")


@contextmanager
def quiet_loading():
    """Only errors from diffusers' and transformers' loggers while loading: their hub retries and hints would
    bury the one-line error this module raises."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(before[0])
        tlog.set_verbosity(before[1])


def load_pipeline(name: str | os.PathLike, dtype: str | torch.dtype | None = None):
    """A diffusers pipeline from a hub name (e.g. stabilityai/sd-turbo) or a local folder, safetensors only."""
    from diffusers import DiffusionPipeline

    try:
        with quiet_loading():
            return DiffusionPipeline.from_pretrained(str(name), dtype=parse_dtype(dtype), use_safetensors=True)
    except _load_errors() as e:
        raise missing_weights("diffusers pipeline", str(name), e) from None


def _preprocessor_config(name: str) -> dict:
    """preprocessor_config.json of a local folder or a cached hub model; {} when there is none."""
    path = Path(name) / "preprocessor_config.json"
    if not Path(name).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name, "preprocessor_config.json"))
        except Exception:  # no such file or no network: the OpenAI constants are the usual values anyway
            return {}
    return json.loads(path.read_text()) if path.is_file() else {}


def load_clip(name: str | os.PathLike, dtype: str | torch.dtype | None = None, device=None):
    """(CLIPModel, CLIPTokenizer, preprocessing {size, mean, std}) from a hub name or local folder."""
    from transformers import CLIPModel, CLIPTokenizer

    name = str(name)
    check_device_dtype(device, parse_dtype(dtype))
    try:
        with quiet_loading():
            model = CLIPModel.from_pretrained(name, dtype=parse_dtype(dtype), use_safetensors=True)
            tokenizer = CLIPTokenizer.from_pretrained(name)
    except _load_errors() as e:
        raise missing_weights("CLIP model", name, e) from None
    cfg = _preprocessor_config(name)
    crop = cfg.get("crop_size", model.config.vision_config.image_size)
    size = crop["height"] if isinstance(crop, dict) else int(crop)
    prep = {"size": size, "mean": tuple(cfg.get("image_mean", CLIP_MEAN)), "std": tuple(cfg.get("image_std", CLIP_STD))}
    model = model.eval().requires_grad_(False)
    return (model.to(device) if device is not None else model), tokenizer, prep


def check_device_dtype(device, dtype: torch.dtype | None) -> None:
    """One line for a device that does not exist here, or a dtype that device cannot run."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise RewardsteerError(f"unknown device '{device}'; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RewardsteerError(f"device '{device}' asked for, but this torch {torch.__version__} sees no CUDA GPU: "
                               "pass device='cpu' (--device cpu), or install a CUDA build of torch")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RewardsteerError(f"device '{device}' asked for, but MPS is not available here: pass device='cpu'")
    if dtype == torch.float16 and dev.type == "cpu":
        # diffusers itself warns that fp16 pipelines "cannot run with cpu device"; many CPU kernels lack half support
        raise RewardsteerError("fp16 is not supported on CPU: use bf16 or fp32 on CPU (dtype='bf16' / 'fp32'), "
                               "fp16 on a GPU")
    if dtype == torch.bfloat16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RewardsteerError(f"bf16 is not supported on {torch.cuda.get_device_name(dev)}: use fp16 or fp32 there")
