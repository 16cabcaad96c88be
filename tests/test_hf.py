"""Hugging Face integration, offline on CPU: tiny diffusers pipelines and a tiny CLIPModel built from configs,
saved with save_pretrained and loaded back through rewardsteer's own loading code."""

import copy
import json
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig  # noqa: E402

from rewardsteer import Budget, WeightedSum, best_of_n, reno  # noqa: E402
from rewardsteer.errors import RewardsteerError, WeightsError  # noqa: E402
from rewardsteer.hf import (  # noqa: E402
    CLIPFeatures,
    CLIPHead,
    CLIPScore,
    JPEGCompressibility,
    MLPHead,
    diffusers_sampler,
    from_diffusers,
    load_pipeline,
    suppress_concept,
)
from rewardsteer.hf.rewards import Suppress, clip_preprocess, hps_score, pickscore  # noqa: E402

PROMPT = "a red cat"


pytestmark = pytest.mark.usefixtures("one_thread")


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


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-sd-turbo")
    tiny_pipeline().save_pretrained(path)
    return path


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


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def features(clip_dir):
    return CLIPFeatures.load(clip_dir)


@pytest.fixture(scope="module")
def clip_reward(features):
    return CLIPScore(features, prompt=PROMPT)


def test_onestep_generator_loads_from_folder_and_backpropagates_to_latents(pipe_dir):
    gen = from_diffusers(str(pipe_dir), PROMPT, steps=1)
    assert gen.noise_shape == (4, 8, 8) and gen.nfe_per_call == 1
    z = gen.sample_noise(2, torch.Generator().manual_seed(0)).requires_grad_(True)
    x = gen(z)
    assert x.shape == (2, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    x.mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("build,scheduler,steps,guidance", [
    (tiny_pipeline, None, 1, 0.0), (tiny_pipeline, DDIMScheduler(), 3, 3.0),
    (tiny_sdxl, EulerDiscreteScheduler(timestep_spacing="trailing"), 1, 0.0),
    (tiny_sdxl, DDIMScheduler(clip_sample=False), 2, 3.0)], ids=["sd-turbo", "sd-ddim-cfg", "sdxl-turbo", "sdxl-ddim-cfg"])
def test_generator_matches_the_diffusers_pipeline(build, scheduler, steps, guidance):
    """Same latents, same image as diffusers' own __call__: the x0-prediction, the scheduler step, CFG with a
    negative prompt, SDXL's pooled embeddings and size ids, and the VAE decode all agree with diffusers."""
    pipe = build(scheduler)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = from_diffusers(pipe, PROMPT, negative_prompt="a dog", guidance_scale=guidance, steps=steps)
    with torch.no_grad():
        x = ours(z)
        ref = pipe(PROMPT, negative_prompt="a dog", guidance_scale=guidance, num_inference_steps=steps,
                   num_images_per_prompt=2, latents=z.clone(), output_type="pt").images
    torch.testing.assert_close(x, ref, atol=1e-4, rtol=1e-4)


SCHEDULERS = [DDIMScheduler(), DDPMScheduler(), EulerAncestralDiscreteScheduler(), EulerDiscreteScheduler(),
              FlowMatchEulerDiscreteScheduler()]


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: type(s).__name__)
def test_sampler_implements_the_interface(scheduler):
    s = diffusers_sampler(tiny_pipeline(scheduler), PROMPT, guidance_scale=2.0, steps=4, eta=1.0)
    assert s.num_steps == 4 and s.state_shape == (4, 8, 8)
    rng = torch.Generator().manual_seed(0)
    x = s.sample_noise(3, rng)
    assert x.shape == (3, 4, 8, 8)
    with torch.no_grad():
        for i in range(s.num_steps):
            noise = torch.randn(x.shape, generator=rng)
            out = s.step(x, i, None, noise)
            torch.testing.assert_close(out.x_next, out.mean + out.std * noise)
            mean, std = s.transition(x, i, out.x0_pred)
            torch.testing.assert_close(mean, out.mean)
            assert (float(std) > 0) == (i < s.num_steps - 1)  # stochastic until the last step
            x = out.x_next
        torch.testing.assert_close(x, out.x0_pred)  # the last step lands on the x0-prediction
        img = s.decode(x)
    assert img.shape == (3, 3, 16, 16) and 0 <= float(img.min()) and float(img.max()) <= 1


