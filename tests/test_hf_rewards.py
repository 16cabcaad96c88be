"""The CLIP-based rewards (hf/rewards.py) on a tiny CLIPModel: preprocessing and scores against transformers'
own processor and logits, PickScore and HPS against their reference formulas, heads, suppression, JPEG."""

import json
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from safetensors.torch import save_file  # noqa: E402

from rewardsteer import WeightedSum  # noqa: E402
from rewardsteer.errors import RewardsteerError, WeightsError  # noqa: E402
from rewardsteer.hf import (  # noqa: E402
    CLIPFeatures,
    CLIPHead,
    CLIPScore,
    JPEGCompressibility,
    MLPHead,
    suppress_concept,
)
from rewardsteer.hf.rewards import Suppress, clip_preprocess, hps_score, pickscore  # noqa: E402
from rewardsteer.hf.specs import SpecParser  # noqa: E402
from tests.hf_tiny import PROMPT  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_clip_score_is_differentiable_and_caches_the_prompt(features, clip_reward):
    x = torch.rand(2, 3, 24, 20, requires_grad=True)  # any size: resized and centre-cropped in torch
    s = clip_reward(x)
    assert s.shape == (2,)  # its values: test_clip_preprocessing_and_scores_match_transformers
    s.sum().backward()
    assert x.grad.abs().sum() > 0
    cached = len(features._text_cache)  # (other tests share the features: count, don't assume an empty cache)
    clip_reward(x.detach())
    assert (PROMPT,) in features._text_cache and len(features._text_cache) == cached  # computed once, then reused
    per_sample = CLIPScore(features)(x.detach(), [PROMPT, "a dog"])
    torch.testing.assert_close(per_sample[0], s[0].detach())
    with pytest.raises(RewardsteerError, match="needs a text"):
        CLIPScore(features)(x.detach())
    ckpt = CLIPFeatures(features.model, features.tokenizer, features.size, checkpoint=True)
    x2 = x.detach().clone().requires_grad_(True)
    CLIPScore(ckpt, prompt=PROMPT)(x2).sum().backward()  # checkpointed image tower: same gradient
    torch.testing.assert_close(x2.grad, x.grad)


def pil_processor(size):
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4.x: the PIL path is the default processor
        from transformers import CLIPImageProcessor as Processor
    return Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.mark.parametrize("h, w", [(40, 30), (16, 16), (48, 32), (30, 45)])
