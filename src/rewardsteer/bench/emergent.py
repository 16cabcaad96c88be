"""Measure the emergent-digit sampler (`models.emergent_sampler`) against issue 28's prior bars, record how its
digit is decided along the steps, and check that particle methods can now change the digit.

Notation as in `rewardsteer.bundled.emergent`: step i runs at t_i = i / T (0 = noise, 1 = data); π_t(c | x_t) is the
sampler's class posterior; x̂0 its x0-prediction; the *final class* is `mnist-judge`'s argmax on the sample.

Bars (issue 28, on 1,000 samples):
- confident: each judge's share of samples with max probability ≥ 0.9 is at least its share on real test digits
  less 2 points (`REAL_CONFIDENT`, docs/models.md);
- class shares: every digit's share under every judge in 7–13%;
- Fréchet distance in `mnist-judge` features to the 10k test digits ≤ 1.5× that of the same sampler's class-
  conditional samples (same steps, guidance, eta, number of samples).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import models
from ..bundled.data import load_mnist
from ..bundled.emergent import EmergentFlowSampler
from ..bundled.evaluation import frechet_distance, judge_outputs, prior_metrics
from ..bundled.flow import mixture_weights, split_code
from ..smc import das, fk_steering, svdd

REAL_CONFIDENT = {"mnist-judge": 0.989, "mnist-judge-vit": 0.967, "mnist-judge-rff": 0.937}  # real test digits
CONFIDENT_MARGIN = 0.02
CLASS_SHARE = (0.07, 0.13)
FRECHET_RATIO = 1.5


@dataclass
class Trajectories:
    """Samples with what was believed at every step: (N, 1, 28, 28) images in [0, 1]; (N, T, 10) π_t(c | x_t);
    (N, T) `mnist-judge`'s class of decode(x̂0); UNet rows spent; wall seconds."""

    images: torch.Tensor
    posterior: torch.Tensor
    x0_class: torch.Tensor
    rows: int
    seconds: float


@torch.no_grad()
def sample_with_decisions(sampler: EmergentFlowSampler, n: int, seed: int, judge: torch.nn.Module, batch: int = 100,
                          log: Callable[[str], None] | None = None) -> Trajectories:
    """n unconditional samples (cond=None), `batch` at a time, all noise from one generator seeded `seed`."""
    gen, rows0, start = torch.Generator().manual_seed(seed), sampler.rows, time.time()
    images, posts, x0_cls = [], [], []
    for first in range(0, n, batch):
        x = sampler.initial_state(min(batch, n - first), gen)  # (B, 1, 28, 28)
        post, cls = [], []
        for i in range(sampler.num_steps):
            post.append(sampler.class_posterior(x, sampler.time(i)))  # (B, 10), one extra small classifier call
            x0 = sampler.predict_x0(x, i, None)
            cls.append(judge(sampler.decode(x0)).argmax(1))
            dist = sampler.distribution(x, i, x0)
            x = dist.sample(None if dist.deterministic else dist.draw_noise(gen))
        images.append(sampler.decode(x))
        posts.append(torch.stack(post, 1))  # (B, T, 10)
        x0_cls.append(torch.stack(cls, 1))  # (B, T)
        if log:
            done = first + x.shape[0]
            log(f"{done}/{n} samples, {time.time() - start:.0f} s, "
                f"{(sampler.rows - rows0) / done:.1f} UNet rows per sample")
    return Trajectories(torch.cat(images), torch.cat(posts), torch.cat(x0_cls), sampler.rows - rows0,
                        time.time() - start)


@torch.no_grad()
def conditional_samples(sampler: EmergentFlowSampler, n: int, seed: int, batch: int = 100) -> tuple[torch.Tensor, dict]:
    """n guided class-conditional samples of the same sampler (classes 0..9 in turn): the Fréchet reference."""
    gen, rows0, start = torch.Generator().manual_seed(seed), sampler.rows, time.time()
    labels = torch.arange(n) % 10
    out = [sampler.sample(sampler.initial_state(len(y), gen), y, gen) for y in labels.split(batch)]
    return torch.cat(out), {"rows_per_sample": (sampler.rows - rows0) / n, "seconds": round(time.time() - start, 1)}


def reference_features(judge: torch.nn.Module, n: int | None = None) -> torch.Tensor:
    """`mnist-judge` features of the MNIST test digits (all 10k, or the first n): the Fréchet reference set."""
    return judge_outputs(judge, load_mnist().test.images[:n])[0]


def frechet_to_test(judge: torch.nn.Module, images: torch.Tensor, reference: torch.Tensor) -> float:
    return frechet_distance(judge_outputs(judge, images)[0], reference)


@torch.no_grad()
def prior_measurements(images: torch.Tensor, judges: dict[str, torch.nn.Module], reference: torch.Tensor) -> dict:
    """Each judge's confident share and class shares (`prior_metrics`), the Fréchet distance in `mnist-judge`
    features to `reference` (`reference_features`), and the mean realism (`models.realism_monitor`)."""
    return {"n": len(images), "metrics": prior_metrics(judges, images),
            "frechet_judge": frechet_to_test(judges["mnist-judge"], images, reference),
            "realism_mean": float(models.realism_monitor().score(images).mean())}


