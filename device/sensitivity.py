"""Sensitivity: one 0..1 dial per keyword, mapped onto its threshold through what calibration measured.

The meaning is Porcupine's: higher = more detections and more false alarms; 0.5 is the
threshold enrollment calibrated (:func:`device.enroll.calibrate_threshold`). Why not a
fixed shift of the cosine: keywords differ in how crowded the scores just under their
threshold are (a word with many look-alikes has many negative windows close below it), so
the same shift costs one keyword a few extra false alarms and another hundreds. Instead
the dial moves along each keyword's own negative-score distribution: every 0.1 above 0.5
doubles the number of negative-bank windows that score over the threshold (every 0.1
below halves it), so 0.7 lets in about four times the calibrated point's negatives for
every keyword, 0.3 a quarter.

Enrollment stores the tail of the bank's scores against the prototype
(``stats["negative_tail"]``: ``[rank, score]`` pairs, rank 1 the closest window) and how
many windows pass the calibrated threshold (``stats["negative_above_threshold"]``). The
threshold at sensitivity S is the calibrated one shifted by how much the tail's score
changes between that count and the count S asks for (log-linear between stored ranks,
extended along the end segments' slopes). Keywords enrolled before these stats existed
fall back to a fixed shift per 0.1 (``FALLBACK_SHIFT_PER_TENTH``: the tail mapping moved
8 espeak-enrolled keywords by a median 0.024 per 0.1 down to 0.3 and 0.038 per 0.1 up to
0.7, ``scripts/sensitivity_cost.py``); re-enrolling gives them the exact mapping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_SENSITIVITY = 0.5
FACTOR_PER_TENTH = 2.0  # each 0.1 of sensitivity multiplies the negative windows passing by this
# Ranks of the negative-score tail kept per keyword (~1.4x apart): 25 numbers, from the closest window to the 8192nd.
TAIL_RANKS = (
    1,
    2,
    3,
    4,
    6,
    8,
    11,
    16,
    23,
    32,
    45,
    64,
    91,
    128,
    181,
    256,
    362,
    512,
    724,
    1024,
    1448,
    2048,
    2896,
    4096,
    8192,
)
# Threshold shift per 0.1 for keywords without a stored tail (measured: see the module docstring).
FALLBACK_SHIFT_PER_TENTH = 0.03
# Thresholds stay in this range whatever the dial says: a cosine of 1 is never reached, under 0 all speech passes.
THRESHOLD_RANGE = (0.0, 0.995)


def check_sensitivity(value: object, what: str = "sensitivity") -> float:
    """``value`` as a float in [0, 1], or ValueError naming ``what`` and what was given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number between 0 and 1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be between 0 and 1 (0.5 = as calibrated, higher = more sensitive), got {value}")
    return float(value)


def negative_tail(negative_scores: np.ndarray, threshold: float) -> dict:
    """The calibration stats the mapping needs: the tail at ``TAIL_RANKS`` and the count over ``threshold``."""
    ordered = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    tail = [[rank, round(float(ordered[rank - 1]), 4)] for rank in TAIL_RANKS if rank <= len(ordered)]
    return {
        "negative_tail": tail,
        "negative_above_threshold": int(np.sum(ordered >= threshold)),
        "negative_bank_windows": len(ordered),
    }


def _tail_score(tail: Sequence[Sequence[float]], log_rank: float) -> float:
    """Score at a (fractional) rank: log-linear between stored ranks, linear in log rank past either end."""
    x = np.log([float(r) for r, _ in tail])
    y = np.array([float(s) for _, s in tail])
    if len(x) == 1:
        return float(y[0])
    if log_rank <= x[0]:
        slope = (y[1] - y[0]) / (x[1] - x[0])
        return float(y[0] + slope * (log_rank - x[0]))
    if log_rank >= x[-1]:
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        return float(y[-1] + slope * (log_rank - x[-1]))
    return float(np.interp(log_rank, x, y))


def threshold_at(threshold: float, stats: dict, sensitivity: float) -> float:
    """The threshold a keyword (calibrated ``threshold``, enrollment ``stats``) has at ``sensitivity``."""
    sensitivity = check_sensitivity(sensitivity)
    tenths = (sensitivity - DEFAULT_SENSITIVITY) * 10
    if tenths == 0:
        return float(threshold)
    tail = stats.get("negative_tail")
    if not tail or len(tail) < 2:
        shifted = threshold - tenths * FALLBACK_SHIFT_PER_TENTH
    else:
        base = math.log(max(1, int(stats.get("negative_above_threshold", 1))))
        target = base + tenths * math.log(FACTOR_PER_TENTH)
        shifted = threshold + _tail_score(tail, target) - _tail_score(tail, base)
    return float(np.clip(shifted, *THRESHOLD_RANGE))
