"""ReNO on real text-to-image architectures (random weights): seconds per iteration and peak GPU memory.

Three architectures, one per call (each meant to finish within about 8 minutes on one 80 GB H100; not measured yet):
  sd-turbo           SD 2.1-base UNet + VAE at 512×512, CLIP ViT-L/14 reward; fp32 and fp16
  flux-schnell       FLUX.1-schnell transformer (12B) + its 16-channel VAE at 512×512 (ReNO's FLUX size),
                     CLIP ViT-H/14 reward (PickScore's architecture); bf16
  sd3.5-large-turbo  SD3.5 Large (Turbo) MM-DiT (8B) + its VAE at 1024×1024, CLIP ViT-H/14 reward; bf16
Each dtype runs with gradient checkpointing off and on; a configuration that runs out of GPU memory is
recorded as such. Noise and the ReNO regularizer stay fp32 (master noise); latents enter the denoiser and
the VAE in the model's dtype; the VAE decodes one sample at a time for FLUX / SD3.

Every network is built from its published config with random weights, directly on the GPU: speed and memory
do not depend on weight values, and nothing is downloaded. The text encoders are NOT built (T5-XXL alone is
4.7B parameters): the prompt encodings are random tensors of their real shapes, computed once, as a real run
computes them once before optimizing. The reward scores against a reference image, so no tokenizer is needed.

Published anchor: ReNO (Eyring et al. 2024) reports 20-50 s per image on an A100 for 50 iterations with four
reward models; this script runs one.

    python benchmarks/gpu_reno.py                              # sd-turbo (CUDA)
    python benchmarks/gpu_reno.py --model flux-schnell         # CUDA, bf16, ~24 GB of weights
    python benchmarks/gpu_reno.py --model sd3.5-large-turbo    # CUDA, bf16, ~16 GB of weights
    python benchmarks/gpu_reno.py --smoke --model flux-schnell --out x.json   # tiny configs on CPU: checks only
Results: benchmarks/results/gpu_reno_<model>.json, and docs/benchmarks/gpu_reno.md (a table of every
model's results found beside that JSON; in --smoke mode the table goes next to --out instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rewardsteer.hf.mmdit import FluxSampler, SD3Sampler
from rewardsteer.hf.rewards import CLIPFeatures, CLIPScore
from rewardsteer.hf.sampler import DiffusersSampler, UnrolledDiffusers, enable_checkpointing
from rewardsteer.methods import reno

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# stabilityai/sd-turbo: unet/config.json, vae/config.json, scheduler/scheduler_config.json (SD 2.1-base family).
UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
                 steps_offset=1)
# black-forest-labs/FLUX.1-schnell transformer/ and vae/ configs; SD3.5 Large's transformer and VAE differ only
# in the VAE's scaling and shift factors.
FLUX = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=False,
            axes_dims_rope=(16, 56, 56))
VAE16 = dict(VAE, latent_channels=16, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False)
SD35_LARGE = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
                  num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm")
# openai/clip-vit-large-patch14 and laion/CLIP-ViT-H-14-laion2B-s32B-b79K (the architecture of PickScore and HPS v2)
CLIP_L = dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=224, patch_size=14),
              text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
              projection=768)
CLIP_H = dict(vision=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                          image_size=224, patch_size=14),
              text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
              projection=1024)
TINY_CLIP = dict(vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             image_size=16, patch_size=4),
                 text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                 projection=16)
TINY_VAE = dict(VAE, layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4, sample_size=16,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)

# family, denoiser config, VAE config, reward CLIP, image size, text tokens, pooled width, GPU dtypes
MODELS = {
    "sd-turbo": dict(family="unet", denoiser=UNET, vae=VAE, clip=CLIP_L, size=512, text_len=77, pooled=0,
                     dtypes=("fp32", "fp16")),
    "flux-schnell": dict(family="flux", denoiser=FLUX, vae=dict(VAE16, scaling_factor=0.3611, shift_factor=0.1159),
                         clip=CLIP_H, size=512, text_len=512, pooled=768, dtypes=("bf16",)),
    "sd3.5-large-turbo": dict(family="sd3", denoiser=SD35_LARGE,
                              vae=dict(VAE16, scaling_factor=1.5305, shift_factor=0.0609), clip=CLIP_H, size=1024,
                              text_len=77 + 256, pooled=2048, dtypes=("bf16",)),
}
SMOKE = {
    "sd-turbo": dict(denoiser=dict(UNET, sample_size=8, layers_per_block=1, block_out_channels=(8, 16),
                                   cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
                                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
                     vae=TINY_VAE, text_len=8),
    "flux-schnell": dict(denoiser=dict(FLUX, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                       num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
                                       axes_dims_rope=(2, 2, 4)),
                         vae=dict(TINY_VAE, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1),
                         text_len=8, pooled=16),
    "sd3.5-large-turbo": dict(denoiser=dict(SD35_LARGE, sample_size=8, in_channels=4, out_channels=4, num_layers=1,
                                            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                            caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=8),
                              vae=dict(TINY_VAE, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1),
                              text_len=8, pooled=32),
}


@contextlib.contextmanager
def building(dtype: torch.dtype, device: str):
    """Modules created inside are allocated on `device` in `dtype` from the start: a 12B model never exists in
    fp32 or on the CPU (that alone would need 48 GB)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


