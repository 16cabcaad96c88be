"""FLUX.1 and SD3 pipelines, offline on CPU: tiny config-built pipelines (CLIP and T5 tokenizers built in memory,
tests/hf_tiny.py), saved with save_pretrained and loaded back; methods on them; the bad-input errors."""

import json
import warnings

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    FluxPipeline,
    StableDiffusion3Pipeline,
)

from rewardsteer import reno  # noqa: E402
from rewardsteer.errors import RewardsteerError  # noqa: E402
from rewardsteer.hf import (  # noqa: E402
    CLIPFeatures,
    FluxSampler,
    SD3Sampler,
    diffusers_sampler,
    from_diffusers,
    load_pipeline,
    pickscore,
)
from rewardsteer.hf.mmdit import pack_latents, unpack_latents  # noqa: E402
from tests.hf_tiny import (  # noqa: E402
    PROMPT,
    SIZE,
    T5_LENGTH,
    tiny_flux,
    tiny_sd3,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-flux-dev")
    tiny_flux(dev=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-sd3")
    tiny_sd3().save_pretrained(path)
    return path


CASES = {  # name: (pipeline, our keyword arguments, diffusers' __call__ keyword arguments)
    "flux-schnell": (lambda: tiny_flux(), dict(steps=2), dict(num_inference_steps=2, guidance_scale=0.0)),
    "flux-dev": (lambda: tiny_flux(dev=True), dict(steps=3, guidance_scale=3.5),
                 dict(num_inference_steps=3, guidance_scale=3.5)),
    "flux-dev-true-cfg": (lambda: tiny_flux(dev=True), dict(steps=2, guidance_scale=3.5, true_cfg_scale=2.0,
                                                            negative_prompt="a dog"),
                          dict(num_inference_steps=2, guidance_scale=3.5, true_cfg_scale=2.0, negative_prompt="a dog")),
    "sd3-cfg": (lambda: tiny_sd3(), dict(steps=2, guidance_scale=4.0, negative_prompt="a dog"),
                dict(num_inference_steps=2, guidance_scale=4.0, negative_prompt="a dog")),
    "sd3-turbo": (lambda: tiny_sd3(), dict(steps=1, guidance_scale=0.0), dict(num_inference_steps=1, guidance_scale=0.0)),
}


def diffusers_images(pipe, z, **call):
    """diffusers' own __call__ from the same latents (FLUX takes them packed)."""
    latents = pack_latents(z.clone()) if isinstance(pipe, FluxPipeline) else z.clone()
    with torch.no_grad():
        return pipe(PROMPT, height=SIZE, width=SIZE, num_images_per_prompt=z.shape[0], latents=latents, output_type="pt",
                    max_sequence_length=T5_LENGTH, **call).images


@pytest.mark.parametrize("case", list(CASES))
def test_generator_matches_the_diffusers_pipeline(case):
    """Same latents, same image as diffusers' __call__: FLUX's packing, σ = t/1000 timesteps, guidance embedding,
    dynamic shift μ and true CFG; SD3's CFG with a negative prompt and pooled projections; both VAE decodes."""
    build, ours, call = CASES[case]
    pipe = build()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    gen = from_diffusers(pipe, PROMPT, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH, **ours)
    assert gen.noise_shape == (4, 8, 8) and gen.nfe_per_call == ours["steps"]
    with torch.no_grad():
        x = gen(z)
    ref = diffusers_images(pipe, z, **call)
    assert x.shape == (2, 3, SIZE, SIZE) and float(x.std()) > 0.05  # a lively image, not a constant
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_saved_pipelines_reload_and_match(family, flux_dir, sd3_dir):
    """save_pretrained -> rewardsteer's loader (safetensors only) -> the same images as the in-memory pipeline."""
    folder, pipe = (flux_dir, tiny_flux(dev=True)) if family == "flux" else (sd3_dir, tiny_sd3())
    assert isinstance(load_pipeline(folder), FluxPipeline if family == "flux" else StableDiffusion3Pipeline)
    assert any(folder.glob("transformer/*.safetensors"))
    kw = dict(steps=2, guidance_scale=3.5 if family == "flux" else 0.0)
    gen = from_diffusers(str(folder), PROMPT, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH, **kw)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gen(z), diffusers_images(pipe, z, num_inference_steps=2, guidance_scale=kw["guidance_scale"]))


def test_packing_is_diffusers_packing():
    z = torch.randn(2, 4, 8, 6)
    packed = pack_latents(z)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(z, 2, 4, 8, 6))
    torch.testing.assert_close(unpack_latents(packed, 8, 6), z)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_stochastic_sampler_interface_and_path_marginals(family):
    """The η = 1 sampler on FLUX-dev's shifted schedule and SD3's: x_next = mean + std·noise, stochastic until
    the last step, which lands on the x0-prediction; and with an exact x0-prediction each step keeps the flow
    path's marginals N((1 − σ)·x̂, σ²) (20k draws per step): the SDE conversion FK / DAS / SVDD rely on."""
    pipe = tiny_flux(dev=True) if family == "flux" else tiny_sd3()
    s = diffusers_sampler(pipe, PROMPT, steps=4, eta=1.0, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH)
    assert isinstance(s, FluxSampler if family == "flux" else SD3Sampler) and s.state_shape == (4, 8, 8)
    assert s.sigmas[0] == 1.0 and all(a + b == pytest.approx(1.0) for a, b in zip(s.alphas, s.sigmas, strict=True))
    rng = torch.Generator().manual_seed(0)
    x = s.sample_noise(2, rng)
    with torch.no_grad():
        for i in range(s.num_steps):
            noise = torch.randn(x.shape, generator=rng)
            out = s.step(x, i, None, noise)
            torch.testing.assert_close(out.x_next, out.mean + out.std * noise)
            assert (float(out.std) > 0) == (i < s.num_steps - 1)
            x = out.x_next
        torch.testing.assert_close(x, out.x0_pred)
    x0 = torch.full((20000, 1), 0.7)
    for i in range(s.num_steps - 1):
        xt = s.alphas[i] * x0 + s.sigmas[i] * torch.randn(x0.shape, generator=rng)
        mean, std = s.transition(xt, i, x0)
        nxt = mean + std * torch.randn(x0.shape, generator=rng)
        assert abs(float(nxt.mean()) - s.alphas[i + 1] * 0.7) < 0.02 and abs(float(nxt.std()) - s.sigmas[i + 1]) < 0.02


