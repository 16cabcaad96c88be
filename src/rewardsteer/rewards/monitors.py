"""Over-optimization monitor: read a run's trace for the signature of reward hacking.

Reward hacking (Gao et al. 2023, "Scaling laws for reward model overoptimization") shows as the optimized
(proxy) score rising while a reward that was never optimized falls. Every method already scores its held-out
rewards at every trace row (`plumbing.score_heldout`), so the monitor is a post-hoc function of the
trace and works for every method without touching them:

- held-out rewards: the alarm fires on a sustained fall that exceeds the held-out score's own noise: for
  `window` consecutive rows a held-out reward stays below its best value so far by more than z standard errors
  of its batch mean (from the batch's spread, recorded per row), while the objective rose (`check`);
- diversity: pass `BatchDiversity` as a held-out reward (named `diversity*`; reported, never alarmed on):
  its batch mean is the mean pairwise distance of the samples in a feature space (`mnist-judge` features);
- distance from the prior: best-of-N's analytic KL_bon = log n − (n − 1)/n (Stiennon et al. 2020; exact for
  k = 1), and for ReNO the rise of the mean noise NLL ½‖z‖² − (d−1)·log‖z‖ over the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..bundled.judge_nets import RealismIndex
from ..core import Reward, input_for

MONITOR_ONLY_PREFIX = "diversity"
JUDGE_HIT_SUFFIX, JUDGES_AGREE = "/acc", "judges_agree"  # held-out columns written by plumbing.score_heldout
BAND_SUFFIX = "/in_band"  # 1 where a sample's realism lies in the real-data band (`RealismMonitor.score_and_band`)


# Held-out columns reported but not alarmed on: properties of the batch's make-up, which steering toward a class
# changes by design. Diversity falls as outputs converge on one class; realism (`mnist-realism`) has class-dependent
# levels (real 1s score −0.39, real 8s −1.19 on MNIST test digits), so a fall in it is no evidence of hacking alone.
REPORTED_ONLY = (MONITOR_ONLY_PREFIX, "realism")


def plotted(name: str) -> bool:
    """Held-out score columns (not the judges' 0/1 hits `NAME/acc`, `judges_agree`, nor diversity)."""
    return not (name.startswith(MONITOR_ONLY_PREFIX) or name.endswith((JUDGE_HIT_SUFFIX, BAND_SUFFIX))
                or name == JUDGES_AGREE)


def alarm_watched(name: str) -> bool:
    """Held-out columns the alarm reads: scores, not the reported-only monitors (diversity, realism) nor the
    judges' 0/1 hits (`NAME/acc`, `judges_agree`: reported in the summary; their log-probabilities are watched)."""
    return plotted(name) and not name.startswith(REPORTED_ONLY)


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
        net = getattr(self.features, "__self__", None)  # a network's bound method: feed it its own dtype
        x = input_for(net, samples) if isinstance(net, torch.nn.Module) else samples.float()
        f = self.features(x).flatten(1).float()  # (B, D)
        return torch.cdist(f, f).sum(1) / (b - 1)


def objective_key(trace: list[dict]) -> str:
    """The trace column scored on the same samples as the held-out rewards: best-of-N scores its kept top-k
    (`best`), the iterative methods their current iterate (`score`)."""
    return "best" if trace and "drawn" in trace[0] else "score"


def _row_noise(trace: list[dict], name: str, values: list[float]) -> list[float]:
    """Per row, the standard error of the held-out mean: the batch spread / √n recorded in the trace; for a
    trace without it (saved before it was recorded), the row-to-row noise of the series itself
    (std of first differences / √2), the same for every row."""
    if all(name in r.get("heldout_sd", {}) and r.get("heldout_n") for r in trace):
        return [r["heldout_sd"][name] / math.sqrt(r["heldout_n"]) if math.isfinite(r["heldout_sd"][name]) else 0.0
                for r in trace]
    diffs = torch.tensor([b - a for a, b in zip(values, values[1:]) if math.isfinite(a) and math.isfinite(b)],
                         dtype=torch.float64)
    noise = float(diffs.std()) / math.sqrt(2) if diffs.numel() > 1 else 0.0
    return [noise] * len(values)


def batch_row(scores: torch.Tensor, heldout: dict) -> dict:
    """A set of samples as a trace-like row: mean objective, held-out means, their spread and the batch size."""
    def mean(t):
        t = t.detach().float()
        t = t[torch.isfinite(t)]
        return float(t.mean()) if t.numel() else math.nan

    def sd(t):
        t = t.detach().float()
        t = t[torch.isfinite(t)]
        return float(t.std()) if t.numel() > 1 else math.nan

    return {"score": mean(scores), "heldout": {k: mean(v) for k, v in heldout.items()},
            "heldout_sd": {k: sd(v) for k, v in heldout.items()}, "heldout_n": int(scores.numel())}


# Student's t at 97.5% for 1..10 degrees of freedom: small batches' spreads are poor estimates of their noise.
T975 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23)