def test_clip_preprocessing_and_scores_match_transformers(features, h, w):
    """clip_preprocess against transformers' CLIPImageProcessor on PIL images (OpenAI mean and std, shortest side to
    16 bicubic, centre crop), and CLIPScore against CLIPModel's own logits. PIL rounds resized pixels to uint8 and
    its bicubic kernel differs slightly from torch's antialiased one: ≤ 0.07 per normalized pixel measured here
    (mean ≤ 0.005); swapping mean and std, or a one-pixel-larger resize, moves pixels by 0.9 or more."""
    from PIL import Image

    proc = pil_processor(16)
    assert features.size == 16 and features.mean == tuple(proc.image_mean) and features.std == tuple(proc.image_std)
    pixels = torch.randint(0, 256, (3, 3, h, w), generator=torch.Generator().manual_seed(h * w), dtype=torch.uint8)
    images = pixels.float() / 255
    ref = proc([Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels], return_tensors="pt")["pixel_values"]
    ours = clip_preprocess(images, features.size, features.mean, features.std)
    assert ours.shape == ref.shape == (3, 3, 16, 16)
    assert (ours - ref).abs().max() < 0.1 and (ours - ref).abs().mean() < 0.01, (ours - ref).abs().max()
    model, tok = features.model, features.tokenizer
    texts = tok([PROMPT, "a dog"], padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=ours, **texts).logits_per_image  # (3 images, 2 texts): scale·cos
    cos = logits / model.logit_scale.exp()
    torch.testing.assert_close(CLIPScore(features, prompt=PROMPT)(images), 100 * cos[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(CLIPScore(features, scale=1.0)(images, "a dog"), cos[:, 1], atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        on_ref = model(pixel_values=ref, **texts).logits_per_image / model.logit_scale.exp()
    assert (on_ref - cos).abs().max() < 0.02  # the processor's own pixels give nearly the same cosines


def test_clip_preprocessing_long_side_is_truncated_like_transformers(features):
    from PIL import Image

    pixels = torch.randint(0, 256, (2, 3, 30, 50), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ref = pil_processor(16)([Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels],
                            return_tensors="pt")["pixel_values"]
    ours = clip_preprocess(pixels.float() / 255, 16, features.mean, features.std)
    assert (ours - ref).abs().max() < 0.1


def test_aesthetic_head_from_safetensors(features, tmp_path):
    torch.manual_seed(0)  # LAION's improved-aesthetic-predictor layout: layers.0, .2, .4 (dropouts between)
    state = {"layers.0.weight": torch.randn(8, 16), "layers.0.bias": torch.randn(8), "layers.2.weight": torch.randn(4, 8),
             "layers.2.bias": torch.randn(4), "layers.4.weight": torch.randn(1, 4), "layers.4.bias": torch.randn(1)}
    save_file(state, str(tmp_path / "head.safetensors"))
    reward = CLIPHead(features, MLPHead.from_safetensors(tmp_path / "head.safetensors"))
    x = torch.rand(3, 3, 16, 16)
    emb = features.images(x)
    manual = ((emb @ state["layers.0.weight"].T + state["layers.0.bias"]) @ state["layers.2.weight"].T
              + state["layers.2.bias"]) @ state["layers.4.weight"].T + state["layers.4.bias"]
    torch.testing.assert_close(reward(x), manual.squeeze(1))
    save_file({"w.weight": torch.randn(1, 32)}, str(tmp_path / "wide.safetensors"))
    with pytest.raises(WeightsError, match="32-d features"):
        CLIPHead(features, MLPHead.from_safetensors(tmp_path / "wide.safetensors"))


def test_clip_head_layers_in_natural_order_with_activations(features, tmp_path):
    """Keys sort naturally (layers.10 after layers.2), 1-D '*weight' tensors (norms) are not layers, the activation
    sits between layers but not after the last, and the loaded head is frozen and names its file."""
    torch.manual_seed(0)
    state = {"layers.2.weight": torch.randn(8, 16), "layers.2.bias": torch.randn(8), "norm.weight": torch.randn(8),
             "layers.10.weight": torch.randn(1, 8), "layers.10.bias": torch.randn(1)}
    save_file(state, str(tmp_path / "deep.safetensors"))
    head = MLPHead.from_safetensors(tmp_path / "deep.safetensors", activation="gelu")
    assert not any(p.requires_grad for p in head.parameters()) and len(head.layers) == 2
    emb = torch.randn(3, 16)
    hidden = torch.nn.functional.gelu(emb @ state["layers.2.weight"].T + state["layers.2.bias"])
    torch.testing.assert_close(head(emb), (hidden @ state["layers.10.weight"].T + state["layers.10.bias"]).squeeze(1))
    relu = MLPHead(state, activation="relu")
    hidden = torch.relu(emb @ state["layers.2.weight"].T + state["layers.2.bias"])
    torch.testing.assert_close(relu(emb), (hidden @ state["layers.10.weight"].T + state["layers.10.bias"]).squeeze(1))
    with pytest.raises(WeightsError, match=r"^.*deep2\.safetensors: the last layer gives 8 outputs"):
        save_file({"a.weight": torch.randn(8, 16)}, str(tmp_path / "deep2.safetensors"))
        MLPHead.from_safetensors(tmp_path / "deep2.safetensors")
    wide = CLIPHead(features, MLPHead(state).double())  # a float64 head scores float32 images
    assert wide.differentiable and wide(torch.rand(2, 3, 16, 16)).dtype == torch.float32


def test_clip_features_and_score_defaults(clip_dir, features, monkeypatch):
    from rewardsteer.hf import rewards as hfr

    plain = CLIPFeatures(features.model, features.tokenizer)
    assert plain.checkpoint is False and CLIPFeatures(features.model, features.tokenizer, size=8).size == 8
    assert not any(p.requires_grad for p in plain.model.parameters())
    wide = CLIPFeatures.load(clip_dir, dtype=torch.float64, checkpoint=True)
    assert wide.checkpoint is True and next(wide.model.parameters()).dtype == torch.float64
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(CLIPScore(wide, prompt=PROMPT)(x).float(), CLIPScore(features, prompt=PROMPT)(x),
                               atol=1e-4, rtol=1e-4)
    used = []
    real = hfr.ckpt
    monkeypatch.setattr(hfr, "ckpt", lambda *a, **k: used.append(k) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning when use_reentrant is not given
        wide.images(x.clone().requires_grad_(True))
        wide.images(x)  # nothing to differentiate: no checkpoint
        features.images(x.clone().requires_grad_(True))  # checkpointing off
    assert used == [{"use_reentrant": False}]
    score = CLIPScore(features, prompt=PROMPT)
    assert score.name == "clip" and score.scale == 100.0
    one = CLIPScore(features, image=x[0])  # a single (3, H, W) reference image
    torch.testing.assert_close(one(x), CLIPScore(features, image=x[:1])(x))
    assert pickscore(features).name == "pickscore" and hps_score(features).name == "hps"


def test_clip_suppression_names_and_passes_the_condition(features):
    x = torch.rand(3, 3, 16, 16)
    text = suppress_concept(features, "a dog")
    assert text.name == "not:a dog" and text.reward.name == "clip_a dog" and text.reward.prompt == "a dog"
    image = suppress_concept(features, x[0])
    assert image.name == "not:image" and image.reward.name == "clip_image" and image.reward.prompt is None
    torch.testing.assert_close(image(x), -CLIPScore(features, image=x[:1])(x).clamp_min(0))
    per_sample = Suppress(CLIPScore(features), margin=-1000.0)  # the prompt comes from the condition
    torch.testing.assert_close(per_sample(x, "a dog"), -(CLIPScore(features)(x, "a dog") + 1000.0))
    for q in (1, 100):
        JPEGCompressibility(quality=q)
    for q in (0, 101):
        with pytest.raises(RewardsteerError, match="quality"):
            JPEGCompressibility(quality=q)


def test_jpeg_rewards_flat_images_and_suppression_composes(features, clip_reward):
    flat, noisy = torch.full((1, 3, 32, 32), 0.5), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    jpeg = JPEGCompressibility()
    assert not jpeg.differentiable and float(jpeg(flat)) > float(jpeg(noisy))
    x = torch.rand(4, 3, 16, 16)
    sim = CLIPScore(features, prompt="a dog")(x)
    away = suppress_concept(features, "a dog", margin=float(sim.median()))
    pen = away(x)
    assert (pen <= 0).all() and (pen[sim <= sim.median()] == 0).all()
    torch.testing.assert_close(pen, -(sim - sim.median()).clamp_min(0))
    both = WeightedSum({"clip": (clip_reward, 1.0), "no_dog": (away, 0.5)})
    obj, members = both.evaluate(x)
    torch.testing.assert_close(obj, members["clip"] + 0.5 * members["no_dog"])


def test_pickscore_and_hps_match_the_transformers_reference(clip_dir):
    """PickScore = logit_scale.exp()·cos and HPS = cos, as their reference code computes them with transformers'
    CLIPProcessor on a PIL image; rewardsteer's torch preprocessing stands in for the processor (bicubic
    resize, centre crop, normalize) within 1% of the score."""
    from PIL import Image

    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    features = CLIPFeatures.load(clip_dir)
    model, tok = features.model, features.tokenizer
    pixels = torch.randint(0, 256, (2, 3, 40, 30), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = pixels.float() / 255
    proc = Processor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    inputs = proc([Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels], return_tensors="pt")
    torch.testing.assert_close(clip_preprocess(images, 16, proc.image_mean, proc.image_std), inputs["pixel_values"],
                               atol=0.06, rtol=0)  # PIL rounds its resized pixels to uint8: ±0.5/255/std
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output, dim=-1)
        txt = torch.nn.functional.normalize(model.get_text_features(**tok([PROMPT], return_tensors="pt")).pooler_output, dim=-1)
    cos = (img @ txt.T).squeeze(1)
    pick, hps = pickscore(features, PROMPT), hps_score(features, PROMPT)
    assert pick.scale == pytest.approx(float(np.exp(2.6592)), rel=1e-4) and hps.scale == 1.0  # CLIP's init
    torch.testing.assert_close(pick(images), model.logit_scale.exp() * cos, rtol=0.01, atol=0.0)
    torch.testing.assert_close(hps(images), cos, rtol=0.01, atol=0.0)
    x = images.clone().requires_grad_(True)
    pick(x).sum().backward()
    assert x.grad.abs().sum() > 0
    parser = SpecParser(PROMPT)
    specs = [parser.reward(f"pickscore:{clip_dir}"), parser.reward(f"hps:{clip_dir}"), parser.reward(f"clip:{clip_dir}")]
    assert [r.scale for r in specs] == [pick.scale, 1.0, 100.0] and len(parser.clips) == 1  # one CLIP load for all


def test_reward_defaults_and_a_saved_preprocessor_config(clip_dir, features, tmp_path):
    """Documented defaults (JPEG quality 95, suppression margin 0, the names), a head without biases, and the
    size / mean / std of a checkpoint's preprocessor_config.json reaching the features."""
    x = torch.rand(2, 3, 16, 16)
    jpeg = JPEGCompressibility()
    assert (jpeg.quality, jpeg.name) == (95, "jpeg")
    torch.testing.assert_close(jpeg(x), JPEGCompressibility(quality=95)(x))
    assert Suppress(CLIPScore(features, prompt="a dog")).margin == 0.0
    w = torch.randn(1, 16)
    head = CLIPHead(features, MLPHead({"w.weight": w}))
    assert head.name == "aesthetic"
    torch.testing.assert_close(head(x), (features.images(x) @ w.T).squeeze(1))  # no bias: none is added
    with pytest.raises(WeightsError, match="^head holds no 2-D"):
        MLPHead({})
    import shutil

    custom = tmp_path / "clip"
    shutil.copytree(clip_dir, custom)
    (custom / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 12, "width": 12}, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}))
    loaded = CLIPFeatures.load(custom)
    assert (loaded.size, loaded.mean, loaded.std) == (12, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def test_features_run_in_the_models_dtype():
    """Images are resized in float32, then fed in the model's dtype (bfloat16 here)."""
    import tempfile

    from tests.hf_tiny import save_tiny_clip

    with tempfile.TemporaryDirectory() as d:
        half = CLIPFeatures.load(save_tiny_clip(d), dtype=torch.bfloat16)
        emb = half.images(torch.rand(2, 3, 16, 16))
    assert emb.shape == (2, 16) and torch.isfinite(emb).all()
