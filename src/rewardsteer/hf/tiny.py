"""Tiny diffusers pipelines and a tiny CLIP model built from configs, offline: random weights, in-memory tokenizers.

They run every `--pipeline` path in seconds on a CPU with nothing downloaded (`rewardsteer hf tiny-pipeline DIR`,
docs/diffusers.md), and the hf tests build on them. Their images are noise-like: they test plumbing, not quality.

- `tiny_tokenizer`: CLIP's BPE tokenizer over a vocabulary of single letters (with and without the word end).
- `t5_tokenizer`: T5's Unigram tokenizer over single letters (FLUX and SD3's third encoder).
- `tiny_pipeline` (SD-Turbo style: Euler, "trailing" spacing), `tiny_sdxl`, `tiny_flux` (schnell, or dev with its
  guidance embedding and dynamic shift), `tiny_sd3`; `save_tiny_clip` writes a 16×16-image CLIPModel for rewards.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROMPT = "a red cat"
SIZE = 16  # 16×16 images, 8×8 latents with 4 channels (FLUX packs them into 16 tokens of 16)
T5_LENGTH = 24  # max_sequence_length to pass for FLUX / SD3: T5 then runs on 24 tokens, not 512
KINDS = ("sd", "sdxl", "flux", "flux-dev", "sd3")


def tiny_tokenizer(max_length: int = 16):
    """CLIP BPE tokenizer over an in-memory vocabulary: single letters, with and without the word end."""
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in letters:  # one id each (a dict comprehension would read len(vocab) once and give them all one id)
            vocab[c + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_text_config(tok):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=16,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def sd_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         sample_size=SIZE)


def tiny_pipeline(scheduler=None, seed: int = 0):
    """A StableDiffusionPipeline in miniature; by default SD-Turbo's scheduler (Euler, "trailing" spacing)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    for p in unet.conv_out.parameters():  # diffusers zero-initialises nothing here, but keep outputs lively
        p.data.normal_(0, 0.2)
    vae = sd_vae()
    scheduler = scheduler or EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                    timestep_spacing="trailing", steps_offset=1)  # SD-Turbo's
    return StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(tiny_text_config(tok)), tokenizer=tok, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl(scheduler=None):
    """Two text encoders (the second with a projection), pooled embeddings and size ids: SDXL's conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16)
    cfg = tiny_text_config(tok)
    scheduler = scheduler or EulerDiscreteScheduler(timestep_spacing="trailing")
    return StableDiffusionXLPipeline(vae=sd_vae(), text_encoder=CLIPTextModel(cfg),
                                     text_encoder_2=CLIPTextModelWithProjection(cfg), tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=scheduler)


def save_tiny_clip(path: str | Path) -> Path:
    """A tiny CLIPModel (16×16 images) and its in-memory tokenizer, written to `path` by save_pretrained."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(1)
    tok = tiny_tokenizer()
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=4, projection_dim=16)
    cfg = CLIPConfig(text_config=tiny_text_config(tok).to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


def t5_tokenizer():
    """T5's Unigram tokenizer over an in-memory vocabulary: pad, eos, unk, the word start ▁ and single letters."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_t5(width: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=30, d_model=width, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                   relative_attention_num_buckets=8))


def tiny_vae():
    """FLUX / SD3-style VAE (no quant convs, a shift factor) with 4 latent channels and a 2× downsampling."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         sample_size=SIZE, scaling_factor=0.5, shift_factor=0.1, use_quant_conv=False,
                         use_post_quant_conv=False)


def eval_all(pipe):
    for m in pipe.components.values():  # as from_pretrained leaves them: T5's dropout off
        if isinstance(m, torch.nn.Module):
            m.eval()
    return pipe


def tiny_flux(dev: bool = False, seed: int = 0):
    """FLUX.1-schnell (no guidance embedding, no dynamic shift) or FLUX.1-dev (both) in miniature."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=16, guidance_embeds=dev, axes_dims_rope=(2, 2, 4))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True) if dev else \
        FlowMatchEulerDiscreteScheduler()
    return eval_all(FluxPipeline(scheduler=scheduler, vae=tiny_vae(), text_encoder=CLIPTextModel(tiny_text_config(tok)),
                                 tokenizer=tok, text_encoder_2=tiny_t5(), tokenizer_2=t5_tokenizer(),
                                 transformer=transformer))


def tiny_sd3(seed: int = 0):
    """SD3: two CLIP encoders with projections (pooled 16 + 16), T5, an MM-DiT with 2×2 patches, shift 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                        pooled_projection_dim=32, out_channels=4, pos_embed_max_size=8)
    return eval_all(StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=tiny_vae(), transformer=transformer,
        text_encoder=CLIPTextModelWithProjection(tiny_text_config(tok)), tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(tiny_text_config(tok)), tokenizer_2=tok, text_encoder_3=tiny_t5(),
        tokenizer_3=t5_tokenizer()))


BUILDERS = {"sd": tiny_pipeline, "sdxl": tiny_sdxl, "flux": tiny_flux, "flux-dev": lambda: tiny_flux(dev=True),
            "sd3": tiny_sd3}


def save_tiny(out: str | Path, kind: str = "sd") -> dict[str, Path]:
    """Write a tiny `kind` pipeline to OUT/pipeline and a tiny CLIP model to OUT/clip (save_pretrained, safetensors);
    returns {"pipeline": path, "clip": path}."""
    from ..errors import RewardsteerError
    from .loading import quiet_loading

    if kind not in BUILDERS:
        raise RewardsteerError(f"unknown tiny pipeline kind '{kind}'; choose one of {', '.join(KINDS)}")
    from transformers.utils import logging as tlog

    out, bars = Path(out), tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()  # "Writing model shards" bars, one per component
    try:
        with quiet_loading():
            BUILDERS[kind]().save_pretrained(out / "pipeline", safe_serialization=True)
            save_tiny_clip(out / "clip")
    finally:
        if bars:
            tlog.enable_progress_bar()
    return {"pipeline": out / "pipeline", "clip": out / "clip"}
