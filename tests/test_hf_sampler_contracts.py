"""Contracts of the diffusers sampler (hf/sampler.py) that the image-equality tests in test_hf.py do not pin:
documented defaults, arguments that reach the sampler, dtype and device handling, frozen weights, every
prediction type and sample clipping against the scheduler's own step, CFG rows, chunked decoding, refusals."""

import copy
import types

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler  # noqa: E402

from rewardsteer.errors import RewardsteerError  # noqa: E402
from rewardsteer.hf import diffusers_sampler, from_diffusers  # noqa: E402
from rewardsteer.hf.pipelines import pipeline_family  # noqa: E402
from rewardsteer.hf.sampler import DiffusersSampler, enable_checkpointing, path_coefficients, vae_scale_factor  # noqa: E402
from tests.hf_tiny import PROMPT, SIZE, T5_LENGTH, tiny_flux, tiny_pipeline, tiny_sd3, tiny_sdxl  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def noise(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_path_coefficients_have_one_more_entry_than_steps_and_refuse_flow_settings_elsewhere():
    times, alpha, sigma, pred, init = path_coefficients(DDIMScheduler(), 4)
    assert (len(times), len(alpha), len(sigma), pred, init) == (4, 5, 5, "epsilon", 1.0)
    assert (alpha[-1], sigma[-1]) == (1.0, 0.0)
    with pytest.raises(RewardsteerError, match="FlowMatchEuler settings; DDIMScheduler takes neither"):
        path_coefficients(DDIMScheduler(), 4, sigmas=[1.0, 0.5])
    with pytest.raises(RewardsteerError, match="FlowMatchEuler settings"):
        path_coefficients(DDIMScheduler(), 4, mu=0.5)


def test_vae_scale_factor_is_two_to_the_number_of_downsamplings():
    vae = lambda n: types.SimpleNamespace(config=types.SimpleNamespace(block_out_channels=(8,) * n))  # noqa: E731
    assert [vae_scale_factor(vae(n)) for n in (1, 2, 4)] == [1, 2, 8]  # 8: the SD / SD3 / FLUX VAEs


def test_documented_defaults():
    """diffusers_sampler: 50 steps, η = 1, CFG 7.5 with an unconditional row, no checkpointing, one decode call;
    from_diffusers: 1 step, η = 0, guidance 0 (distilled models); FLUX: embedded guidance 3.5, no true CFG."""
    pipe = tiny_pipeline(DDIMScheduler())
    s = diffusers_sampler(pipe, PROMPT)
    assert (s.num_steps, s.eta, s.cfg_scale, s.cond_rows, s.decode_batch) == (50, 1.0, 7.5, 2, None)
    assert not pipe.unet.is_gradient_checkpointing
    gen = from_diffusers(pipe, PROMPT)
    assert (gen.sampler.num_steps, gen.sampler.eta, gen.sampler.cfg_scale, gen.sampler.cond_rows) == (1, 0.0, 0.0, 1)
    assert gen.checkpoint is False and gen.nfe_per_call == 1
    flux = tiny_flux(dev=True)
    for build in (diffusers_sampler, from_diffusers):  # a negative prompt alone does not switch true CFG on
        f = build(flux, PROMPT, negative_prompt="a dog", height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH)
        f = getattr(f, "sampler", f)
        assert (f.guidance_scale, f.cfg_scale, f.cond_rows) == (3.5, 1.0, 1)
    assert not flux.transformer.is_gradient_checkpointing


def test_arguments_reach_the_sampler():
    pipe = tiny_pipeline(DDIMScheduler())
    with_negative = diffusers_sampler(pipe, PROMPT, negative_prompt="a dog", guidance_scale=2.0, steps=3, eta=0.5)
    plain = diffusers_sampler(pipe, PROMPT, guidance_scale=2.0, steps=3)
    assert (with_negative.cfg_scale, with_negative.num_steps, with_negative.eta) == (2.0, 3, 0.5)
    uncond = with_negative.encoder_hidden_states
    assert not torch.allclose(uncond[0], plain.encoder_hidden_states[0])  # "a dog", not the empty prompt
    torch.testing.assert_close(uncond[1], plain.encoder_hidden_states[1])
    assert diffusers_sampler(pipe, PROMPT, guidance_scale=1.0, negative_prompt="a dog").cond_rows == 1  # no CFG at 1
    assert diffusers_sampler(pipe, PROMPT, guidance_scale=1.5).cond_rows == 2

    flux = tiny_flux(dev=True)
    f = diffusers_sampler(flux, PROMPT, negative_prompt="a dog", true_cfg_scale=2.0, height=SIZE, width=SIZE,
                          max_sequence_length=8, steps=2)
    assert (f.cfg_scale, f.cond_rows, f.encoder_hidden_states.shape[1]) == (2.0, 2, 8)
    g = from_diffusers(flux, PROMPT, negative_prompt="a dog", true_cfg_scale=2.0, height=SIZE, width=SIZE,
                       max_sequence_length=8, steps=2)
    assert (g.sampler.cfg_scale, g.sampler.cond_rows, g.sampler.encoder_hidden_states.shape[1], g.nfe_per_call) == \
        (2.0, 2, 8, 2)


def count_decodes(sampler):
    sizes = []
    decode = sampler.vae.decode  # decode is not forward (no hook): wrap the method

    def counted(z, *a, **k):
        sizes.append(z.shape[0])
        return decode(z, *a, **k)
    sampler.vae.decode = counted
    return sizes


@pytest.mark.parametrize("build", [diffusers_sampler, from_diffusers])
def test_decode_batch_and_checkpointing_reach_the_vae_and_unet(build):
    pipe = tiny_pipeline(DDIMScheduler())
    x = noise((5, 4, 8, 8))
    out = build(pipe, PROMPT, steps=1, decode_batch=2, checkpoint=True)
    s = getattr(out, "sampler", out)
    sizes = count_decodes(s)
    with torch.no_grad():
        chunked = s.decode(x)
    assert sizes == [2, 2, 1] and pipe.unet.is_gradient_checkpointing and pipe.vae.is_gradient_checkpointing
    if build is from_diffusers:
        assert out.checkpoint is True
    whole = build(tiny_pipeline(DDIMScheduler()), PROMPT, steps=1)
    whole = getattr(whole, "sampler", whole)
    sizes = count_decodes(whole)
    with torch.no_grad():
        torch.testing.assert_close(whole.decode(x), chunked)
    assert sizes == [5]  # decode_batch None: the whole batch in one call

    flux = diffusers_sampler(tiny_flux(), PROMPT, steps=1, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH,
                             decode_batch=5)
    sizes = count_decodes(flux)
    with torch.no_grad():
        flux.decode(x)
    assert sizes == [5]  # FLUX's default is one latent per call; an explicit decode_batch overrides it


def test_weights_are_frozen_and_prompt_encodings_are_not_saved_state():
    pipe = tiny_sdxl(DDIMScheduler(clip_sample=False))
    pipe.unet.requires_grad_(True)
    pipe.vae.requires_grad_(True)
    pipe.text_encoder.train()
    pipe.text_encoder_2.train()  # dropout off while the prompt is encoded
    s = diffusers_sampler(pipe, PROMPT, guidance_scale=2.0, steps=2)
    assert not any(p.requires_grad for p in (*s.unet.parameters(), *s.vae.parameters()))
    assert not pipe.text_encoder.training and not pipe.text_encoder_2.training
    assert not [k for k in s.state_dict() if k in ("encoder_hidden_states", "text_embeds", "time_ids")]
    sd3 = tiny_sd3()
    sd3.text_encoder_3.train()
    from_diffusers(sd3, PROMPT, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH)
    assert not sd3.text_encoder_3.training


def test_bad_steps_eta_and_sizes_are_refused_each_alone():
    pipe = tiny_pipeline(DDIMScheduler())
    for kw in (dict(steps=0), dict(eta=-0.5)):
        with pytest.raises(RewardsteerError, match="steps must be >= 1 and eta >= 0"):
            diffusers_sampler(pipe, PROMPT, **kw)
    for h, w in ((15, 16), (16, 15)):
        with pytest.raises(RewardsteerError, match=f"multiples of 2; got {h}x{w}"):
            diffusers_sampler(pipe, PROMPT, height=h, width=w)


def test_dtype_is_parsed_applied_and_checked_before_anything_moves():
    pipe = tiny_pipeline(DDIMScheduler())
    with pytest.raises(RewardsteerError, match="fp16 is not supported on CPU"):
        diffusers_sampler(pipe, PROMPT, dtype="fp16", device="cpu")
    assert pipe.unet.dtype == torch.float32  # refused before the weights moved
    with pytest.raises(RewardsteerError, match="fp16 is not supported on CPU"):  # already in fp16: found anyway
        diffusers_sampler(copy.deepcopy(pipe).to(torch.float16), PROMPT)

    s = diffusers_sampler(pipe, PROMPT, dtype="bf16", steps=2, guidance_scale=2.0)
    assert s.unet.dtype == s.vae.dtype == torch.bfloat16
    x = noise((2, 4, 8, 8))
    with torch.no_grad():
        out = s.step(x, 0, None, noise(x.shape, 1))  # fp32 states through a bf16 UNet
        img = s.decode(out.x0_pred)
    assert out.x0_pred.dtype == out.x_next.dtype == img.dtype == torch.float32
    gen = from_diffusers(tiny_pipeline(DDIMScheduler()), PROMPT, dtype=torch.float64)
    assert gen.sampler.unet.dtype == torch.float64
    with torch.no_grad():  # states in float64 through a float32 sampler come back in float64
        f32 = diffusers_sampler(tiny_pipeline(DDIMScheduler()), PROMPT, steps=2)
        assert f32.predict_x0(x.double(), 0).dtype == f32.decode(x.double()).dtype == torch.float64


def test_euler_noise_is_standard_normal_times_diffusers_initial_scale():
    s = diffusers_sampler(tiny_pipeline(EulerDiscreteScheduler(timestep_spacing="trailing")), PROMPT, steps=2)
    assert 0.99 < s.init_scale < 1.0  # σ_0/√(1 + σ_0²) for "trailing" spacing
    x = s.sample_noise(3, torch.Generator().manual_seed(4))
    torch.testing.assert_close(x, noise((3, 4, 8, 8), 4) * s.init_scale, rtol=0, atol=0)
    assert s.sample_noise(2, torch.Generator().manual_seed(0), dtype=torch.float64).dtype == torch.float64


def scheduler_reference(s, scheduler, x, i, steps):
    ref = copy.deepcopy(scheduler)
    ref.set_timesteps(steps)
    return ref.step(s.model_output(x, i), ref.timesteps[i], x, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("scheduler", [
    DDIMScheduler(prediction_type="v_prediction", clip_sample=False),
    DDIMScheduler(prediction_type="sample", clip_sample=False),
    DDPMScheduler(clip_sample=True, clip_sample_range=0.5),
], ids=["v_prediction", "sample", "clipped"])
def test_x0_prediction_equals_the_schedulers(scheduler):
    pipe = tiny_pipeline()
    pipe.scheduler = scheduler  # set after construction: the pipeline would switch clip_sample off
    s = diffusers_sampler(pipe, PROMPT, guidance_scale=1.0, steps=4)
    x = 3 * noise((2, 4, 8, 8))
    with torch.no_grad():
        ours = s.predict_x0(x, 0)
        ref = scheduler_reference(s, scheduler, x, 0, 4)
    torch.testing.assert_close(ours, ref.pred_original_sample, atol=1e-4, rtol=1e-4)
    if scheduler.config.clip_sample:
        assert float(ours.abs().max()) == pytest.approx(0.5)  # clipping was active, at ±clip_sample_range


def unet_batches(sampler):
    rows = []
    sampler.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    return rows


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_guidance_at_or_below_one_runs_the_conditional_row_only(scale):
    """An unconditional row is ignored unless cfg > 1: the UNet sees B rows and returns the conditional output."""
    pipe = tiny_pipeline(DDIMScheduler())
    with torch.no_grad():
        pe, ne = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="a dog")[:2]
    common = (pipe.unet, pipe.vae, pipe.scheduler)
    both = DiffusersSampler(*common, pe, ne, 2, scale, 1.0, 16, 16)
    cond_only = DiffusersSampler(*common, pe, None, 2, scale, 1.0, 16, 16)
    assert both.cond_rows == 2
    x = noise((3, 4, 8, 8))
    with torch.no_grad():
        expected = cond_only.model_output(x, 0)
        rows = unet_batches(both)  # the UNet both share: count from here on
        torch.testing.assert_close(both.model_output(x, 0), expected)
    assert rows == [3]


def test_long_unet_prompts_warn_once():
    long = "a red cat " * 6  # 61 tokens for the letter-level tokenizer, which keeps 16
    with pytest.warns(UserWarning, match="keeps 16: it is truncated"):
        diffusers_sampler(tiny_pipeline(DDIMScheduler()), long, steps=1)


def test_pipeline_family_refuses_what_it_cannot_drive_in_one_line():
    unet = lambda kind: types.SimpleNamespace(config=types.SimpleNamespace(addition_embed_type=kind))  # noqa: E731
    ok = types.SimpleNamespace(unet=unet(None), encode_prompt=None)
    assert pipeline_family(ok) == "unet"
    for pipe in (types.SimpleNamespace(), types.SimpleNamespace(unet=unet("image"), encode_prompt=None),
                 types.SimpleNamespace(unet=unet(None))):  # no UNet; an image-conditioned UNet; no prompt encoder
        with pytest.raises(RewardsteerError, match="is not supported; rewardsteer steers text-to-image pipelines"):
            pipeline_family(pipe)


def test_checkpointing_skips_modules_without_support():
    plain = torch.nn.Linear(2, 2)
    enable_checkpointing(plain)  # no _supports_gradient_checkpointing: left as it is
    assert not hasattr(plain, "gradient_checkpointing")


def test_a_saved_pipeline_loads_straight_in_the_requested_dtype(tmp_path, monkeypatch):
    """Not in fp32 first: a FLUX transformer in fp32 is twice its bf16 size in memory."""
    import rewardsteer.hf.pipelines as sampler_module

    tiny_pipeline(DDIMScheduler()).save_pretrained(tmp_path)
    seen, load = [], sampler_module.load_pipeline
    monkeypatch.setattr(sampler_module, "load_pipeline", lambda path, dtype=None: seen.append(dtype) or load(path, dtype))
    s = diffusers_sampler(str(tmp_path), PROMPT, dtype="bf16", steps=1)
    assert seen == [torch.bfloat16] and s.unet.dtype == torch.bfloat16
