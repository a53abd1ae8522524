"""95% intervals for every reported figure: Wilson for rates, bootstrap for means (a cluster bootstrap of a ratio of
sums for samples grouped in clusters), and when two overlap.

An `Estimate` is a value with its interval and sample size; its ``str`` is ``"0.42 [0.31, 0.54]"``. Two estimates
whose intervals overlap are reported as "no difference" (a conservative reading: overlapping 95% intervals can still
differ at p < 0.05, but non-overlapping ones always do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A figure with its ``confidence`` interval [low, high] over ``n`` samples; ``kind`` says how it was made."""

    value: float
    low: float
    high: float
    n: int
    kind: str  # "wilson" (a rate) or "bootstrap" (a mean)

    def overlaps(self, other: Estimate) -> bool:
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Estimate:
        return cls(**data)

    def format(self, spec: str = ".2f") -> str:
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return self.format()


def rate(flags: Sequence[bool], confidence: float = CONFIDENCE) -> Estimate:
    """The share of true ``flags`` with its Wilson score interval."""
    n = len(flags)
    if n == 0:
        raise ValueError("a rate of no samples is undefined; pass at least one flag")
    k = int(sum(bool(f) for f in flags))
    interval = stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
    return Estimate(k / n, float(interval.low), float(interval.high), n, "wilson")


def mean(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    *,
    statistic: Callable = np.mean,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``statistic`` (default the mean) of ``values`` with a seeded percentile-bootstrap interval (a single value,
    or identical values, get a zero-width interval)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("a mean of no samples is undefined; pass at least one value")
    value = float(statistic(data))
    if data.size == 1 or np.all(data == data[0]):
        return Estimate(value, value, value, int(data.size), "bootstrap")
    result = stats.bootstrap(
        (data,), statistic, confidence_level=confidence, n_resamples=resamples, method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return Estimate(value, float(result.confidence_interval.low), float(result.confidence_interval.high),
                    int(data.size), "bootstrap")


def ratio_of_means(numerator: Sequence[float], denominator: Sequence[float], **options) -> Estimate:
    """mean(numerator) / mean(denominator) with a bootstrap interval that resamples both independently."""
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if b.mean() == 0:
        raise ValueError("the denominator's mean is 0: the ratio is undefined")
    rng = np.random.default_rng(options.get("seed", 0))
    resamples = options.get("resamples", 2000)
    draws = np.array([rng.choice(a, a.size).mean() / rng.choice(b, b.size).mean() for _ in range(resamples)])
    alpha = (1 - options.get("confidence", CONFIDENCE)) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Estimate(float(a.mean() / b.mean()), float(low), float(high), int(min(a.size, b.size)), "bootstrap")


def ratio_of_sums(
    numerators: Sequence[float], denominators: Sequence[float], confidence: float = CONFIDENCE, *,
    resamples: int = 2000, seed: int = 0,
) -> Estimate:
    """sum(numerators) / sum(denominators) with a seeded percentile bootstrap that resamples the (numerator,
    denominator) pairs together: e.g. a mean or a rate over samples grouped in clusters (texts), each cluster
    giving the sum of its values and its count, so that the interval reflects the clusters' dependence.
    ``n`` is the number of pairs (clusters)."""
    a, b = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError("pass one numerator and one denominator per cluster (at least one cluster)")
    if b.sum() == 0:
        raise ValueError("the denominators sum to 0: the ratio is undefined")
    value = float(a.sum() / b.sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, a.size, size=(resamples, a.size))
    sums = b[picks].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = a[picks].sum(1) / sums
    draws = draws[sums > 0]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha]) if draws.size else (value, value)
    return Estimate(value, float(low), float(high), int(a.size), "cluster_bootstrap")