def _fell(before: dict, after: dict, names: list[str], z: float, min_drop: float) -> dict | None:
    """The first held-out reward whose mean fell from `before` to `after` by more than z standard errors (z scaled
    by t/1.96 for fewer than 12 samples in all)."""
    dof = before["heldout_n"] + after["heldout_n"] - 2
    z = z * (T975[dof - 1] / 1.96 if 1 <= dof <= len(T975) else 1.0)
    for name in names:
        h0, h1 = before["heldout"].get(name, math.nan), after["heldout"].get(name, math.nan)
        if not (math.isfinite(h0) and math.isfinite(h1)) or dof < 1:
            continue
        se = [r["heldout_sd"].get(name, math.nan) / math.sqrt(max(r["heldout_n"], 1)) for r in (before, after)]
        noise = max(min_drop, z * math.sqrt(sum(e**2 for e in se if math.isfinite(e))))
        if h0 - h1 > noise:
            return {"heldout": name, "heldout_values": [h0, h1], "noise": noise}
    return None


def _window_alarm(trace, key, names, window, z, min_drop) -> dict | None:
    """A sustained fall along the trace: `window` rows below the best so far by more than their noise."""
    obj = [r[key] for r in trace]
    series = {name: [r["heldout"][name] for r in trace] for name in names}
    noise = {name: _row_noise(trace, name, series[name]) for name in names}
    for t in range(window, len(trace)):
        for name in names:
            h, se = series[name], noise[name]
            finite = [i for i in range(t + 1) if math.isfinite(h[i])]
            if not finite:
                continue
            p = max(finite, key=lambda i: (h[i], -i))  # the first row of the highest value so far
            last = range(t - window + 1, t + 1)
            if p >= last[0] or not all(math.isfinite(h[i]) and math.isfinite(obj[i]) for i in last):
                continue
            threshold = [max(min_drop, z * math.sqrt(se[p] ** 2 + se[i] ** 2)) for i in last]
            rose = math.isfinite(obj[p]) and sum(obj[i] for i in last) / window > obj[p]
            if rose and all(h[p] - h[i] > th for i, th in zip(last, threshold)):
                return dict(iteration=trace[t]["iteration"], heldout=name, since=trace[p]["iteration"],
                            objective=[obj[p], obj[t]], heldout_values=[h[p], h[t]], noise=threshold[-1])
    return None


def check(trace: list[dict], config: dict | None = None, window: int = 5, z: float = 2.0,
          min_drop: float = 1e-3, before: dict | None = None, after: dict | None = None) -> dict:
    """The monitor's verdict: alarm flag, the signals that fired (`signals`), diversity and prior distance.

    `before` / `after` (`batch_row`) are the unsteered start and the outputs; `Result.overoptimization` passes
    them. Three signals, each named in `signals`:
    - "heldout": a held-out reward fell while the objective rose. Along the trace (one-step methods): with p
      the row of its highest value so far, each of the last `window` rows (all after p) lies below h_p by
      more than z·√(se_p² + se_t²) (se: the standard error of the batch mean, `_row_noise`) and `min_drop`,
      while the objective's mean over those rows exceeds its value at p. Particle methods trace
      x0-predictions, which are not samples: there the plain samples (`before`) are compared with the outputs.
    - "judges": the objective rose while `judges_agree` never rose above 0 (no output that every judge
      assigns to the target, on any row): the optimized reward is fooled.
    - "realism": most outputs lie below the real-data realism band (`NAME/in_band`, fewer than half, and fewer
      than before) while the judges agree on at least half: the judges are fooled.
    """
    out: dict = {"alarm": False, "window": window, "iteration": None, "heldout": None, "signals": []}
    if window < 2:
        raise ValueError(f"window must be at least 2 rows, got {window}")
    key = objective_key(trace)
    first = trace[0] if trace else {}
    names = [k for k in first.get("heldout", {}) if alarm_watched(k)]
    start = before or ({**first, "score": first[key]} if trace else None)
    end = after or ({**trace[-1], "score": trace[-1][key]} if trace else None)
    rose = start is not None and math.isfinite(start["score"]) and math.isfinite(end["score"]) and \
        end["score"] - start["score"] > min_drop
    particles = "ess" in first and before is not None and after is not None
    fell = (_fell(before, after, names, z, min_drop) if rose else None) if particles else \
        _window_alarm(trace, key, names, window, z, min_drop)
    if fell:
        out.update(fell, signals=["heldout"])
        out.setdefault("objective", [start["score"], end["score"]])
    agree = [r["heldout"][JUDGES_AGREE] for r in (*trace, *(r for r in (before, after) if r))
             if JUDGES_AGREE in r["heldout"]]
    if rose and agree and max(agree) <= 0:
        out["signals"].append("judges")
        out["judges_never_agree"] = {"objective": [start["score"], end["score"]]}
    band = next((k for k in (end or {}).get("heldout", {}) if k.endswith(BAND_SUFFIX)), None)
    if band and start and JUDGES_AGREE in end["heldout"]:
        b0, b1, fooled = start["heldout"].get(band, math.nan), end["heldout"][band], end["heldout"][JUDGES_AGREE]
        if b1 < 0.5 and b1 < b0 and fooled >= 0.5:
            out["signals"].append("realism")
            out["realism_out_of_band"] = {"column": band, "in_band": [b0, b1], "judges_agree": fooled}
    out["alarm"] = bool(out["signals"])
    for k in first.get("heldout", {}):
        if k.startswith(MONITOR_ONLY_PREFIX):
            out[k] = [first["heldout"][k], trace[-1]["heldout"][k]]
    if trace and "prior_nll" in trace[-1]:
        out["prior_nll_increase"] = trace[-1]["prior_nll"] - trace[0]["prior_nll"]
    if trace and "drawn" in trace[-1] and (config or {}).get("k", (config or {}).get("n", 1)) == 1:
        out["kl_best_of_n"] = kl_best_of_n(trace[-1]["drawn"])
    return out


