"""Audio input: wav reading, down-mixing and resampling to the frontend's rate.

Numpy and the standard library only, so the device needs no audio codec library.
The resampler is a stateful polyphase windowed-sinc filter: the same object serves
a whole file and a live stream in chunks (Wyoming clients send any rate).
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """An audio file or buffer that cannot be used, with the reason in its message."""


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Down-mix ``[n]`` or ``[n, channels]`` audio to mono by averaging channels."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float32)
    raise AudioError(f"audio must be [samples] or [samples, channels], got shape {samples.shape}")


def pcm_to_float(data: bytes, sample_width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM bytes to float32 ``[n, channels]`` in [-1, 1]."""
    if sample_width == 1:
        values = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_width == 2:
        values = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif sample_width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
        ints = raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        values = ints.astype(np.float32) / float(1 << 23)
    elif sample_width == 4:
        values = np.frombuffer(data, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioError(f"unsupported sample width {sample_width} bytes")
    frames = len(values) // channels
    return values[: frames * channels].reshape(frames, channels)


def read_wav(path: str | Path, target_rate: int = 16000) -> np.ndarray:
    """Read a PCM wav file as mono float32 at ``target_rate``.

    Any channel count is averaged to mono and 8 k / 22.05 k / 44.1 k / 48 k (any rate)
    is resampled. A file that is not a readable PCM wav raises :class:`AudioError`
    naming the file and the reason.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as handle:
            rate = handle.getframerate()
            width = handle.getsampwidth()
            channels = handle.getnchannels()
            data = handle.readframes(handle.getnframes())
    except FileNotFoundError as error:
        raise AudioError(f"{path}: no such file") from error
    except (wave.Error, EOFError) as error:
        raise AudioError(f"{path}: not a readable PCM wav file ({error})") from error
    if channels < 1 or rate < 1000:
        raise AudioError(f"{path}: implausible header ({channels} channels, {rate} Hz)")
    mono = to_mono(pcm_to_float(data, width, channels))
    return resample(mono, rate, target_rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 16000) -> None:
    """Write mono float samples in [-1, 1] as a 16-bit PCM wav."""
    ints = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(ints.tobytes())


class Resampler:
    """Streaming rational-ratio resampler (polyphase, Kaiser-windowed sinc).

    Output sample ``n`` sits at input position ``n * in_rate / out_rate``; it is
    computed once enough input has arrived on both sides of it. ``flush`` pads the
    end with silence so a whole clip yields ``ceil(len * out / in)`` samples.
    """

    def __init__(self, in_rate: int, out_rate: int, zero_crossings: int = 16) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        g = math.gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        self.passthrough = self.up == self.down
        ratio = min(1.0, self.up / self.down)
        self.half_taps = int(math.ceil(zero_crossings / ratio))
        taps = np.arange(2 * self.half_taps) - self.half_taps + 1  # input offsets k - base
        phases = np.arange(self.up)[:, None] / self.up
        distance = taps[None, :] - phases  # k - t, in input samples
        window = np.kaiser(2 * self.half_taps + 1, 8.6)
        window_at = np.interp(distance, np.arange(-self.half_taps, self.half_taps + 1), window, left=0, right=0)
        self._table = (ratio * np.sinc(ratio * distance) * window_at).astype(np.float32)
        self._buffer = np.zeros(self.half_taps - 1, dtype=np.float32)
        self._buffer_start = -(self.half_taps - 1)  # absolute input index of _buffer[0]
        self._received = 0
        self._next_out = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed mono input; return every output sample that is now complete."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return samples
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += len(samples)
        return self._emit(self._received)

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining outputs, padding the input with silence."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, np.zeros(self.half_taps, dtype=np.float32)])
        end = -(-self._received * self.up // self.down)  # ceil
        out = self._emit(self._received + self.half_taps, limit=end)
        self._buffer = self._buffer[: len(self._buffer) - self.half_taps]
        return out

    def _emit(self, available: int, limit: int | None = None) -> np.ndarray:
        # Output n needs input up to index base(n) + half_taps, exclusive of `available`.
        last = ((available - self.half_taps) * self.up - 1) // self.down  # largest n with base+half < available
        stop = last + 1 if limit is None else min(last + 1, limit)
        if stop <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self._next_out, stop, dtype=np.int64)
        base = (n * self.down) // self.up
        phase = (n * self.down) % self.up
        index = base[:, None] - self.half_taps + 1 + np.arange(2 * self.half_taps) - self._buffer_start
        out = (self._buffer[index] * self._table[phase]).sum(axis=1).astype(np.float32)
        self._next_out = stop
        keep_from = (stop * self.down) // self.up - self.half_taps + 1
        drop = max(0, keep_from - self._buffer_start)
        self._buffer = self._buffer[drop:]
        self._buffer_start += drop
        return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole mono clip."""
    if in_rate == out_rate:
        return np.asarray(samples, dtype=np.float32)
    resampler = Resampler(in_rate, out_rate)
    return np.concatenate([resampler.process(samples), resampler.flush()])
