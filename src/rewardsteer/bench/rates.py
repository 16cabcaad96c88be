"""Rates of rare events: exact binomial tails, the one-sided Clopper-Pearson upper bound, and a consistency check.

A target is certified rare under a prior when the one-sided 95% Clopper-Pearson upper bound (Clopper & Pearson
1934, Biometrika 26(4)) on its rate, seen k times in n samples, is at most 1/1,000: the largest p with
P(X ≤ k | n, p) ≥ 5%. Plain Python (no SciPy): the tail is summed in log space, which is exact enough for the
small k of rare targets and fast for any n.
"""

from __future__ import annotations

import math


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in n (bisection on p, to 1e-12)."""
    if n <= 0:
        raise ValueError(f"need at least one sample, got n={n}")
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > 1 - level:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi


def consistent(k: int, n: int, p: float, alpha: float = 1e-3) -> bool:
    """Whether seeing k in n is plausible at rate p: neither tail, P(X ≤ k) nor P(X ≥ k), is below alpha / 2.
    What a cheap re-run checks against a committed rate."""
    return min(binomial_cdf(k, n, p), 1.0 - binomial_cdf(k - 1, n, p)) >= alpha / 2