def test_gradients_checkpointing_and_sliced_decode_agree():
    """Differentiable in the initial latent through 2 FLUX steps; per-step + per-block checkpointing and a VAE
    decoding one latent at a time (the FLUX / SD3 default) change memory only, not images or gradients."""
    pipe = tiny_flux(dev=True)
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    grads, images = [], []
    for kw in ({"decode_batch": 3}, {"checkpoint": True}):
        gen = from_diffusers(pipe, PROMPT, steps=2, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH, **kw)
        zz = z.clone().requires_grad_(True)
        x = gen(zz)
        (x * torch.linspace(0, 1, x.numel()).view_as(x)).sum().backward()
        grads.append(zz.grad)
        images.append(x.detach())
    assert gen.sampler.decode_batch == 1 and pipe.transformer.gradient_checkpointing
    assert torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    torch.testing.assert_close(images[0], images[1])
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_reno_in_bfloat16_keeps_fp32_master_noise(clip_dir):
    """bf16 transformer, VAE and reward; the noise ReNO optimizes stays fp32 and every step runs (no skips)."""
    gen = from_diffusers(tiny_flux(), PROMPT, steps=1, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH,
                         dtype="bf16", checkpoint=True)
    seen = []
    gen.sampler.transformer.register_forward_hook(lambda m, args, kw, out: seen.append(kw["hidden_states"].dtype),
                                                  with_kwargs=True)
    features = CLIPFeatures.load(clip_dir, dtype="bf16")
    res = reno(gen, pickscore(features, PROMPT), n=1, iters=2, seed=0, progress=False)
    assert res.noises.dtype == torch.float32 and set(seen) == {torch.bfloat16}
    assert torch.isfinite(res.scores).all() and res.spent["skipped"] == 0 and res.spent["backward"] == 2


@pytest.mark.parametrize("name", ["fk_steering", "das", "svdd"])
def test_particle_methods_run_on_flux(name, clip_dir):
    """FK steering, DAS and SVDD take the stochastic FLUX sampler as they take any Gaussian `Sampler`."""
    from rewardsteer.methods import METHODS

    sampler = diffusers_sampler(tiny_flux(), PROMPT, steps=2, eta=1.0, height=SIZE, width=SIZE,
                                max_sequence_length=T5_LENGTH)
    reward = pickscore(CLIPFeatures.load(clip_dir), PROMPT)
    res = METHODS[name](sampler, reward, n=1, particles=2, seed=0, progress=False)
    assert res.samples.shape == (1, 3, SIZE, SIZE) and torch.isfinite(res.scores).all()
    if name != "svdd":  # SVDD spends its own count (candidates per step); FK and DAS move every particle every step
        assert res.spent["nfe"] == 2 * sampler.num_steps


