"""The log-mel frontend: streaming == whole clip, and agreement with references."""

import importlib.util
import math

import numpy as np
import pytest

from device.frontend import FrontendConfig, LogMelStream, log_mel, mel_weight_matrix

CONFIG = FrontendConfig()


def _textbook_log_mel(samples: np.ndarray, config: FrontendConfig) -> np.ndarray:
    """Float64, loop-based log-mel from the definitions: direct DFT, mel triangles in Hz terms."""

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    def inverse_mel(m: float) -> float:
        return 700.0 * (math.exp(m / 1127.0) - 1.0)

    lo, hi = mel(config.fmin_hz), mel(config.fmax_hz)
    edges_hz = [inverse_mel(lo + (hi - lo) * i / (config.num_mels + 1)) for i in range(config.num_mels + 2)]
    num_bins = config.fft_size // 2 + 1
    filters = np.zeros((config.num_mels, num_bins))
    for band in range(config.num_mels):
        left, centre, right = (mel(edges_hz[band + i]) for i in range(3))
        for k in range(1, num_bins):  # DC excluded
            m = mel(k * config.sample_rate / config.fft_size)
            if left < m <= centre:
                filters[band, k] = (m - left) / (centre - left)
            elif centre < m < right:
                filters[band, k] = (right - m) / (right - centre)
    n = np.arange(config.window_samples)
    window = 0.5 - 0.5 * np.cos(2 * math.pi * n / config.window_samples)
    k = np.arange(num_bins)
    dft = np.exp(-2j * math.pi * np.outer(n, k) / config.fft_size)  # zero padding = truncated sum
    count = 1 + (len(samples) - config.window_samples) // config.hop_samples
    out = np.zeros((count, config.num_mels))
    for t in range(count):
        frame = samples[t * config.hop_samples : t * config.hop_samples + config.window_samples].astype(np.float64)
        power = np.abs((frame * window) @ dft) ** 2
        out[t] = np.log(filters @ power + config.log_floor)
    return out


def test_streaming_matches_whole_clip_bit_for_bit():
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    whole = log_mel(audio)
    for trial in range(5):
        stream, pieces, i = LogMelStream(), [], 0
        while i < len(audio):
            size = int(rng.integers(1, 4000 if trial % 2 else 200))
            pieces.append(stream.feed(audio[i : i + size]))
            i += size
        streamed = np.concatenate(pieces)
        assert streamed.shape == whole.shape
        assert np.array_equal(streamed, whole)


def test_frame_count_and_dtype():
    frames = log_mel(np.zeros(CONFIG.samples_for_frames(120), dtype=np.float32))
    assert frames.shape == (120, 40) and frames.dtype == np.float32
    assert log_mel(np.zeros(399, dtype=np.float32)).shape == (0, 40)


def test_matches_textbook_float64_reference():
    rng = np.random.default_rng(2)
    t = np.arange(8000) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    ours = log_mel(audio.astype(np.float32))
    reference = _textbook_log_mel(audio, CONFIG)
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) < 1e-3


def test_sine_peaks_in_the_band_nearest_its_frequency():
    weights = mel_weight_matrix(CONFIG)
    bin_hz = np.arange(weights.shape[0]) * CONFIG.sample_rate / CONFIG.fft_size
    centres = bin_hz[np.argmax(weights, axis=0)]
    for freq in (300.0, 1000.0, 3000.0, 6000.0):
        t = np.arange(16000) / 16000
        frames = log_mel((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
        loudest = int(np.argmax(frames.mean(axis=0)))
        assert abs(centres[loudest] - freq) <= 2 * (centres[min(loudest + 1, 39)] - centres[loudest]) + 40


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow not installed (trainer extra)")
def test_mel_matrix_matches_tf_signal():
    import tensorflow as tf

    theirs = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=CONFIG.num_mels,
        num_spectrogram_bins=CONFIG.fft_size // 2 + 1,
        sample_rate=CONFIG.sample_rate,
        lower_edge_hertz=CONFIG.fmin_hz,
        upper_edge_hertz=CONFIG.fmax_hz,
        dtype=tf.float64,
    ).numpy()
    np.testing.assert_allclose(mel_weight_matrix(CONFIG), theirs, atol=1e-6)
