"""95% intervals for every reported figure: Wilson for rates, bootstrap for means, and when two overlap.

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
