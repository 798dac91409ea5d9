"""The one log-mel feature frontend, shared by the device runtime and the trainer.

Why one implementation: if training and the device computed features even slightly
differently, the encoder would be evaluated on inputs it never saw. The trainer
imports this module; nothing else computes mel features.

The frontend is *streaming first*: :class:`LogMelStream` accepts audio in chunks of
any size and emits every complete frame exactly once. :func:`log_mel` on a whole clip
is the same stream fed in one chunk, and every per-frame operation is computed row by
row (no BLAS call whose blocking could depend on how many frames arrived together), so
whole-clip and streamed frames are bit-identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class FrontendConfig:
    """Frontend parameters; written into every model manifest and checked on load."""

    sample_rate: int = 16000
    window_samples: int = 400  # 25 ms
    hop_samples: int = 160  # 10 ms
    fft_size: int = 512
    num_mels: int = 40
    fmin_hz: float = 20.0
    fmax_hz: float = 7600.0
    log_floor: float = 1e-6

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FrontendConfig:
        return cls(**values)

    def num_frames(self, num_samples: int) -> int:
        """Number of complete frames in ``num_samples`` samples."""
        if num_samples < self.window_samples:
            return 0
        return 1 + (num_samples - self.window_samples) // self.hop_samples

    def samples_for_frames(self, num_frames: int) -> int:
        """Fewest samples that yield ``num_frames`` frames."""
        return self.window_samples + (num_frames - 1) * self.hop_samples


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale (the one ``tf.signal`` uses)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_weight_matrix(config: FrontendConfig) -> np.ndarray:
    """Triangular mel filters, shape ``[fft_size // 2 + 1, num_mels]``, float64.

    Same definition as ``tf.signal.linear_to_mel_weight_matrix``: band edges equally
    spaced on the HTK mel scale, triangles evaluated in mel space at each FFT bin's
    centre frequency, the DC bin left out.
    """
    num_bins = config.fft_size // 2 + 1
    bin_mels = hz_to_mel(np.linspace(0.0, config.sample_rate / 2.0, num_bins))[1:]
    edges = np.linspace(hz_to_mel(config.fmin_hz), hz_to_mel(config.fmax_hz), config.num_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels[:, None] - lower) / (centre - lower)
    falling = (upper - bin_mels[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, config.num_mels)), weights])


class LogMelStream:
    """Incremental log-mel frontend: ``feed`` audio chunks, get the new frames."""

    def __init__(self, config: FrontendConfig | None = None) -> None:
        self.config = config or FrontendConfig()
        c = self.config
        n = np.arange(c.window_samples)
        self._window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / c.window_samples)).astype(np.float32)
        weights = mel_weight_matrix(c).astype(np.float32)  # [bins, mels]
        # Each filter is non-zero on one contiguous run of bins: keep only those
        # (bin, weight) pairs, band after band, and sum each band's run.
        bins, bands = np.nonzero(weights.T)[::-1]
        self._mel_bins = bins
        self._mel_weights = weights[bins, bands]
        self._band_starts = np.searchsorted(bands, np.arange(c.num_mels))
        self._buffer = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        """Forget buffered audio (start of a new, unrelated stream)."""
        self._buffer = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Append mono float samples at ``config.sample_rate``; return new frames ``[n, num_mels]``."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, samples])
        c = self.config
        count = c.num_frames(len(self._buffer))
        if count == 0:
            return np.zeros((0, c.num_mels), dtype=np.float32)
        starts = np.arange(count) * c.hop_samples
        frames = self._buffer[starts[:, None] + np.arange(c.window_samples)]
        self._buffer = self._buffer[count * c.hop_samples :]
        return self._frames_to_log_mel(frames)

    def _frames_to_log_mel(self, frames: np.ndarray) -> np.ndarray:
        spectrum = np.fft.rfft(frames * self._window, n=self.config.fft_size, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        # A segmented sum instead of a BLAS matmul: its reduction order per frame does
        # not depend on how many frames are in this batch, which keeps streaming exact.
        mel = np.add.reduceat(power[:, self._mel_bins] * self._mel_weights, self._band_starts, axis=1)
        return np.log(mel + np.float32(self.config.log_floor)).astype(np.float32)


def log_mel(samples: np.ndarray, config: FrontendConfig | None = None) -> np.ndarray:
    """Log-mel frames ``[n, num_mels]`` of a whole mono clip at the frontend's rate."""
    return LogMelStream(config).feed(samples)
