"""`rewardsteer bench overopt`: reproduce the reward over-optimization findings on the bundled MNIST task.

Gold reward (stands in for human preference; never optimized), on an image x in [0, 1] of target class c:
    gold(x) = log p_judge(c | x) − ½ ((ink(x) − ink*) / w)²,   ink(x) = mean pixel value,
a clean classifier's confidence plus a stroke-weight term with a sweet spot at ink* (width w); ink* is by
default the mean ink of MNIST training images of class c (`MNIST_MEAN_INK`), so every class has its own.
Proxies: (a) the noisy-label classifiers `mnist-proxy-0..4` (raw log-probabilities: same units, so no
rescaling); (b) k Bradley-Terry reward models trained on pairs of unsteered samples labelled by the gold
reward with 25% of the labels flipped (standardized on unsteered samples, since a BT reward's offset and
scale are arbitrary). Aggregates: a single member, mean, WCO, UWO (Coste et al. 2024).
Optimizers: best-of-N through Coste et al.'s unbiased estimator (all n ≤ N from one pool of N samples per
seed; KL_bon = log n − (n−1)/n), and ReNO with λ ∈ {0, 0.01} over iterations. Rewards are reported as the
change from the unsteered start, in units of their standard deviation on unsteered samples.
Held-out judges (`Config.judges`, default `models.HELDOUT_JUDGES`; missing ones are skipped with a logged note):
at every point of every curve, each judge's accuracy on the target (best-of-N: the expected accuracy of the
best-of-n sample, by the same estimator) and the fraction every judge assigns to it (judges agree), so the
curves can be read under judges independent of the gold reward's classifier too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .. import models
from ..bundled import hub
from ..core import Reward, make_rng
from ..errors import RewardsteerError
from ..methods import reno
from ..result import JUDGE_HIT_SUFFIX, JUDGES_AGREE
from ..rewards import aggregates as agg
from ..rewards.base import ClassifierReward, Ensemble
from ..rewards.monitors import kl_best_of_n
from ..rewards.preference import BTReward, pairwise_accuracy, train_ensemble
from .overopt_report import write_report


def available_judges(names=models.HELDOUT_JUDGES, note=print) -> tuple[dict[str, torch.nn.Module], list[str]]:
    """({name: network} for the bundled judges among `names` that can be loaded, notes on the skipped ones).

    A name that is not bundled (`hub.BUNDLED`) or whose weight file is absent (being trained) is skipped and
    `note` is called with the reason: benchmarks fall back to the judges that exist, never silently.
    """
    nets, notes = {}, []
    for name in names:
        if name not in hub.BUNDLED:
            why = "not a bundled model (rewardsteer.hub.BUNDLED)"
        elif not (hub.WEIGHTS_DIR / f"{name}.safetensors").is_file():
            why = f"its weight file {name}.safetensors is absent from rewardsteer/weights (not trained yet?)"
        else:
            try:
                nets[name] = models.classifier(name)
                continue
            except RewardsteerError as e:
                why = str(e)
        notes.append(f"judge '{name}' skipped: {why}")
        note(notes[-1])
    if not nets:
        raise RewardsteerError(f"none of the held-out judges {', '.join(names)} is available")
    return nets, notes


def judge_rewards(nets: dict[str, torch.nn.Module], target: int | None) -> dict[str, ClassifierReward]:
    """{name: log p(target | x)} for `heldout=`: each then also reports `NAME/acc`, and the run `judges_agree`."""
    return {name: ClassifierReward(net, name, target) for name, net in nets.items()}


@dataclass(frozen=True)
class Config:
    target: int = 7
    seeds: int = 5
    bon_pool: int = 4096  # N samples per seed for the best-of-N estimator
    calib: int = 512  # unsteered samples for standardization and the sd units
    reno_n: int = 8
    reno_iters: int = 50  # ReNO's default
    regs: tuple[float, ...] = (0.0, 0.01)
    bt_pairs: int = 3000
    bt_epochs: int = 8
    bt_members: int = 5
    bt_eval_pairs: int = 500  # fresh pairs, gold-labelled without flips, to measure each member
    flip: float = 0.25
    ink_target: float | None = None  # None: MNIST_MEAN_INK[target]
    ink_width: float = 0.02
    uwo_bon: float = 0.5  # Coste et al.'s λ for best-of-N / search
    uwo_reno: float = 0.1  # ... and for gradient methods
    batch: int = 256
    judges: tuple[str, ...] = models.HELDOUT_JUDGES  # held out: accuracy and agreement recorded per point


@dataclass
class Family:
    """A proxy ensemble, the member-wise steps put before every aggregate, and how it was made."""

    ensemble: Ensemble
    pre: list[agg.Transform]
    info: dict | None = None

    def chain(self, aggregate: agg.Transform) -> agg.Transform:
        return agg.chain(*self.pre, aggregate)


# Mean pixel value of the 60,000 MNIST training images of each class (sd 0.022-0.042 within a class), rounded;
# tests/test_overopt.py recomputes it from the data.
MNIST_MEAN_INK = (0.173, 0.076, 0.148, 0.141, 0.121, 0.128, 0.137, 0.114, 0.150, 0.122)

QUICK = Config(seeds=2, bon_pool=128, calib=64, reno_n=4, reno_iters=6, bt_pairs=200, bt_epochs=2, bt_eval_pairs=100)


class GoldReward(Reward):
    """log p_judge(c | x) − ½((ink(x) − ink*)/w)²: the benchmark's stand-in for human preference."""

    def __init__(self, judge: torch.nn.Module, target: int, ink_target: float, ink_width: float):
        self.judge, self.target, self.ink_target, self.ink_width = judge, target, ink_target, ink_width
        self.name, self.differentiable = "gold", True

    def score(self, samples, cond=None):
        logp = F.log_softmax(self.judge(samples).float(), dim=1)[:, self.target]
        ink = samples.float().flatten(1).mean(1)
        return logp - 0.5 * ((ink - self.ink_target) / self.ink_width) ** 2