def bars(measured: dict, conditional_frechet: float | None) -> dict:
    """Which bars `prior_measurements` meets: {judge: {confident, class_shares}, frechet} (None: not measurable),
    the Fréchet ratio, and whether every bar is met."""
    metrics = measured["metrics"]
    ratio = None if not conditional_frechet else measured["frechet_judge"] / conditional_frechet
    out = {name: {"confident": metrics[name]["confident"] >= REAL_CONFIDENT[name] - CONFIDENT_MARGIN,
                  "class_shares": CLASS_SHARE[0] <= metrics[name]["class_share_min"]
                  and metrics[name]["class_share_max"] <= CLASS_SHARE[1]}
           for name in metrics if name in REAL_CONFIDENT}
    out["frechet"] = None if ratio is None else ratio <= FRECHET_RATIO
    flat = [v for b in out.values() for v in (b.values() if isinstance(b, dict) else [b])]
    return {"bars": out, "frechet_over_conditional": ratio, "all_bars_met": all(v is True for v in flat)}


def decision_curve(sampler: EmergentFlowSampler, traj: Trajectories, final: torch.Tensor) -> dict:
    """Per step: P(argmax π_t = final class), P(class of decode(x̂0) = final class), mean π_t(final class)."""
    steps = traj.posterior.shape[1]
    return {"t": [sampler.time(i) for i in range(steps)],
            "p_xt_class_is_final": traj.posterior.argmax(2).eq(final[:, None]).float().mean(0).tolist(),
            "p_x0_class_is_final": traj.x0_class.eq(final[:, None]).float().mean(0).tolist(),
            "mean_posterior_of_final": traj.posterior.gather(2, final[:, None, None].expand(-1, steps, 1))
            .squeeze(2).mean(0).tolist()}


@torch.no_grad()
def step0_class(sampler, x: torch.Tensor) -> torch.Tensor:
    """The class predicted at step 0 from x_0: argmax π_0(c | x_0) for the emergent sampler; for the mixture prior
    the digit of the class code (`flow.mixture_weights`), fixed from then on."""
    if isinstance(sampler, EmergentFlowSampler):
        return sampler.class_posterior(x, 0.0).argmax(1)
    image, code = split_code(x)
    return mixture_weights(code, sampler.temperature)[:, :10].argmax(1)


@torch.no_grad()
def unsteered_ode_class(sampler, x: torch.Tensor, judge: torch.nn.Module) -> torch.Tensor:
    """`mnist-judge`'s class of the deterministic (eta = 0) sample from x_0: what the start noise alone decides."""
    eta, sampler.eta = sampler.eta, 0.0
    try:
        return judge(sampler.sample(x, None)).argmax(1)
    finally:
        sampler.eta = eta


METHODS = {"fk": fk_steering, "svdd": svdd, "das": das}  # each with its defaults (FK: max potential, λ = 10)


def particle_run(method: str, sampler, reward, target: int, n: int, particles: int, seed: int,
                 judges: dict[str, torch.nn.Module]) -> dict:
    """One particle method toward `target` (cond=None): where its outputs land and how often their class differs
    from the class their ancestor x_0 had at step 0 (the sampler's own prediction, and the unsteered ODE's)."""
    rows0, start = getattr(sampler, "rows", 0), time.time()
    res = METHODS[method](sampler, reward, n=n, particles=particles, seed=seed, progress=False)
    seconds, nfe = time.time() - start, res.spent.get("nfe", 0)
    # the emergent sampler counts its UNet rows; the guided mixture prior spends 2 rows per NFE (1 without guidance)
    rows = sampler.rows - rows0 if hasattr(sampler, "rows") else nfe * (1 if sampler.guidance == 1.0 else 2)
    with torch.no_grad():
        final = {name: net(res.samples).argmax(1) for name, net in judges.items()}
    cnn = final["mnist-judge"]
    at0, ode = step0_class(sampler, res.noises), unsteered_ode_class(sampler, res.noises, judges["mnist-judge"])
    agree = torch.stack([c == target for c in final.values()]).all(0)
    return {"method": method, "n": n, "particles": particles, "seconds": round(seconds, 1),
            "library_nfe_per_output": nfe / n, "unet_rows_per_output": rows / n,
            "judges_agree_target": float(agree.float().mean()), "cnn_target_rate": float((cnn == target).float().mean()),
            "differs_from_step0_class": float((cnn != at0).float().mean()),
            "differs_from_unsteered_ode_class": float((cnn != ode).float().mean()),
            "step0_classes": at0.tolist(), "unsteered_ode_classes": ode.tolist(), "returned_classes": cnn.tolist()}


def particle_check(samplers: dict[str, Any], methods: list[str], target: int, n: int, particles: int, seed: int,
                   judges: dict[str, torch.nn.Module], log: Callable[[str], None] | None = None) -> list[dict]:
    """Every method on every sampler ({name: stochastic sampler}), the reward log p(target | x) under the 5 proxies."""
    rows = []
    for name, sampler in samplers.items():
        for method in methods:
            row = {"sampler": name, **particle_run(method, sampler, models.proxy_ensemble(target=target), target, n,
                                                   particles, seed, judges)}
            rows.append(row)
            if log:
                log(" ".join(f"{k}={v}" for k, v in row.items() if not k.endswith("classes")))
    return rows
