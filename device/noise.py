"""Coloured noise, generated: the device's enrollment mixes it into takes, and the trainer augments with it."""

from __future__ import annotations

import numpy as np


def coloured_noise(num_samples: int, rng: np.random.Generator, exponent: float | None = None) -> np.ndarray:
    """Gaussian noise with a ``1/f**exponent`` power spectrum and unit RMS, float32.

    White is 0, pink 1, brown 2; ``None`` draws the exponent uniformly from [0, 2] so
    training sees the whole range between hiss and rumble. Shaped in the frequency
    domain (DC removed), which gives the exact slope at any length. A clip too short
    to hold any non-DC frequency (under 2 samples) comes back as zeros.
    """
    if num_samples < 2:
        return np.zeros(num_samples, dtype=np.float32)
    if exponent is None:
        exponent = rng.uniform(0.0, 2.0)
    bins = num_samples // 2 + 1
    spectrum = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    shape = np.zeros(bins)
    shape[1:] = np.arange(1, bins) ** (-exponent / 2.0)
    noise = np.fft.irfft(spectrum * shape, n=num_samples)
    rms = float(np.sqrt(np.mean(np.square(noise))))
    return (noise / rms if rms > 0 else noise).astype(np.float32)