def aggregates(members: list[str], uwo_lam: float) -> dict[str, agg.Transform]:
    """The compared reductions: member 0 alone, mean, WCO, UWO."""
    return {"single": agg.only(members[0]),
            "mean": agg.mean(), "wco": agg.wco(), "uwo": agg.uwo(uwo_lam)}


@torch.no_grad()
def pool(generator, n: int, target: int, seed: int, batch: int) -> torch.Tensor:
    return agg.unsteered_samples(generator, n, target, seed, batch)


@torch.no_grad()
def score_all(reward: Reward, x: torch.Tensor, cond: Any, batch: int) -> dict[str, torch.Tensor]:
    parts: dict[str, list] = {}
    for i in range(0, x.shape[0], batch):
        for k, v in reward.member_scores(x[i:i + batch], cond).items():
            parts.setdefault(k, []).append(v.float())
    return {k: torch.cat(v) for k, v in parts.items()}


def bt_proxies(generator, gold: GoldReward, cfg: Config, log) -> tuple[Ensemble, dict]:
    """k BT members trained on gold-labelled pairs of unsteered samples with a fraction `flip` of labels flipped."""
    x = pool(generator, 2 * cfg.bt_pairs, cfg.target, 777, cfg.batch)
    g = score_all(gold, x, cfg.target, cfg.batch)["gold"]
    a, b, ga, gb = x[0::2], x[1::2], g[0::2], g[1::2]
    flip = torch.rand(cfg.bt_pairs, generator=make_rng(778)) < cfg.flip
    a_wins = (ga > gb) ^ flip
    pref, rej = torch.where(a_wins[:, None, None, None], a, b), torch.where(a_wins[:, None, None, None], b, a)
    nets, metrics = train_ensemble(pref, rej, members=cfg.bt_members, seed=0, epochs=cfg.bt_epochs)
    # accuracy against the true gold order on fresh pairs: how good a proxy each member is
    xt = pool(generator, 2 * cfg.bt_eval_pairs, cfg.target, 779, cfg.batch)
    gt = score_all(gold, xt, cfg.target, cfg.batch)["gold"]
    pa, pb = xt[0::2], xt[1::2]
    better = (gt[0::2] > gt[1::2])[:, None, None, None]
    ta, tb = torch.where(better, pa, pb), torch.where(better, pb, pa)
    for m, net in zip(metrics, nets):
        m["gold_accuracy_fresh_pairs"] = pairwise_accuracy(BTReward(net, "r"), ta, tb)
    log(stage="bt", flipped=float(flip.float().mean()), members=metrics)
    ens = Ensemble([BTReward(net, f"bt-{k}") for k, net in enumerate(nets)], name="bt")
    return ens, {"flipped": float(flip.float().mean()), "members": metrics}


