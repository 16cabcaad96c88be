"""Over-optimization monitor: read a run's trace for the signature of reward hacking.

Reward hacking (Gao et al. 2023, "Scaling laws for reward model overoptimization") shows as the optimized
(proxy) score rising while a reward that was never optimized falls. Every method already scores its held-out
rewards at every trace row (`methods.common.score_heldout`), so the monitor is a post-hoc function of the
trace and works for every method without touching them:

- held-out rewards: the alarm fires when, within `window` consecutive rows, the objective trends up
  (Pearson correlation with the row index ≥ `min_corr`) while a held-out reward trends down (≤ −`min_corr`)
  and drops by more than `min_drop`;
- diversity: pass `BatchDiversity` as a held-out reward (named `diversity*`; reported, never alarmed on):
  its batch mean is the mean pairwise distance of the samples in a feature space (`mnist-judge` features);
- distance from the prior: best-of-N's analytic KL_bon = log n − (n − 1)/n (Stiennon et al. 2020; exact for
  k = 1), and for ReNO the rise of the mean noise NLL ½‖z‖² − (d−1)·log‖z‖ over the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .core import Reward

MONITOR_ONLY_PREFIX = "diversity"


def alarm_watched(name: str) -> bool:
    """Held-out columns the alarm reads: scores, not diversity (reported only) nor the judges' 0/1 hits
    (`NAME/acc`, `judges_agree`: reported in the summary; their log-probabilities are watched instead)."""
    return not (name.startswith(MONITOR_ONLY_PREFIX) or name.endswith("/acc") or name == "judges_agree")


def kl_best_of_n(n: float) -> float:
    """KL(best-of-n ‖ base) = log n − (n − 1)/n (Stiennon et al. 2020; used by Gao et al. 2023, Coste et al. 2024)."""
    return math.log(n) - (n - 1) / n


class BatchDiversity(Reward):
    """Per sample: its mean feature-space distance to the other samples of the batch, so the batch mean is
    the mean pairwise distance. NaN for a batch of one. A monitor: not differentiable, never optimized."""

    differentiable = False

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], name: str = "diversity"):
        self.features, self.name = features, name

    @torch.no_grad()
    def score(self, samples: torch.Tensor, cond=None) -> torch.Tensor:
        b = samples.shape[0]
        if b < 2:
            return samples.new_full((b,), math.nan, dtype=torch.float32)
        f = self.features(samples.float()).flatten(1).float()  # (B, D)
        return torch.cdist(f, f).sum(1) / (b - 1)


def _corr(y: list[float]) -> float:
    t = torch.arange(len(y), dtype=torch.float64)
    v = torch.tensor(y, dtype=torch.float64)
    if v.std() == 0:
        return 0.0
    return float(torch.corrcoef(torch.stack([t, v]))[0, 1])


def objective_key(trace: list[dict]) -> str:
    """The trace column scored on the same samples as the held-out rewards: best-of-N scores its kept top-k
    (`best`), the iterative methods their current iterate (`score`)."""
    return "best" if trace and "drawn" in trace[0] else "score"


def check(trace: list[dict], config: dict | None = None, window: int = 5, min_corr: float = 0.6,
          min_drop: float = 1e-3) -> dict:
    """The monitor's verdict on a trace: alarm flag, where it first fired, diversity and prior distance."""
    out: dict = {"alarm": False, "window": window, "iteration": None, "heldout": None}
    if window < 3:
        raise ValueError(f"window must be at least 3 rows, got {window}")
    key = objective_key(trace)
    names = [k for k in (trace[0]["heldout"] if trace else {}) if alarm_watched(k)]
    for end in range(window, len(trace) + 1):
        rows = trace[end - window:end]
        obj = [r[key] for r in rows]
        if not all(math.isfinite(v) for v in obj) or _corr(obj) < min_corr:
            continue
        for name in names:
            held = [r["heldout"][name] for r in rows]
            if all(math.isfinite(v) for v in held) and _corr(held) <= -min_corr and held[0] - held[-1] > min_drop:
                out.update(alarm=True, iteration=rows[-1]["iteration"], heldout=name,
                           objective=[obj[0], obj[-1]], heldout_values=[held[0], held[-1]])
                break
        if out["alarm"]:
            break
    for k in (trace[0]["heldout"] if trace else {}):
        if k.startswith(MONITOR_ONLY_PREFIX):
            out[k] = [trace[0]["heldout"][k], trace[-1]["heldout"][k]]
    if trace and "prior_nll" in trace[-1]:
        out["prior_nll_increase"] = trace[-1]["prior_nll"] - trace[0]["prior_nll"]
    if trace and "drawn" in trace[-1] and (config or {}).get("k", 1) == 1:
        out["kl_best_of_n"] = kl_best_of_n(trace[-1]["drawn"])
    return out


def monitor_lines(verdict: dict) -> list[str]:
    """The CLI summary's monitor lines: distance from the prior and diversity when known, and the alarm."""
    parts = [f"{k} {v[0]:.3f} -> {v[1]:.3f}" for k, v in verdict.items() if k.startswith(MONITOR_ONLY_PREFIX)]
    if "kl_best_of_n" in verdict:
        parts.append(f"KL_bon {verdict['kl_best_of_n']:.3f} nats")
    if "prior_nll_increase" in verdict:
        parts.append(f"noise NLL {verdict['prior_nll_increase']:+.2f}")
    if not verdict.get("alarm"):
        return [f"monitor: {', '.join([*parts, 'no over-optimization alarm'])}"]
    o, h = verdict["objective"], verdict["heldout_values"]
    return [f"monitor: {', '.join([*parts, 'ALARM'])}",
            f"OVER-OPTIMIZATION ALARM at iteration {verdict['iteration']}: over the last {verdict['window']} rows the "
            f"objective rose {o[0]:.3f} -> {o[1]:.3f} while held-out {verdict['heldout']} fell {h[0]:.3f} -> {h[1]:.3f}"]
