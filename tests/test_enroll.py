"""Enrollment: threshold calibration against hand-computed cases, and the takes' noise-averaged embedding."""

from pathlib import Path

import numpy as np
import pytest
from spoken import say

from device.encoder import Encoder
from device.enroll import CLOSEST_MARGIN, CLOSEST_NEGATIVES, calibrate_threshold, enrollment_embedding
from device.noise import coloured_noise


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _negatives_scoring(values: np.ndarray) -> np.ndarray:
    """Unit vectors whose cosine with the x axis is exactly each of ``values``."""
    return np.stack([values, np.sqrt(1.0 - values**2), np.zeros_like(values)], axis=1)


# three takes spread symmetrically round the x axis: their prototype is exactly x
TAKES = _unit([[1.0, 0.0, 0.05], [1.0, 0.0433, -0.025], [1.0, -0.0433, -0.025]])


def test_threshold_sits_just_under_the_closest_windows_of_the_negative_bank():
    closest = np.linspace(0.55, 0.64, CLOSEST_NEGATIVES)  # mean 0.595
    values = np.concatenate([np.linspace(-0.3, 0.4, 200), closest])
    threshold, stats = calibrate_threshold(TAKES, _negatives_scoring(values))
    assert threshold == pytest.approx(0.595 - CLOSEST_MARGIN, abs=1e-6)
    assert stats["negative_closest"] == pytest.approx(0.595, abs=1e-4)
    assert stats["negative_mean"] == pytest.approx(values.mean(), abs=1e-4)
    assert "warning" not in stats  # the takes score ~0.998, far above


def test_the_bulk_of_the_bank_does_not_move_the_threshold():
    closest = np.full(CLOSEST_NEGATIVES, 0.6)
    low, high = np.full(500, -0.5), np.full(500, 0.5)  # very different bulks, same closest words
    first, _ = calibrate_threshold(TAKES, _negatives_scoring(np.concatenate([low, closest])))
    second, _ = calibrate_threshold(TAKES, _negatives_scoring(np.concatenate([high, closest])))
    assert first == pytest.approx(second, abs=1e-6)


def test_takes_scoring_below_the_threshold_are_reported():
    # takes spread wide round the x axis (prototype x; each scores 0.759 against the other two's mean)
    spread = _unit([[1.0, 0.0, 0.5], [1.0, 0.433, -0.25], [1.0, -0.433, -0.25]])
    threshold, stats = calibrate_threshold(spread, _negatives_scoring(np.full(50, 0.9)))
    assert threshold == pytest.approx(0.9 - CLOSEST_MARGIN, abs=1e-6)
    assert "may be missed" in stats["warning"]
    assert stats["take_margin_loo_min"] == pytest.approx(0.759 - threshold, abs=1e-3)


def test_the_threshold_is_clipped_to_a_usable_range():
    threshold, _ = calibrate_threshold(TAKES, _negatives_scoring(np.full(50, 0.999)))
    assert threshold == 0.95


def test_without_a_bank_the_threshold_sits_under_the_takes():
    threshold, stats = calibrate_threshold(TAKES, None)
    assert threshold == pytest.approx(min(stats["take_scores_loo"]) - 0.1, abs=1e-4)


def test_enrollment_embedding_is_repeatable_and_leans_towards_the_word_in_noise():
    encoder = Encoder(Path(__file__).resolve().parents[1] / "firmware_models" / "encoder.tflite")
    word = say("hey toaster")
    robust = enrollment_embedding(encoder, word)
    np.testing.assert_array_equal(robust, enrollment_embedding(encoder, word))
    assert np.linalg.norm(robust) == pytest.approx(1.0, abs=1e-5)
    # the same word heard later in other (brown) noise at 12 dB: closer to the robust embedding than to the clean one
    rms = float(np.sqrt(np.mean(word**2)))
    heard = []
    for seed in range(4):
        noise = coloured_noise(len(word), np.random.default_rng(100 + seed), exponent=2.0) * rms / 10 ** (12 / 20)
        heard.append(encoder.embed_utterance(word + noise))
    clean = encoder.embed_utterance(word)
    assert np.mean(np.stack(heard) @ robust) > np.mean(np.stack(heard) @ clean)