@pytest.mark.parametrize("scheduler", SCHEDULERS[:3], ids=lambda s: type(s).__name__)
def test_step_equals_the_scheduler_step(scheduler):
    """With the same model output and the same noise, one step equals diffusers' scheduler.step (DDIM η = 1,
    DDPM, Euler-ancestral in its VE coordinates) and the x0-predictions agree."""
    pipe = tiny_pipeline(scheduler)
    s = diffusers_sampler(pipe, PROMPT, guidance_scale=1.0, steps=5, eta=1.0)
    ref = copy.deepcopy(pipe.scheduler)  # as the pipeline configured it (clip_sample off, steps_offset 1)
    ref.set_timesteps(5)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    euler = isinstance(scheduler, EulerAncestralDiscreteScheduler)
    with torch.no_grad():
        for i in range(2):
            t = ref.timesteps[i]
            eps = s.model_output(x, i)
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + i))
            out = s.step(x, i, None, noise)
            scale = (1 + ref.sigmas[i] ** 2).sqrt() if euler else 1.0  # VE state = VP state / α
            kwargs = {"eta": 1.0, "variance_noise": noise} if isinstance(scheduler, DDIMScheduler) else \
                {"generator": torch.Generator().manual_seed(10 + i)}
            step = ref.step(eps, t, x * scale, **kwargs)
            torch.testing.assert_close(out.x0_pred, step.pred_original_sample, atol=1e-4, rtol=1e-4)
            next_scale = (1 + ref.sigmas[i + 1] ** 2).sqrt() if euler else 1.0
            torch.testing.assert_close(out.x_next * next_scale, step.prev_sample, atol=1e-4, rtol=1e-4)
            x = out.x_next


@pytest.mark.parametrize("scheduler", [DDIMScheduler(), FlowMatchEulerDiscreteScheduler()], ids=["vp", "flow"])
def test_stochastic_transition_keeps_the_path_marginals(scheduler):
    """x_t ~ N(α_t x̂, σ_t²) and a fixed x0-prediction x̂ give x_s ~ N(α_s x̂, σ_s²): the η-posterior is a
    valid SDE conversion (checked on 20k draws)."""
    s = diffusers_sampler(tiny_pipeline(scheduler), PROMPT, guidance_scale=1.0, steps=4, eta=1.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    for i in range(s.num_steps - 1):
        x = s.alphas[i] * x0 + s.sigmas[i] * torch.randn(x0.shape, generator=g)
        mean, std = s.transition(x, i, x0)
        assert float(std) > 0
        nxt = mean + std * torch.randn(x0.shape, generator=g)
        assert abs(float(nxt.mean()) - s.alphas[i + 1] * 0.7) < 0.02
        assert abs(float(nxt.std()) - s.sigmas[i + 1]) < 0.02


def test_flow_match_at_eta_zero_is_the_euler_scheduler():
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    s = diffusers_sampler(tiny_pipeline(sch), PROMPT, guidance_scale=1.0, steps=3, eta=0.0)
    ref = copy.deepcopy(sch)
    ref.set_timesteps(3)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = s.model_output(x, 0)
        torch.testing.assert_close(s.step(x, 0, None, None).x_next, ref.step(v, ref.timesteps[0], x).prev_sample)


def test_checkpointing_and_sliced_decode_change_nothing_but_memory(pipe_dir):
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    grads, images = [], []
    for kw in ({}, {"checkpoint": True, "decode_batch": 1}):
        gen = from_diffusers(load_pipeline(pipe_dir), PROMPT, steps=2, **kw)
        zz = z.clone().requires_grad_(True)
        x = gen(zz)
        (x * torch.linspace(0, 1, x.numel()).view_as(x)).sum().backward()
        grads.append(zz.grad)
        images.append(x.detach())
    torch.testing.assert_close(images[0], images[1])
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


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


def test_best_of_n_and_reno_improve_the_clip_score_with_exact_budgets(pipe_dir, clip_reward):
    gen = from_diffusers(str(pipe_dir), PROMPT, steps=1)
    bon = best_of_n(gen, clip_reward, n=1, candidates=8, batch_size=4, seed=0, progress=False)
    assert bon.spent["nfe"] == 8 and bon.spent["reward_calls"] == 8
    assert float(bon.scores[0]) > float(bon.initial_scores[0])
    res = reno(gen, clip_reward, n=2, iters=6, lr=5.0, seed=0, progress=False)
    assert res.spent["nfe"] == 2 * 7 and res.spent["backward"] == 2 * 6 and res.spent["reward_calls"] == 2 * 7
    assert (res.scores > res.initial_scores + 0.5).all(), (res.initial_scores, res.scores)
    capped = reno(gen, clip_reward, n=2, iters=6, budget=Budget(nfe=6), seed=0, progress=False)
    assert capped.spent["nfe"] <= 6 and capped.stopped.startswith("budget")


def test_reno_in_bfloat16_keeps_fp32_noise(pipe_dir, clip_reward):
    gen = from_diffusers(str(pipe_dir), PROMPT, steps=1, dtype=torch.bfloat16, checkpoint=True)
    assert next(gen.parameters()).dtype == torch.bfloat16
    res = reno(gen, clip_reward, n=1, iters=2, seed=0, progress=False)
    assert res.noises.dtype == torch.float32 and torch.isfinite(res.scores).all()


def test_missing_weights_give_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="hf download stabilityai/sd-turbo"):
        from_diffusers("stabilityai/sd-turbo", PROMPT)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(WeightsError, match="save_pretrained"):
        load_pipeline(tmp_path)
    with pytest.raises(WeightsError, match="CLIP model"):
        CLIPFeatures.load("openai/clip-vit-large-patch14")
    with pytest.raises(RewardsteerError, match="not supported"):
        from diffusers import PNDMScheduler

        diffusers_sampler(tiny_pipeline(PNDMScheduler()), PROMPT)