def coste_weights(proxy: torch.Tensor, ns: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, W): W[j, i] is the probability that the i-th smallest proxy (1-based i = index + 1, in `order`) is
    the max of a random ns[j]-subset of the N pool samples, C(i−1, n−1)/C(N, n) (Nakano et al. 2021; Gao et al.
    2023; Coste et al. 2024). `W @ values[order]` is E[value of the best-of-n sample] for any per-sample value."""
    order = proxy.argsort()
    big_n = proxy.shape[0]
    i = torch.arange(1, big_n + 1, dtype=torch.float64)
    rows = []
    for n in ns:
        logw = torch.full_like(i, -math.inf)
        ok = i >= n
        logw[ok] = (torch.lgamma(i[ok]) - math.lgamma(n) - torch.lgamma(i[ok] - n + 1)
                    - (math.lgamma(big_n + 1) - math.lgamma(n + 1) - math.lgamma(big_n - n + 1)))
        rows.append(logw.exp())
    return order, torch.stack(rows)


def coste_estimator(proxy: torch.Tensor, gold: torch.Tensor, ns: list[int]) -> tuple[list[float], list[float]]:
    """E[proxy], E[gold] of the best-of-n sample (by proxy) for each n, unbiased from one pool of N (`coste_weights`)."""
    order, w = coste_weights(proxy, ns)
    return (w @ proxy[order].double()).tolist(), (w @ gold[order].double()).tolist()


def best_of_n_curves(pools: list[tuple[torch.Tensor, torch.Tensor]], family: Family, calib: dict, cfg: Config) -> dict:
    """Per aggregate: sqrt(KL) grid, per-seed Δgold, Δproxy curves in unsteered-sd units, and each judge's (and
    all judges') expected accuracy of the best-of-n sample, from one pool of (samples, gold scores, judge hits)
    per seed; n runs over powers of √2 up to N/4."""
    ns = sorted({max(1, round(2 ** (j / 2))) for j in range(0, 2 * int(math.log2(cfg.bon_pool // 4)) + 1)})
    out = {"n": ns, "sqrt_kl": [math.sqrt(kl_best_of_n(n)) for n in ns], "aggregates": {}}
    pools = [(score_all(family.ensemble, x, cfg.target, cfg.batch), g, hits) for x, g, hits in pools]
    for name, t in aggregates(list(family.ensemble.members), cfg.uwo_bon).items():
        sd_p = float(agg.reduce(family.chain(t), calib["members"]).std())
        curves = {"gold": [], "proxy": [], "judges": {j: [] for j in pools[0][2] if j != JUDGES_AGREE},
                  JUDGES_AGREE: []}
        for members, g, hits in pools:
            p = agg.reduce(family.chain(t), members)
            order, w = coste_weights(p, ns)
            ep, eg = (w @ p[order].double()).tolist(), (w @ g[order].double()).tolist()
            curves["proxy"].append([(v - ep[0]) / sd_p for v in ep])
            curves["gold"].append([(v - eg[0]) / calib["gold_sd"] for v in eg])
            for j, h in hits.items():  # expected accuracy (absolute, in [0, 1]) of the best-of-n sample
                (curves[JUDGES_AGREE] if j == JUDGES_AGREE else curves["judges"][j]).append(
                    (w @ h[order].double()).clamp(0, 1).tolist())
        out["aggregates"][name] = curves
    return out


def reno_curves(generator, family: Family, gold: GoldReward, calib: dict, cfg: Config,
                judges: Mapping[str, torch.nn.Module] | None = None) -> dict:
    """Per λ and aggregate: per-seed Δgold, Δproxy along ReNO iterations, whether the monitor alarmed, and each
    held-out judge's accuracy and the judges-agree fraction of the iterates (absolute, in [0, 1])."""
    judges = judges or {}
    out = {}
    for reg in cfg.regs:
        out[str(reg)] = {}
        for name, t in aggregates(list(family.ensemble.members), cfg.uwo_reno).items():
            reward = family.ensemble.with_transform(family.chain(t))
            sd_p = float(agg.reduce(reward.transform, calib["members"]).std())
            runs = {"gold": [], "proxy": [], "alarm": [], "judges": {j: [] for j in judges}}
            if judges:
                runs[JUDGES_AGREE] = []
            for s in range(cfg.seeds):
                r = reno(generator, reward, cond=cfg.target, n=cfg.reno_n, iters=cfg.reno_iters, reg=reg, seed=s,
                         heldout={"gold": gold, **judge_rewards(judges, cfg.target)}, progress=False)
                p0, g0 = r.trace[0]["score"], r.trace[0]["heldout"]["gold"]
                runs["proxy"].append([(row["score"] - p0) / sd_p for row in r.trace])
                runs["gold"].append([(row["heldout"]["gold"] - g0) / calib["gold_sd"] for row in r.trace])
                for j in judges:
                    runs["judges"][j].append([row["heldout"][j + JUDGE_HIT_SUFFIX] for row in r.trace])
                if judges:
                    runs[JUDGES_AGREE].append([row["heldout"][JUDGES_AGREE] for row in r.trace])
                runs["alarm"].append(r.overoptimization["alarm"])
            out[str(reg)][name] = runs
    return out


