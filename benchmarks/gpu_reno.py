"""ReNO on SD-Turbo's architecture at 512×512 with a CLIP-L-sized reward: seconds per iteration and peak GPU
memory, fp16 vs fp32, gradient checkpointing off vs on.

The UNet (SD 2.1-base layout, as in stabilityai/sd-turbo), VAE and CLIP ViT-L/14 are built from their configs
with random weights: speed and memory do not depend on weight values, and nothing is downloaded. The prompt
embeddings are random tensors of the text encoder's output shape (1, 77, 1024), computed once as in a real
run; the CLIP reward scores against a reference image, so no tokenizer is needed.

Published anchor: ReNO (Eyring et al. 2024) reports 20-50 s per image on an A100 for 50 iterations with four
reward models; this script runs one (CLIP-L), so expect less.

    python benchmarks/gpu_reno.py                      # needs CUDA; writes runs/gpu_reno.json
    python benchmarks/gpu_reno.py --smoke --out x.json # tiny configs on CPU: checks the script, measures nothing useful
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from rewardsteer.hf.rewards import CLIPFeatures, CLIPScore
from rewardsteer.hf.sampler import DiffusersSampler, UnrolledDiffusers
from rewardsteer.methods import reno

# stabilityai/sd-turbo: unet/config.json, vae/config.json, scheduler/scheduler_config.json (SD 2.1-base family).
UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
                 steps_offset=1)
# openai/clip-vit-large-patch14
CLIP_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
                   patch_size=14)
CLIP_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
FULL = dict(unet=UNET, vae=VAE, clip_vision=CLIP_VISION, clip_text=CLIP_TEXT, projection=768, text_len=77, size=512)

SMOKE = dict(
    unet=dict(UNET, sample_size=8, layers_per_block=1, block_out_channels=(8, 16), cross_attention_dim=16,
              attention_head_dim=2, norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
    vae=dict(VAE, layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4, sample_size=16,
             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
    clip_vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
                     patch_size=4),
    clip_text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    projection=16, text_len=8, size=16)


def build(cfg: dict, dtype: torch.dtype, device: str):
    """The one-step generator and the CLIP reward, random weights, created directly on `device`."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**cfg["unet"]).to(dtype)
        vae = AutoencoderKL(**cfg["vae"]).to(dtype)
        clip = CLIPModel(CLIPConfig(vision_config=cfg["clip_vision"], text_config=cfg["clip_text"],
                                    projection_dim=cfg["projection"])).to(dtype)
        embeds = torch.randn(1, cfg["text_len"], cfg["unet"]["cross_attention_dim"], dtype=dtype)
        reference = torch.rand(1, 3, cfg["size"], cfg["size"])
    sampler = DiffusersSampler(unet, vae, EulerDiscreteScheduler(**SCHEDULER), embeds, None, steps=1, guidance_scale=0.0,
                               eta=0.0, height=cfg["size"], width=cfg["size"])
    features = CLIPFeatures(clip)
    return sampler, features, CLIPScore(features, image=reference)


def measure(sampler, features, reward, checkpoint: bool, iters: int, device: str) -> dict:
    for m in (sampler.unet, sampler.vae):  # the same switches from_diffusers(checkpoint=...) turns on
        m.enable_gradient_checkpointing() if checkpoint else m.disable_gradient_checkpointing()
    features.checkpoint = checkpoint
    gen = UnrolledDiffusers(sampler, checkpoint=checkpoint)
    reno(gen, reward, n=1, iters=2, seed=1, progress=False)  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    res = reno(gen, reward, n=1, iters=iters, seed=0, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # backward and skipped show that every iteration really ran: a non-finite score (fp16 overflow) skips its step
    return {"seconds_total": round(seconds, 3), "seconds_per_iteration": round(seconds / iters, 4),
            "peak_memory_mb": res.spent["peak_memory_mb"], "backward": res.spent["backward"],
            "skipped": res.spent["skipped"], "score": res.summary_dict()["score"], "stopped": res.stopped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny configs on CPU, 2 iterations: checks the script only")
    ap.add_argument("--iters", type=int, default=None, help="reno iterations (default 50; 2 with --smoke)")
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_reno.json"))
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_reno.py needs a CUDA GPU and none was found; `--smoke` runs a tiny CPU version that only checks "
              "the script", file=sys.stderr)
        return 2
    device, cfg = ("cpu", SMOKE) if args.smoke else ("cuda", FULL)
    iters = args.iters or (2 if args.smoke else 50)
    dtypes = {"fp32": torch.float32} if args.smoke else {"fp32": torch.float32, "fp16": torch.float16}
    rows, params = [], {}
    for name, dtype in dtypes.items():
        sampler, features, reward = build(cfg, dtype, device)
        params = {k: sum(p.numel() for p in m.parameters())
                  for k, m in (("unet", sampler.unet), ("vae", sampler.vae), ("clip", features.model))}
        for ckpt in (False, True):
            row = {"dtype": name, "checkpoint": ckpt, **measure(sampler, features, reward, ckpt, iters, device)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        del sampler, features, reward
        if device == "cuda":
            torch.cuda.empty_cache()
    meta = {"smoke": args.smoke, "iters": iters, "size": cfg["size"], "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "parameters": params, "peak_memory": "torch.cuda.max_memory_allocated" if device == "cuda" else
            "process peak RSS (CPU)", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
