"""The over-optimization monitor: the alarm fires on rising-proxy / falling-held-out traces and only there."""

import math

import pytest
import torch

import rewardsteer as rs
from rewardsteer.core import FunctionReward
from rewardsteer.rewards.monitors import BatchDiversity, check, kl_best_of_n, monitor_lines


def trace(objective, heldout, **extra):
    return [{"iteration": i, "score": o, "heldout": {"gold": h, **{k: v[i] for k, v in extra.items()}}}
            for i, (o, h) in enumerate(zip(objective, heldout))]


def test_alarm_fires_when_proxy_rises_and_heldout_falls():
    up = [0.1 * i for i in range(12)]
    gold = [0.0, 0.2, 0.3, 0.35, 0.36, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3]  # peaks at row 4, then falls
    v = check(trace(up, gold), window=5)
    # no spread recorded: the noise is the series' row-to-row noise (0.07, threshold 0.2); rows 7..11 all lie
    # more than that below the peak, the first 5 such rows in a row
    assert v["alarm"] and v["heldout"] == "gold" and v["iteration"] == 11 and v["since"] == 4
    assert monitor_lines(v)[-1].startswith("OVER-OPTIMIZATION ALARM at iteration 11: since iteration 4 the objective")


@pytest.mark.parametrize("gold", [
    [0.05 * i for i in range(12)],  # both rise: healthy
    [0.0, 0.01, -0.01, 0.0, 0.01, -0.01, 0.0, 0.01, -0.01, 0.0, 0.01, -0.01],  # flat noise
    [0.3 - 0.0001 * i for i in range(12)],  # falls by less than min_drop
    [0.0, 0.2, 0.3, 0.35, 0.36, 0.3, 0.2, 0.1, 0.3, 0.4, 0.5, 0.6],  # a dip shorter than the window
])
def test_no_alarm_on_a_healthy_trace(gold):
    assert not check(trace([0.1 * i for i in range(12)], gold))["alarm"]


def test_the_batch_spread_sets_the_noise():
    up, gold = [0.1 * i for i in range(12)], [0.0, 0.2, 0.3, 0.35, 0.36, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, -0.3]
    rows = trace(up, gold)
    for row in rows:  # a batch of 8 whose gold scores spread by 1.0: se 0.35, a fall of 0.66 is within 2·√2·se
        row.update(heldout_sd={"gold": 1.0}, heldout_n=8)
    assert not check(rows)["alarm"]
    for row in rows:
        row["heldout_sd"]["gold"] = 0.1
    assert check(rows)["alarm"]


def test_diversity_is_reported_not_alarmed_on():
    up = [0.1 * i for i in range(8)]
    v = check(trace(up, up, diversity=[1.0 - 0.1 * i for i in range(8)]))
    assert not v["alarm"] and v["diversity"] == [1.0, pytest.approx(0.3)]


def test_batch_diversity_is_mean_pairwise_distance():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])  # distances 5, 8, 5
    d = BatchDiversity(lambda s: s)
    assert float(d(x).mean()) == pytest.approx(6.0)
    assert math.isnan(float(d(x[:1])[0]))


def kl_by_quadrature(n, grid=200_000):
    """KL(best-of-n || base) from its definition, independent of the closed form: the best of n draws has
    quantile density n·u^(n−1) on (0, 1), so KL = ∫ n·u^(n−1)·log(n·u^(n−1)) du (midpoint rule)."""
    u = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    p = n * u ** (n - 1)
    return float(torch.special.xlogy(p, p).mean())


@pytest.mark.parametrize("n", [1, 2, 16, 100])
def test_kl_best_of_n(n):
    assert kl_best_of_n(n) == pytest.approx(kl_by_quadrature(n), abs=1e-6)


def test_monitor_reaches_result_and_summary(identity):
    bright = FunctionReward(lambda x, c: x.mean(1), "bright")
    dark = FunctionReward(lambda x, c: -x.mean(1), "dark")
    result = rs.reno(identity, bright, n=3, iters=16, reg=0.0, grad_clip=None, progress=False,
                     heldout={"dark": dark, "diversity": BatchDiversity(lambda s: s)})
    v = result.overoptimization
    assert v["alarm"] and v["heldout"] == "dark"  # raising brightness lowers 'dark': exactly the pattern
    assert result.summary_dict()["overoptimization_alarm"] is True and "prior_nll_increase" in v
    bon = rs.best_of_n(identity, bright, n=1, candidates=16, batch_size=4, progress=False)
    assert bon.overoptimization["kl_best_of_n"] == pytest.approx(kl_by_quadrature(16), abs=1e-6)
