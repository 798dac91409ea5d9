"""Takes recorded in ordinary rooms (DC offset, mains hum, a fan) are trimmed to their word and enroll."""

from pathlib import Path

import numpy as np
import pytest
from spoken import RATE, say

from device.encoder import Encoder
from device.enroll import EnrollmentError, check_take, embed_takes
from device.noise import coloured_noise
from device.vad import remove_dc, speech_bounds

MODEL = Path(__file__).resolve().parents[1] / "firmware_models" / "encoder.tflite"
WINDOW_SECONDS = 1.5  # longer than the shipped encoder's window is never accepted; 2 s takes must trim below it


def _room_take(word: np.ndarray, seed: int, dc: float = 0.08, hum_db: float = -32.0, fan_db: float = -42.0):
    """The word at 0.7 s in 2.2 s of room: DC offset, 50 Hz hum with harmonics, and a pink-noise fan."""
    rng = np.random.default_rng(seed)
    n = int(2.2 * RATE)
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3))
    hum *= 10 ** (hum_db / 20) / np.sqrt(np.mean(hum**2))
    fan = coloured_noise(n, rng, exponent=1.0) * 10 ** (fan_db / 20)
    take = dc + hum + fan
    start = int(0.7 * RATE)
    take[start : start + len(word)] += word
    return take.astype(np.float32), start, start + len(word)


def _word_bounds(word: np.ndarray) -> tuple[int, int]:
    return speech_bounds(word, RATE)


def test_dc_is_removed():
    samples = np.full(1600, 0.25, np.float32) + np.sin(np.arange(1600) / 5).astype(np.float32) * 0.1
    assert abs(float(np.mean(remove_dc(samples)))) < 1e-6


def test_a_room_take_is_trimmed_to_its_word():
    word = say("hey toaster")
    clean_start, clean_end = _word_bounds(word)
    take, start, _ = _room_take(word, seed=1)
    bounds = speech_bounds(take, RATE, floor_aware=True)
    assert bounds is not None
    # the old gate (30 dB under the peak alone) counted the whole 2.2 s of hum and fan as speech
    found = (bounds[1] - bounds[0]) / RATE
    assert found < (clean_end - clean_start) / RATE + 0.15, found
    # a breathy onset may sink under hum this loud; the 0.1 s the take check keeps either side covers it
    assert bounds[0] - RATE // 10 <= start + clean_start
    assert bounds[1] + RATE // 10 >= start + clean_end


def test_a_clean_clip_is_cut_the_same_either_way():
    word = np.concatenate([np.zeros(4000, np.float32), say("seven"), np.zeros(4000, np.float32)])
    word += np.random.default_rng(0).normal(0, 1e-4, len(word)).astype(np.float32)  # a quiet, steady floor
    assert speech_bounds(word, RATE, floor_aware=True) == speech_bounds(word, RATE)


def test_the_peak_only_gate_still_counts_the_room_as_speech():
    """What the take check used to do, and training clips still do: why the floor gate exists."""
    take, _, _ = _room_take(say("hey toaster"), seed=1)
    start, end = speech_bounds(take, RATE)
    assert (end - start) / RATE > 2.0


def test_room_takes_pass_the_take_check_without_dc():
    take, _, _ = _room_take(say("hey toaster"), seed=2, dc=0.2)
    speech = check_take(take, "take 1", max_seconds=WINDOW_SECONDS)
    assert len(speech) / RATE < 1.3
    assert abs(float(np.mean(speech))) < 0.02  # the DC is gone, not just trimmed around


def test_a_take_that_is_all_floor_is_still_refused():
    take, _, _ = _room_take(np.zeros(1, np.float32), seed=3, dc=0.3, hum_db=-60.0, fan_db=-70.0)
    with pytest.raises(EnrollmentError, match="silent"):
        check_take(take, "take 1", max_seconds=WINDOW_SECONDS)


@pytest.mark.skipif(not MODEL.exists(), reason=f"shipped encoder missing at {MODEL}")
def test_room_takes_enroll_with_the_shipped_encoder():
    encoder = Encoder(MODEL)
    takes = [(f"take {i}", _room_take(say("hey toaster", pitch=40 + 8 * i), seed=10 + i)[0]) for i in range(3)]
    checked = embed_takes(encoder, takes)
    assert len(checked) == 3
    assert all(t.speech_seconds < 1.3 for t in checked)
