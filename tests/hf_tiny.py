"""Tiny Hugging Face models built from configs, no downloads: CLIP and T5 tokenizers over in-memory
vocabularies, SD / SDXL / FLUX / SD3 pipelines and a CLIPModel (tests/conftest.py's pipe_dir / clip_dir fixtures
save them with save_pretrained). Imported only by the hf test modules, after their importorskip of diffusers and
transformers."""

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

PROMPT = "a red cat"


def tiny_tokenizer(max_length=16):
    """CLIP BPE tokenizer over an in-memory vocabulary: single letters, with and without the word end."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in letters:  # one id each (a dict comprehension would read len(vocab) once and give them all one id)
            vocab[c + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_text_config(tok):
    return CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=tok.model_max_length, projection_dim=16,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def tiny_pipeline(scheduler=None, seed=0):
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    for p in unet.conv_out.parameters():  # diffusers zero-initialises nothing here, but keep outputs lively
        p.data.normal_(0, 0.2)
    vae = AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        sample_size=16)
    scheduler = scheduler or EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                    timestep_spacing="trailing", steps_offset=1)  # SD-Turbo's
    return StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(tiny_text_config(tok)), tokenizer=tok, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl(scheduler):
    """Two text encoders (the second with a projection), pooled embeddings and size ids: SDXL's conditioning."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16)
    vae = AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        sample_size=16)
    cfg = tiny_text_config(tok)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(cfg), text_encoder_2=CLIPTextModelWithProjection(cfg),
                                     tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=scheduler)


def save_tiny_clip(path):
    """A tiny CLIPModel (16×16 images) and its in-memory tokenizer, written to `path` by save_pretrained."""
    torch.manual_seed(1)
    tok = tiny_tokenizer()
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=4, projection_dim=16)
    cfg = CLIPConfig(text_config=tiny_text_config(tok).to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


SIZE = 16  # 16×16 images, 8×8 latents with 4 channels (FLUX packs them into 16 tokens of 16)


T5_LENGTH = 24  # max_sequence_length for every call here: T5 runs on 24 tokens, not 512


def t5_tokenizer():
    """T5's Unigram tokenizer over an in-memory vocabulary: pad, eos, unk, the word start ▁ and single letters."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_t5(width=32):
    return T5EncoderModel(T5Config(vocab_size=30, d_model=width, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                   relative_attention_num_buckets=8))


def tiny_vae():
    """FLUX / SD3-style VAE (no quant convs, a shift factor) with 4 latent channels and a 2× downsampling."""
    return AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         sample_size=SIZE, scaling_factor=0.5, shift_factor=0.1, use_quant_conv=False,
                         use_post_quant_conv=False)


def eval_all(pipe):
    for m in pipe.components.values():  # as from_pretrained leaves them: T5's dropout off
        if isinstance(m, torch.nn.Module):
            m.eval()
    return pipe


def tiny_flux(dev=False, seed=0):
    """FLUX.1-schnell (no guidance embedding, no dynamic shift) or FLUX.1-dev (both) in miniature."""
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


def tiny_sd3(seed=0):
    """SD3: two CLIP encoders with projections (pooled 16 + 16), T5, an MM-DiT with 2×2 patches, shift 3."""
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