@torch.no_grad()
def judge_hits(judges: Mapping[str, torch.nn.Module], x: torch.Tensor, target: int, batch: int) -> dict:
    """{judge: (N,) 1.0 where its top class is the target, "judges_agree": 1.0 where every judge's is}."""
    hits = {name: torch.cat([net(x[i:i + batch]).argmax(1) == target for i in range(0, x.shape[0], batch)])
            for name, net in judges.items()}
    if hits:
        hits[JUDGES_AGREE] = torch.stack(list(hits.values())).all(0)
    return {k: v.float() for k, v in hits.items()}


def run(generator, judge: torch.nn.Module, classifier_proxies: list[Reward], cfg: Config, out_dir: Path,
        log=print, judges: Mapping[str, torch.nn.Module] | None = None) -> dict:
    """The whole benchmark; writes results.json, bon.png, reno.png, judges.png and table.md to `out_dir`.

    `judge` is the gold reward's classifier; `judges` the held-out judges recorded at every point ({name: net};
    None loads `cfg.judges` among the bundled ones, logging a note for each one that is missing).
    """
    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if judges is None:
        judges, notes = available_judges(cfg.judges, note=lambda m: log(stage="judges", note=m))
    ink_target = MNIST_MEAN_INK[cfg.target] if cfg.ink_target is None else cfg.ink_target
    gold = GoldReward(judge, cfg.target, ink_target, cfg.ink_width)
    calib_x = pool(generator, cfg.calib, cfg.target, 12345, cfg.batch)
    gold_calib = score_all(gold, calib_x, cfg.target, cfg.batch)["gold"]
    calib_hits = judge_hits(judges, calib_x, cfg.target, cfg.batch)
    results: dict[str, Any] = {"config": {**asdict(cfg), "ink_target": ink_target}, "families": {},
                               "gold_unsteered": {"mean": float(gold_calib.mean()), "sd": float(gold_calib.std()),
                                                  "ink_mean": float(calib_x.flatten(1).mean(1).mean())},
                               "judges": {"used": list(judges), "notes": notes,
                                          "unsteered": {k: float(v.mean()) for k, v in calib_hits.items()}}}
    classifiers = Ensemble(classifier_proxies, name="classifier")
    bt, bt_info = bt_proxies(generator, gold, cfg, log)
    families = {"classifier": Family(classifiers, []),  # log-probs share units: raw
                "bt": Family(bt, [agg.standardize(agg.calibrate(bt, calib_x, cfg.target))], bt_info)}
    calib = {"gold_sd": float(gold_calib.std())}
    bon_pools = []  # one pool of N unsteered samples per seed, shared by both families
    for s in range(cfg.seeds):
        x = pool(generator, cfg.bon_pool, cfg.target, 1000 + s, cfg.batch)
        bon_pools.append((x, score_all(gold, x, cfg.target, cfg.batch)["gold"], judge_hits(judges, x, cfg.target,
                                                                                            cfg.batch)))
    for fam_name, family in families.items():
        calib["members"] = score_all(family.ensemble, calib_x, cfg.target, cfg.batch)
        log(stage="best_of_n", family=fam_name, seconds=round(time.time() - start, 1))
        bon = best_of_n_curves(bon_pools, family, calib, cfg)
        log(stage="reno", family=fam_name, seconds=round(time.time() - start, 1))
        results["families"][fam_name] = {"info": family.info, "best_of_n": bon,
                                         "reno": reno_curves(generator, family, gold, calib, cfg, judges)}
    results["seconds"] = round(time.time() - start, 1)
    write_report(results, out_dir)
    log(stage="done", seconds=results["seconds"], out=str(out_dir))
    return results
