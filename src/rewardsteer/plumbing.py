"""Pieces every method shares: checked inputs, chunked scoring, best-so-far tracking, partial results."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from .budget import Meter
from .core import Reward, select_cond
from .errors import RewardsteerError
from .report import nonfinite_warning
from .result import JUDGE_HIT_SUFFIX, JUDGES_AGREE, Result
from .rewards.base import as_reward
from .rewards.monitors import BAND_SUFFIX
from .wrap import RewardsteerWarning


def check_noise(noise: Any, generator, method: str) -> torch.Tensor:
    """Given initial noises: a (B, *noise_shape) tensor."""
    shape = tuple(generator.noise_shape)
    if not isinstance(noise, torch.Tensor) or noise.ndim != len(shape) + 1 or tuple(noise.shape[1:]) != shape \
            or noise.shape[0] < 1:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise RewardsteerError(f"{method}: noise must be a (B, {', '.join(map(str, shape))}) tensor (B noises of the "
                               f"generator's noise_shape); got {got}")
    return noise


def prepare(reward: Any, heldout: Mapping[str, Any] | None, need_grad: bool, method: str):
    if reward is None or not (isinstance(reward, Reward) or callable(reward)):
        raise RewardsteerError(f"{method} needs a reward: a rewardsteer.Reward or a callable fn(samples, cond) -> (B,); "
                               f"got {type(reward).__name__}")
    if heldout is not None and not isinstance(heldout, Mapping):
        raise RewardsteerError(f"{method}: heldout must be a dict {{name: reward}}; got {type(heldout).__name__}")
    reward = as_reward(reward)
    if need_grad and not reward.differentiable:
        raise RewardsteerError(f"{method} needs a differentiable reward and '{reward.name}' is not; "
                               "use best_of_n or zero_order_search")
    heldout = {name: as_reward(r, name) for name, r in (heldout or {}).items()}
    return reward, heldout


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def score(reward: Reward, samples: torch.Tensor, cond: Any, meter: Meter):
    """(objective (B,), members) for a batch, charging B reward calls; non-finite scores stay as they are."""
    meter.charge(reward_calls=samples.shape[0])
    obj, members = reward.evaluate(samples, cond)
    return obj, members


@torch.no_grad()
def score_heldout(heldout: Mapping[str, Reward], samples: torch.Tensor, cond: Any, meter: Meter) -> dict:
    """Held-out monitors on the same samples: never optimized, counted apart from the budget.

    A held-out classifier (a judge: anything with `score_and_hits`) also reports, per sample, whether its top
    class is the target (`NAME/acc`, 1.0 or 0.0, so its mean is the judge's accuracy), and `judges_agree` is 1
    where every judge assigns the sample to the target: a claim stands only if all judges support it. A realism
    monitor with a band (`score_and_band`) reports `NAME/in_band`, 1 where the sample lies in the real-data band.
    """
    meter.heldout_calls += samples.shape[0] * len(heldout)
    samples, out, hits = samples.detach(), {}, []
    for name, r in heldout.items():
        if hasattr(r, "score_and_hits"):
            out[name], hit = r.score_and_hits(samples, cond)
            out[name + JUDGE_HIT_SUFFIX] = hit.float()
            hits.append(hit)
        elif hasattr(r, "score_and_band"):  # realism: also whether each sample lies in the real-data band
            out[name], band = r.score_and_band(samples, cond)
            if band is not None:
                out[name + BAND_SUFFIX] = band.float()
        else:
            out[name] = r(samples, cond)
    if hits:
        out[JUDGES_AGREE] = torch.stack(hits).all(0).float()
    return {k: v.float() for k, v in out.items()}


@torch.no_grad()
def generate_and_score(generator, reward: Reward, z: torch.Tensor, cond: Any, meter: Meter, chunk: int):
    """Samples, objective and member scores for noises z, `chunk` at a time (memory stays flat in N)."""
    outs, objs, members = [], [], {}
    n = z.shape[0]
    for i in range(0, n, chunk):
        c = select_cond(cond, slice(i, i + chunk), n)
        x = generator(z[i:i + chunk], c)
        meter.charge(nfe=x.shape[0] * generator.nfe_per_call)
        obj, mem = score(reward, x, c, meter)
        meter.skipped += int((~torch.isfinite(obj)).sum())  # such candidates rank last, never first
        outs.append(x)
        objs.append(obj.float())
        for k, v in mem.items():
            members.setdefault(k, []).append(v.float())
    return torch.cat(outs), torch.cat(objs), {k: torch.cat(v) for k, v in members.items()}


def finite_or_neg_inf(scores: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))


class BestPerSlot:
    """Best-so-far per independent slot (one per noise / pivot); a NaN score never replaces a best."""

    def __init__(self):
        self.scores = None

    def update(self, scores, samples, noises, members: dict, heldout: dict, cond=None) -> torch.Tensor:
        scores = finite_or_neg_inf(scores.detach().float())
        if self.scores is None:
            self.scores, self.samples, self.noises = scores.clone(), samples.detach().clone(), noises.detach().clone()
            self.members = {k: v.detach().float().clone() for k, v in members.items()}
            self.heldout = {k: v.clone() for k, v in heldout.items()}
            return torch.ones_like(scores, dtype=torch.bool)
        better = scores > self.scores
        self.scores = torch.where(better, scores, self.scores)
        self.samples[better] = samples.detach()[better].to(self.samples.dtype)
        self.noises[better] = noises.detach()[better].to(self.noises.dtype)
        for k, v in members.items():
            self.members[k] = torch.where(better, v.detach().float(), self.members[k])
        for k, v in heldout.items():
            self.heldout[k] = torch.where(better, v, self.heldout[k])
        return better


def trace_entry(iteration: int, meter: Meter, scores: torch.Tensor, members: dict, heldout: dict, **extra) -> dict:
    """One row of a trace: means over the batch (non-finite scores left out) plus what was spent so far."""
    def mean(t):
        t = t.detach().float()
        t = t[torch.isfinite(t)]
        return float(t.mean()) if t.numel() else float("nan")

    def sd(t):  # the spread across the batch: the monitor's yardstick for a held-out score's noise
        t = t.detach().float()
        t = t[torch.isfinite(t)]
        return float(t.std()) if t.numel() > 1 else float("nan")

    row = {"iteration": iteration, "nfe": meter.nfe, "backward": meter.backward, "reward_calls": meter.reward_calls,
           "seconds": round(meter.seconds, 4), "score": mean(scores),
           "score_max": float(finite_or_neg_inf(scores.detach().float()).max()),
           "members": {k: mean(v) for k, v in members.items()}, "heldout": {k: mean(v) for k, v in heldout.items()}}
    if heldout:
        row["heldout_sd"] = {k: sd(v) for k, v in heldout.items()}
        row["heldout_n"] = int(next(iter(heldout.values())).numel())
    row.update({k: (mean(v) if isinstance(v, torch.Tensor) else v) for k, v in extra.items()})
    return row


def build_result(method: str, best: BestPerSlot, initial: dict, trace: list, meter: Meter, stopped: str,
                 config: dict) -> Result:
    """The Result; a run that returns fewer outputs than `config["n"]` asked for warns (RewardsteerWarning) and
    says so in its summary (`Result.shortfall`), never silently."""
    if best.scores is None:
        raise RewardsteerError(f"{method} evaluated nothing ({stopped}): the budget is smaller than one evaluation")
    result = Result(method, best.samples, best.noises, best.scores, best.members, best.heldout,
                    initial["samples"], initial["scores"], initial["heldout"], trace, meter.spent(), stopped, config)
    if meter.skipped or not bool(torch.isfinite(result.scores.float()).all()):
        warnings.warn(f"{method}: {nonfinite_warning(result)}", RewardsteerWarning, stacklevel=4)
    if result.shortfall:
        warnings.warn(f"{method} returned {len(result.samples)} of the n={config['n']} outputs asked for "
                      f"(stopped: {stopped})", RewardsteerWarning, stacklevel=4)
    return result


def run_guarded(loop, finish):
    """Run `loop()`; on Ctrl-C return the partial result, on any other error attach it to the exception.

    `loop` returns the stop reason; `finish(stopped)` builds the Result from whatever state exists.
    """
    try:
        stopped = loop()
    except KeyboardInterrupt:
        return finish("interrupted")
    except Exception as e:
        try:
            e.partial_result = finish(f"error: {type(e).__name__}: {e}")
        except Exception:  # nothing was scored yet: there is no partial result to keep
            e.partial_result = None
        raise
    return finish(stopped)
