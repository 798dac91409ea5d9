"""Energy-based trimming and level checks for single utterances.

Why energy and not a trained VAD: enrollment takes are short and recorded on
purpose, so the word is by far the loudest thing in them; a relative energy gate
finds it robustly in any language, with no model to ship. The trainer uses the
same function, so training clips and enrollment takes are cut the same way.
"""

from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.01


def frame_energy_db(samples: np.ndarray, rate: int = 16000) -> np.ndarray:
    """RMS level of consecutive 10 ms frames in dBFS (floor -120 dB)."""
    size = max(1, int(rate * FRAME_SECONDS))
    count = len(samples) // size
    if count == 0:
        return np.zeros(0)
    frames = np.asarray(samples[: count * size], dtype=np.float64).reshape(count, size)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def speech_bounds(
    samples: np.ndarray, rate: int = 16000, relative_db: float = 30.0, absolute_db: float = -55.0
) -> tuple[int, int] | None:
    """Sample range ``[start, end)`` from the first to the last frame within ``relative_db`` of the loudest.

    Frames below ``absolute_db`` never count as speech. Returns None when nothing does.
    """
    energy = frame_energy_db(samples, rate)
    if len(energy) == 0:
        return None
    active = np.nonzero((energy >= energy.max() - relative_db) & (energy >= absolute_db))[0]
    if len(active) == 0:
        return None
    size = int(rate * FRAME_SECONDS)
    return int(active[0] * size), int((active[-1] + 1) * size)


def trim_silence(samples: np.ndarray, rate: int = 16000, margin_seconds: float = 0.1) -> np.ndarray:
    """The utterance with ``margin_seconds`` of context either side; the input unchanged if no speech."""
    bounds = speech_bounds(samples, rate)
    if bounds is None:
        return samples
    margin = int(margin_seconds * rate)
    return samples[max(0, bounds[0] - margin) : min(len(samples), bounds[1] + margin)]