def config(model: str, smoke: bool) -> dict:
    cfg = dict(MODELS[model])
    if smoke:
        cfg.update(SMOKE[model], clip=TINY_CLIP, size=16)
    return cfg


def build(model: str, cfg: dict, dtype: torch.dtype, device: str, steps: int):
    """The sampler (denoiser, VAE, cached random prompt encodings) and a CLIP reward, random weights, on `device`."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    family, den, size = cfg["family"], cfg["denoiser"], cfg["size"]
    with building(dtype, device):
        vae = AutoencoderKL(**cfg["vae"])
        clip = CLIPModel(CLIPConfig(vision_config=cfg["clip"]["vision"], text_config=cfg["clip"]["text"],
                                    projection_dim=cfg["clip"]["projection"]))
        if family == "unet":
            net = UNet2DConditionModel(**den)
            width = den["cross_attention_dim"]
        else:
            net = (FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel)(**den)
            width = den["joint_attention_dim"]
        embeds = torch.randn(1, cfg["text_len"], width)
        pooled = torch.randn(1, cfg["pooled"]) if cfg["pooled"] else None
        reference = torch.rand(1, 3, size, size, dtype=torch.float32)
    if family == "unet":
        sampler = DiffusersSampler(net, vae, EulerDiscreteScheduler(**SCHEDULER), embeds, None, steps=steps,
                                   guidance_scale=0.0, eta=0.0, height=size, width=size)
    elif family == "flux":  # FLUX.1-schnell: no guidance embedding, no dynamic shift, sigmas linspace(1, 1/N, N)
        conds = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        sampler = FluxSampler(net, vae, FlowMatchEulerDiscreteScheduler(shift=1.0), conds,
                              embeds.new_zeros(cfg["text_len"], 3), steps, 0.0, 1.0, 0.0, size, size, decode_batch=1,
                              schedule={"sigmas": np.linspace(1.0, 1 / steps, steps)})
    else:  # SD3.5 Large Turbo: shift 3, no CFG (guidance 0)
        conds = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        sampler = SD3Sampler(net, vae, FlowMatchEulerDiscreteScheduler(shift=3.0), conds, steps, 0.0, 0.0, size, size,
                             decode_batch=1)
    features = CLIPFeatures(clip)
    return sampler, features, CLIPScore(features, image=reference)


def measure(sampler, features, reward, checkpoint: bool, iters: int, device: str) -> dict:
    for m in (sampler.denoiser, sampler.vae):  # the same switches from_diffusers(checkpoint=...) turns on
        if checkpoint:
            enable_checkpointing(m)
        else:
            m.disable_gradient_checkpointing()
    features.checkpoint = checkpoint
    gen = UnrolledDiffusers(sampler, checkpoint=checkpoint)
    try:
        reno(gen, reward, n=1, iters=2, seed=1, progress=False)  # warm-up: kernels, allocator
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        res = reno(gen, reward, n=1, iters=iters, seed=0, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"out_of_memory": True}
    seconds = time.perf_counter() - start
    # backward and skipped show that every iteration really ran: a non-finite score (fp16 overflow) skips its step
    return {"seconds_total": round(seconds, 3), "seconds_per_iteration": round(seconds / iters, 4),
            "peak_memory_mb": res.spent["peak_memory_mb"], "backward": res.spent["backward"],
            "skipped": res.spent["skipped"], "score": res.summary_dict()["score"], "stopped": res.stopped,
            "noise_dtype": str(res.noises.dtype).removeprefix("torch.")}


def markdown(results: list[dict]) -> str:
    """One table over every model's results (each a JSON this script wrote)."""
    lines = ["# ReNO on real architectures (random weights): seconds per iteration and peak memory", "",
             "Written by `benchmarks/gpu_reno.py` (see its docstring for what is built and what is not: the text",
             "encoders are skipped, prompt encodings are random tensors of their real shapes).", "",
             "| model | parameters (denoiser / VAE / reward) | size | steps | dtype | checkpointing | s / iteration | "
             "peak memory (MB) | iterations run | device |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r["parameters"]
        params = " / ".join(f"{p[k] / 1e9:.2f}B" if p[k] >= 1e8 else f"{p[k] / 1e6:.2f}M" for k in ("denoiser", "vae", "clip"))
        for row in r["rows"]:
            speed = "out of memory" if row.get("out_of_memory") else row["seconds_per_iteration"]
            mem = "" if row.get("out_of_memory") else row["peak_memory_mb"]
            ran = "" if row.get("out_of_memory") else f"{row['backward']} ({row['skipped']} skipped)"
            lines.append(f"| {r['model']}{' (smoke)' if r['smoke'] else ''} | {params} | {r['size']}² | {r['steps']} | "
                         f"{row['dtype']} | {'on' if row['checkpoint'] else 'off'} | {speed} | {mem} | {ran} | {r['device']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=list(MODELS), default="sd-turbo", help="architecture to time (one per call)")
    ap.add_argument("--smoke", action="store_true", help="tiny configs on CPU in fp32, 2 iterations: checks the script only")
    ap.add_argument("--iters", type=int, default=None, help="reno iterations (default 50; 2 with --smoke)")
    ap.add_argument("--steps", type=int, default=1, help="sampler steps unrolled per generation (default 1)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's, above)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (default benchmarks/results/gpu_reno_<model>.json)")
    ap.add_argument("--md", type=Path, default=None,
                    help="markdown table (default docs/benchmarks/gpu_reno.md; with --smoke: next to --out)")
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_reno.py needs a CUDA GPU and none was found; `--smoke` runs a tiny CPU version that only checks "
              "the script", file=sys.stderr)
        return 2
    device, cfg = ("cpu" if args.smoke else "cuda"), config(args.model, args.smoke)
    if args.size:
        cfg["size"] = args.size
    out = args.out or Path(f"benchmarks/results/gpu_reno_{args.model}.json")
    md = args.md or (out.with_suffix(".md") if args.smoke else Path("docs/benchmarks/gpu_reno.md"))
    iters = args.iters or (2 if args.smoke else 50)
    rows, params = [], {}
    for name in ("fp32",) if args.smoke else cfg["dtypes"]:
        sampler, features, reward = build(args.model, cfg, DTYPES[name], device, args.steps)
        params = {k: sum(p.numel() for p in m.parameters())
                  for k, m in (("denoiser", sampler.denoiser), ("vae", sampler.vae), ("clip", features.model))}
        for ckpt in (False, True):
            row = {"dtype": name, "checkpoint": ckpt, **measure(sampler, features, reward, ckpt, iters, device)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        del sampler, features, reward
        if device == "cuda":
            torch.cuda.empty_cache()
    meta = {"model": args.model, "smoke": args.smoke, "iters": iters, "steps": args.steps, "size": cfg["size"],
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "parameters": params, "text_encoders": "not built: random prompt encodings of their real shapes",
            "peak_memory": "torch.cuda.max_memory_allocated" if device == "cuda" else "process peak RSS (CPU)",
            "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta, indent=1) + "\n")
    siblings = sorted(p for p in out.parent.glob("gpu_reno_*.json") if p != out)
    results = [json.loads(p.read_text()) for p in siblings]
    results = [r for r in results if "model" in r and r.get("smoke") == args.smoke] + [meta]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(sorted(results, key=lambda r: list(MODELS).index(r["model"]))))
    print(f"wrote {out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
