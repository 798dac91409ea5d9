"""Threshold calibration at enrollment, against hand-computed cases."""

import numpy as np
import pytest

from device.enroll import NEGATIVE_SIGMAS, calibrate_threshold


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _negatives_scoring(values: np.ndarray) -> np.ndarray:
    """Unit vectors whose cosine with the x axis is exactly each of ``values``."""
    return np.stack([values, np.sqrt(1.0 - values**2), np.zeros_like(values)], axis=1)


# three takes spread symmetrically round the x axis: their prototype is exactly x
TAKES = _unit([[1.0, 0.0, 0.05], [1.0, 0.0433, -0.025], [1.0, -0.0433, -0.025]])


def test_threshold_sits_the_set_number_of_standard_deviations_above_the_negative_bank():
    values = np.array([-0.2, 0.0, 0.1, 0.3])  # mean 0.05, population std 0.1803
    threshold, stats = calibrate_threshold(TAKES, _negatives_scoring(values))
    assert threshold == pytest.approx(values.mean() + NEGATIVE_SIGMAS * values.std(), abs=1e-6)
    assert stats["negative_mean"] == pytest.approx(0.05, abs=1e-4)
    assert stats["negative_std"] == pytest.approx(0.1803, abs=1e-4)
    assert "warning" not in stats  # the takes score ~0.998, far above 0.77


def test_takes_scoring_below_the_threshold_are_reported():
    values = np.array([0.5, 0.6, 0.7, 0.8])  # mean + 4 std = 1.09: above any cosine
    threshold, stats = calibrate_threshold(TAKES, _negatives_scoring(values))
    assert threshold == 0.95  # clipped into [0.3, 0.95]
    assert "may be missed" in stats["warning"]
    assert stats["take_sigmas_loo_min"] < NEGATIVE_SIGMAS


def test_without_a_bank_the_threshold_sits_under_the_takes():
    threshold, stats = calibrate_threshold(TAKES, None)
    assert threshold == pytest.approx(min(stats["take_scores_loo"]) - 0.1, abs=1e-4)
