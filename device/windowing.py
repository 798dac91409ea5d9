"""Placing one utterance in the encoder's fixed-length window.

Enrollment, ``kws embed``, evaluation and validation all embed a single take the
same way: trimmed, centred, padded with faint noise. Faint noise and not zeros,
because digital silence drives log-mel values to the floor, far from anything a
microphone (or training) produces.
"""

from __future__ import annotations

import numpy as np

DITHER_RMS = 1e-4  # about 3 int16 steps


def centre_in_window(samples: np.ndarray, window_samples: int) -> np.ndarray:
    """The utterance centred in ``window_samples`` samples (its middle kept if longer), with dither."""
    samples = np.asarray(samples, dtype=np.float32)
    window = np.random.default_rng(0).normal(0.0, DITHER_RMS, window_samples).astype(np.float32)
    if len(samples) >= window_samples:
        start = (len(samples) - window_samples) // 2
        return window + samples[start : start + window_samples]
    offset = (window_samples - len(samples)) // 2
    window[offset : offset + len(samples)] += samples
    return window
