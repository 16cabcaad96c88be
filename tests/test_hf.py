"""Hugging Face integration, offline on CPU: tiny diffusers pipelines built from configs (tests/hf_tiny.py),
saved with save_pretrained and loaded back through rewardsteer's own loading code; methods and the CLI on them."""

import copy
import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)

from rewardsteer import Budget, best_of_n, reno  # noqa: E402
from rewardsteer.errors import RewardsteerError, WeightsError  # noqa: E402
from rewardsteer.hf import (  # noqa: E402
    CLIPFeatures,
    diffusers_sampler,
    from_diffusers,
    load_pipeline,
)
from tests.hf_tiny import (  # noqa: E402
    PROMPT,
    tiny_pipeline,
    tiny_sdxl,
)

pytestmark = pytest.mark.usefixtures("one_thread")


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
    (["--reward", f"head:{__file__}"], "needs a CLIP model"),  # a file that exists, but no CLIP named
    (["--reward", "head:h.safetensors@./no-clip"], "h.safetensors: no such folder or file"),
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


@pytest.mark.parametrize("kind", ["sdxl", "sd3"])
def test_hf_tiny_pipeline_writes_a_pipeline_and_a_clip_that_load_offline(kind, tmp_path, capsys):
    """`rewardsteer hf tiny-pipeline DIR --kind K`: a pipeline folder that from_diffusers loads and a CLIP folder that a
    reward loads; it prints commands to try (docs/diffusers.md runs the sd and flux kinds); an unwritable DIR is one
    line, exit 2."""
    from rewardsteer.cli import main
    from rewardsteer.hf import CLIPFeatures, CLIPScore

    main(["hf", "tiny-pipeline", str(tmp_path / "t"), "--kind", kind])
    assert f"rewardsteer run --pipeline {tmp_path / 't' / 'pipeline'}" in capsys.readouterr().out
    extra = {"max_sequence_length": 24} if kind == "sd3" else {}
    gen = from_diffusers(str(tmp_path / "t" / "pipeline"), PROMPT, height=16, width=16, **extra)
    x = gen(gen.sample_noise(1, torch.Generator().manual_seed(0)))
    score = CLIPScore(CLIPFeatures.load(tmp_path / "t" / "clip"), prompt=PROMPT)(x)
    assert x.shape == (1, 3, 16, 16) and torch.isfinite(score).all()
    (tmp_path / "file").write_text("")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["hf", "tiny-pipeline", str(tmp_path / "file" / "sub")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: cannot write to") and len(err.splitlines()) == 1
