"""Tiny Hugging Face models built from configs, no downloads: they live in the package (`rewardsteer.hf.tiny`, also
behind `rewardsteer hf tiny-pipeline`); tests/conftest.py's pipe_dir / clip_dir fixtures save them with
save_pretrained. Imported only by the hf test modules, after their importorskip of diffusers and transformers."""

from rewardsteer.hf.tiny import (  # noqa: F401 - re-exported for the hf tests
    PROMPT,
    SIZE,
    T5_LENGTH,
    eval_all,
    save_tiny_clip,
    t5_tokenizer,
    tiny_flux,
    tiny_pipeline,
    tiny_sd3,
    tiny_sdxl,
    tiny_t5,
    tiny_text_config,
    tiny_tokenizer,
    tiny_vae,
)