def test_long_prompts_are_truncated_with_one_warning_each(clip_dir):
    """A prompt over CLIP's 16 tokens and T5's 24: one warning per truncating tokenizer, saying how many tokens
    are kept and where the cut falls; diffusers' own truncation log lines are replaced by these."""
    import logging

    long = "a red cat " * 6  # 61 tokens for the letter-level CLIP tokenizer, 67 for T5
    logged, handler = [], logging.Handler()
    handler.emit = logged.append
    logging.getLogger("diffusers").addHandler(handler)  # diffusers' logger does not propagate: listen to it directly
    try:
        with pytest.warns(UserWarning) as record:
            s = diffusers_sampler(tiny_flux(), long, steps=1, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH)
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    messages = [str(w.message) for w in record if "truncated" in str(w.message)]
    assert len(messages) == 2, messages
    assert "keeps 16" in messages[0] and "text_encoder (" in messages[0] and "keeps 24" in messages[1]
    assert all(len(m.splitlines()) == 1 for m in messages)
    assert s.encoder_hidden_states.shape[1] == T5_LENGTH  # T5 encoded the first 24 tokens only
    assert not [r for r in logged if "truncated" in r.getMessage()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits warns nothing
        diffusers_sampler(tiny_flux(), PROMPT, steps=1, height=SIZE, width=SIZE, max_sequence_length=T5_LENGTH)
    features = CLIPFeatures.load(clip_dir)
    with pytest.warns(UserWarning, match="for the CLIP reward .* keeps 16"):
        features.texts([long])


def test_unsupported_pipelines_and_bad_placements_are_one_line():
    class PixArtPipeline:  # a transformer pipeline rewardsteer does not wire
        transformer = None

    with pytest.raises(RewardsteerError) as info:
        from_diffusers(PixArtPipeline(), PROMPT)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and "PixArtPipeline is not supported" in msg
    assert all(name in msg for name in ("FluxPipeline", "StableDiffusion3Pipeline", "StableDiffusionXLPipeline"))
    with pytest.raises(RewardsteerError, match="fp16 is not supported on CPU: use bf16 or fp32"):
        from_diffusers(tiny_sd3(), PROMPT, dtype="fp16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RewardsteerError, match="sees no CUDA GPU: pass device='cpu'"):
            from_diffusers(tiny_sd3(), PROMPT, device="cuda")
        with pytest.raises(RewardsteerError, match="no CUDA GPU"):
            CLIPFeatures.load("unused", device="cuda")
    pipe = tiny_flux()
    pipe.vae.to("meta")  # a component left on another device
    with pytest.raises(RewardsteerError, match=r"different devices \(.*vae on meta.*\): pass device="):
        from_diffusers(pipe, PROMPT)
    with pytest.raises(RewardsteerError, match="multiples of 4"):  # FLUX packs 2×2 latents of a 2× VAE
        from_diffusers(tiny_flux(), PROMPT, height=18, width=16)


def test_gpu_benchmark_smoke_mode_for_flux_and_sd3(tmp_path):
    """benchmarks/gpu_reno.py's FLUX-schnell and SD3.5-Large-Turbo configs run end to end at tiny sizes on CPU and
    write their JSON and the markdown table (the real run needs CUDA)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "gpu_reno.py"
    spec = importlib.util.spec_from_file_location("gpu_reno", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for model in ("flux-schnell", "sd3.5-large-turbo"):
        out = tmp_path / f"gpu_reno_{model}.json"
        assert bench.main(["--smoke", "--model", model, "--iters", "1", "--out", str(out)]) == 0
        meta = json.loads(out.read_text())
        assert meta["model"] == model and [r["checkpoint"] for r in meta["rows"]] == [False, True]
        assert all(r["backward"] == 1 and r["skipped"] == 0 and r["noise_dtype"] == "float32" for r in meta["rows"])
        assert meta["rows"][0]["score"] == meta["rows"][1]["score"]
    table = (tmp_path / "gpu_reno_sd3.5-large-turbo.md").read_text()
    assert "| flux-schnell (smoke)" in table and "| sd3.5-large-turbo (smoke)" in table  # both results, one table
    assert bench.MODELS["flux-schnell"]["denoiser"]["num_single_layers"] == 38  # the real FLUX.1 depth on GPU