SIGNALS = {"heldout": "held-out fell", "judges": "judges never agree", "realism": "realism out of band"}


def monitor_lines(verdict: dict) -> list[str]:
    """The CLI summary's monitor lines: distance from the prior and diversity when known, the alarm and, for each
    signal that fired, one line saying what it saw."""
    parts = [f"{k} {v[0]:.3f} -> {v[1]:.3f}" if all(map(math.isfinite, v)) else f"{k} n/a (needs 2+ outputs)"
             for k, v in verdict.items() if k.startswith(MONITOR_ONLY_PREFIX)]
    if "kl_best_of_n" in verdict:
        parts.append(f"KL_bon {verdict['kl_best_of_n']:.3f} nats")
    if "prior_nll_increase" in verdict:
        parts.append(f"noise NLL {verdict['prior_nll_increase']:+.2f}")
    if not verdict.get("alarm"):
        return [f"monitor: {', '.join([*parts, 'no over-optimization alarm'])}"]
    signals = verdict.get("signals") or ["heldout"]  # verdicts from before signals were named
    lines = [f"monitor: {', '.join([*parts, 'ALARM (' + ', '.join(SIGNALS[s] for s in signals) + ')'])}"]
    if "heldout" in signals:
        o, h = verdict["objective"], verdict["heldout_values"]
        where = (f"at iteration {verdict['iteration']}: since iteration {verdict['since']} " if "since" in verdict
                 else "(plain samples -> outputs): ")
        rows = f", for {verdict['window']} rows" if "since" in verdict else ""
        noise = f" (more than its noise, {verdict['noise']:.3f}{rows})" if "noise" in verdict else ""
        lines.append(f"OVER-OPTIMIZATION ALARM {where}the objective rose {o[0]:.3f} -> {o[1]:.3f} while held-out "
                     f"{verdict['heldout']} fell {h[0]:.3f} -> {h[1]:.3f}{noise}")
    if "judges" in signals:
        o = verdict["judges_never_agree"]["objective"]
        lines.append(f"OVER-OPTIMIZATION ALARM (judges never agree): the objective rose {o[0]:.3f} -> {o[1]:.3f} while "
                     "every judge-agreed fraction stayed at 0%: the optimized reward is being fooled")
    if "realism" in signals:
        r = verdict["realism_out_of_band"]
        lines.append(f"OVER-OPTIMIZATION ALARM (realism out of band): the judges agree on {r['judges_agree']:.0%} of "
                     f"the outputs, yet only {r['in_band'][1]:.0%} lie in the real-data realism band (before: "
                     f"{r['in_band'][0]:.0%}): the judges are being fooled")
    return lines


class RealismMonitor(Reward):
    """Held-out realism: minus the normalized k-NN distance of `RealismIndex` (about −1 for real digits,
    lower for images far from every real digit). Not a classifier and not differentiable: a monitor.

    `low`: the lower edge of the real-data band (e.g. the 1st percentile of real digits of the target class);
    with it, held-out use also reports `NAME/in_band` per sample (1 at or above the edge)."""

    differentiable = False

    def __init__(self, index: RealismIndex, name: str = "realism", low: float | None = None):
        self.index, self.name, self.low = index, name, low

    @torch.no_grad()
    def score(self, samples: torch.Tensor, cond=None) -> torch.Tensor:
        return -self.index(input_for(self.index, samples)).float()

    def score_and_band(self, samples: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(realism (B,), in band (B,) bool or None without a band)."""
        r = self.score(samples, cond)
        return r, (None if self.low is None else r >= self.low)
