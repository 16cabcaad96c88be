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


def test_a_proxy_rising_while_no_judge_ever_agrees_alarms_and_says_so():
    """The `--reward proxies --robust none --method reno` pattern: the proxy climbs, judges_agree stays 0 on
    every row; one agreed output on any row and it does not fire."""
    up = [-4.0 + 0.3 * i for i in range(12)]
    rows = trace(up, up, judges_agree=[0.0] * 12)  # the held-out log-probabilities rise too: no held-out fall
    v = check(rows)
    assert v["alarm"] and v["signals"] == ["judges"] and v["judges_never_agree"]["objective"] == [-4.0, up[-1]]
    lines = monitor_lines(v)
    assert lines[0].endswith("ALARM (judges never agree)") and "stayed at 0%" in lines[1]
    assert not check(trace(up, up, judges_agree=[0.0] * 11 + [0.25]))["alarm"]
    assert not check(trace([0.0] * 12, up, judges_agree=[0.0] * 12))["alarm"]  # nothing rose: no claim


def test_realism_leaving_the_band_while_the_judges_agree_alarms():
    """The collapsed-LoRA pattern: judges 100% -> 100%, realism out of the real-data band for most outputs."""
    up = [0.1 * i for i in range(8)]
    band = [1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25]
    v = check(trace(up, up, judges_agree=[1.0] * 8, **{"realism/in_band": band}))
    assert v["alarm"] and v["signals"] == ["realism"] and v["realism_out_of_band"]["in_band"] == [1.0, 0.25]
    assert "only 25% lie in the real-data realism band (before: 100%)" in monitor_lines(v)[1]
    fine = trace(up, up, judges_agree=[1.0] * 8, **{"realism/in_band": [1.0] * 4 + [0.75] * 4})
    unfooled = trace(up, up, judges_agree=[0.0] * 7 + [0.25], **{"realism/in_band": band})
    assert not check(fine)["alarm"] and check(unfooled)["signals"] == []


def test_particle_traces_compare_plain_samples_with_the_outputs():
    """x0-prediction rows are plotted, not alarmed on: a fall from an early x̂0 row (the molecule run's false
    alarm) is ignored; a fall from the plain samples to the outputs beyond their noise fires."""
    up = [0.1 * i for i in range(8)]
    gold = [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.5, 2.0]  # x̂0 rows: a collapse from a degenerate first prediction
    rows = [{**r, "ess": 4.0} for r in trace(up, gold)]

    def batch(score, gold, sd=0.5, n=8):
        return {"score": score, "heldout": {"gold": gold}, "heldout_sd": {"gold": sd}, "heldout_n": n}

    assert not check(rows, before=batch(0.0, 2.3), after=batch(0.7, 2.0))["alarm"]  # within the noise
    v = check(rows, before=batch(0.0, 3.0), after=batch(0.7, 2.0))
    assert v["signals"] == ["heldout"] and v["heldout_values"] == [3.0, 2.0]
    assert "(plain samples -> outputs)" in monitor_lines(v)[1]
    # two samples a side: their spread says little about the noise, so Student's t (2 dof: 4.30) widens the bar
    assert not check(rows, before=batch(0.0, 3.0, n=2), after=batch(0.7, 1.5, n=2))["alarm"]
    assert check(rows, before=batch(0.0, 3.0, n=2), after=batch(0.7, 0.5, n=2))["alarm"]
    assert not check(rows, before=batch(0.7, 3.0), after=batch(0.0, 2.0))["alarm"]  # the objective fell


def test_non_finite_rewards_warn_with_a_count(identity):
    """An all-NaN reward: a RewardsteerWarning and a summary line with the count, not a silent 'nan -> -inf'."""
    nan = FunctionReward(lambda x, c: torch.full((x.shape[0],), math.nan), "nan")
    with pytest.warns(rs.RewardsteerWarning, match="8 of 8 reward evaluations were NaN or infinite"):
        result = rs.best_of_n(identity, nan, n=2, candidates=8, progress=False)
    assert "WARNING: 8 of 8 reward evaluations were NaN" in result.summary() and "no output has a finite" in result.summary()
    holey = FunctionReward(lambda x, c: torch.where(x[:, 0] > 0, x.mean(1), math.nan), "holey")
    with pytest.warns(rs.RewardsteerWarning, match="reward evaluations were NaN"):
        part = rs.best_of_n(identity, holey, n=1, candidates=16, progress=False, seed=1)
    assert f"WARNING: {part.spent['skipped']} of 16" in part.summary() and "no output" not in part.summary()
    clean = rs.best_of_n(identity, FunctionReward(lambda x, c: x.mean(1), "m"), n=1, candidates=4, progress=False)
    assert "WARNING" not in clean.summary()