def test_cli_steers_a_pipeline_with_a_clip_reward(pipe_dir, clip_dir, tmp_path, capsys):
    from rewardsteer.cli import main

    out = tmp_path / "run"
    main(["run", "--pipeline", str(pipe_dir), "--prompt", PROMPT, "--reward", f"clip:{clip_dir}",
          "--reward", "suppress:a dog", "--heldout", "jpeg", "--method", "reno", "--iters", "3", "--n", "1",
          "--device", "cpu", "--no-progress", "--out", str(out)])
    meta = json.loads((out / "result.json").read_text())
    assert meta["method"] == "reno" and meta["spent"]["nfe"] == 4 and meta["spent"]["backward"] == 3
    assert set(meta["member_scores"]) == {f"clip:{clip_dir}", "suppress:a dog"} and "jpeg" in meta["heldout_scores"]
    assert (out / "grid.png").is_file()


def test_cli_particle_method_on_a_pipeline(pipe_dir, clip_dir, tmp_path):
    from rewardsteer.cli import main

    out = tmp_path / "fk"
    main(["run", "--pipeline", str(pipe_dir), "--prompt", PROMPT, "--reward", f"clip:{clip_dir}", "--method", "fk",
          "--particles", "2", "--n", "1", "--steps", "3", "--device", "cpu", "--no-progress", "--out", str(out)])
    meta = json.loads((out / "result.json").read_text())
    assert meta["method"] == "fk_steering" and meta["spent"]["nfe"] == 1 * 2 * 3


@pytest.mark.parametrize("args,message", [
    (["--reward", "clip:stabilityai/nothing-here"], "could not load CLIP model"),
    (["--reward", "jpeg", "--prompt", ""], "needs --prompt"),
    (["--prompt", PROMPT], "needs --reward"),
    (["--reward", "head:h.safetensors"], "needs a CLIP model"),
    (["--reward", "bogus"], "unknown reward 'bogus'"),
    (["--reward", "jpeg", "--dtype", "fp16"], "fp16 is not supported on CPU"),
])
def test_cli_errors_are_one_line_exit_2(pipe_dir, args, message, capsys):
    from rewardsteer.cli import main

    argv = ["run", "--pipeline", str(pipe_dir), "--device", "cpu", "--no-progress"]
    argv += args if "--prompt" in args else [*args, "--prompt", PROMPT]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1, err


def test_cli_missing_pipeline_weights(tmp_path, capsys):
    from rewardsteer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--pipeline", "stabilityai/sd-turbo", "--prompt", PROMPT, "--reward", "jpeg", "--device", "cpu",
              "--method", "best_of_n", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "hf download stabilityai/sd-turbo" in err and len(err.splitlines()) == 1


def test_gpu_benchmark_smoke_mode(tmp_path):
    """benchmarks/gpu_reno.py runs end to end on tiny configs (the real run needs CUDA)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "gpu_reno.py"
    spec = importlib.util.spec_from_file_location("gpu_reno", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--iters", "1", "--out", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(r["dtype"], r["checkpoint"]) for r in rows] == [("fp32", False), ("fp32", True)]
    assert all(r["backward"] == 1 and r["skipped"] == 0 for r in rows)
    assert rows[0]["score"] == rows[1]["score"]  # checkpointing changes memory and time, not results
    if not torch.cuda.is_available():
        assert bench.main([]) == 2


@pytest.mark.parametrize("name", ["fk_steering", "das"])
def test_particle_method_on_a_diffusers_sampler(pipe_dir, clip_reward, name):
    """FK steering / DAS on the DDPM sampler, end to end, at the NFE the method says it spends; with pick="best"
    each slot returns the highest CLIP score among its K final particles (deterministic, unlike "more particles
    beat one", which holds only on average)."""
    from rewardsteer.methods import METHODS

    pipe = load_pipeline(pipe_dir)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    sampler = diffusers_sampler(pipe, PROMPT, guidance_scale=1.0, steps=4, eta=1.0)
    final = {}
    many = METHODS[name](sampler, clip_reward, n=3, particles=4, pick="best", seed=0, progress=False,
                         callback=lambda s: final.update(s) if s["final"] else None)
    assert many.samples.shape == (3, 3, 16, 16) and many.spent["nfe"] == 3 * 4 * sampler.num_steps
    assert final["scores"].shape == (3, 4)
    torch.testing.assert_close(many.scores, final["scores"].max(1).values.float())
    torch.testing.assert_close(clip_reward(many.samples), many.scores, atol=1e-4, rtol=1e-4)
