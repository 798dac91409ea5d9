"""The arithmetic every figure in the benchmarks rests on, kept tiny so tests can check it by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.96


def mean_ci(values: Sequence[float] | np.ndarray, z: float = Z95) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation confidence interval, ``z * std / sqrt(n)``.

    ``std`` is the sample standard deviation (ddof=1): episodes are a sample of all possible
    episodes. One value has no spread to estimate, so its half-width is reported as 0.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), 0.0
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(x.size))


def frr(missed: int, keywords: int) -> float:
    """False-reject rate: missed keyword occurrences over all keyword occurrences."""
    return missed / keywords if keywords else float("nan")


def fa_per_hour(false_alarms: int, negative_seconds: float) -> float:
    """False alarms per hour of audio in which the keyword was not spoken."""
    return false_alarms / (negative_seconds / 3600.0) if negative_seconds > 0 else float("nan")


def threshold_at_frr(known_best: np.ndarray, target_frr: float) -> float:
    """The highest threshold that rejects at most ``target_frr`` of the known queries (accept: score >= t)."""
    scores = np.sort(np.asarray(known_best, dtype=np.float64))
    if scores.size == 0:
        return float("nan")
    rejected = int(math.floor(target_frr * scores.size + 1e-9))
    return float(scores[min(rejected, scores.size - 1)])


def rate_at(xs: np.ndarray, ys: np.ndarray, x_max: float) -> float:
    """Smallest ``y`` over operating points whose ``x`` is at most ``x_max`` (nan if none).

    Used both ways on a threshold sweep: FRR at a fixed FA/hour, and FA/hour at a fixed FRR.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    ok = xs <= x_max + 1e-12
    return float(ys[ok].min()) if ok.any() else float("nan")


def poisson_upper(events: int, confidence: float = 0.95) -> float:
    """Exact one-sided upper bound on a Poisson mean after observing ``events`` (Garwood).

    Why exact: false alarms on hours of talk are a few counts per keyword, where a normal
    approximation says nothing useful (0 observed gives ~3.0, not 0). The bound is the mean
    whose chance of showing ``events`` or fewer is ``1 - confidence``, found by bisection
    on the Poisson CDF (no SciPy on the device side of the project, and none needed).
    """
    if events < 0:
        raise ValueError(f"a count cannot be negative: {events}")
    alpha = 1.0 - confidence

    def cdf(mean: float) -> float:
        term = total = math.exp(-mean)
        for i in range(1, events + 1):
            term *= mean / i
            total += term
        return total

    low, high = float(events), float(events) + 10.0 * math.sqrt(events + 1) + 10.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) > alpha else (low, middle)
    return (low + high) / 2
