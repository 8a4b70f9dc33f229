"""Confidence intervals by the percentile bootstrap, seeded (the same numbers for the same scores)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def bootstrap_mean(values: Sequence[float], resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> Estimate:
    """The mean of ``values`` and its percentile-bootstrap interval (a single value: the interval is the value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size == 1:
        return Estimate(float(x[0]), float(x[0]), float(x[0]), 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return Estimate(float(x.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)),
                    int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> Estimate:
    """Mean of ``a[i] - b[i]`` with its interval: the same items resampled for both models."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} vs {len(b)}")
    return bootstrap_mean([x - y for x, y in zip(a, b)], resamples, confidence, seed)
