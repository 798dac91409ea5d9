"""Audio input: reading audio files, down-mixing and resampling to the frontend's rate.

Files are read with libsndfile (``soundfile``, whose wheels bundle it, also for aarch64):
PCM wav of any width (WAVE_FORMAT_EXTENSIBLE too), float wav, FLAC, Ogg Vorbis/Opus, MP3,
AIFF and the rest libsndfile knows. :func:`stream_audio` reads a file in blocks, so a long
recording never sits in memory whole. Resampling is soxr's, and the trainer imports
:func:`resample` from here, so a clip at another rate gives the trainer and the device
the same features.
"""

from __future__ import annotations

import os
import secrets
import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import soxr

# Rates a real recording has (telephone 8 kHz .. studio 768 kHz); outside them the header is damaged.
MIN_RATE, MAX_RATE = 1000, 768_000
# Frames read at a time: 1.4 s at 48 kHz, ~0.5 MB of float32 for stereo.
BLOCK_FRAMES = 1 << 16
# soxr's "high quality" (20-bit precision, passband to 91% of Nyquist): what training and the device use.
QUALITY = "HQ"
FORMATS = "wav (8/16/24/32-bit PCM or float), FLAC, Ogg Vorbis/Opus, MP3, AIFF; any rate, mono or stereo"


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


def _convert_hint(path: Path) -> str:
    return f"convert it with `sox {path.name} -r 16000 -c 1 -b 16 fixed.wav` (or `ffmpeg -i {path.name} fixed.wav`)"


def _wav_format(path: Path) -> tuple[int, int, int, int] | None:
    """(format tag, channels, rate, bits) from a RIFF/WAVE file's ``fmt`` chunk; None for other files.

    Why parse it here: libsndfile refuses some damaged headers (a 4 GHz rate overflows its int)
    with a message about its own internals; the header's values tell the user what is wrong.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
                return None
            while len(chunk := handle.read(8)) == 8:
                size = struct.unpack("<I", chunk[4:])[0]
                if chunk[:4] == b"fmt ":
                    body = handle.read(16)
                    if len(body) < 16:
                        return None
                    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body)
                    return tag, channels, rate, bits
                handle.seek(size + size % 2, os.SEEK_CUR)
    except OSError:
        return None
    return None


def _check_rate(path: Path, rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(
            f"{path}: its header says {rate} Hz, not a plausible sample rate ({MIN_RATE}..{MAX_RATE} Hz): "
            f"the header is damaged; {_convert_hint(path)} if it plays elsewhere"
        )


def _open(path: Path) -> soundfile.SoundFile:
    """``path`` opened for reading, or :class:`AudioError` saying what is wrong with it and what to do."""
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file (give recordings: {FORMATS})")
    try:
        with open(path, "rb"):  # the OS's reason (missing, permission) before libsndfile's vaguer one
            pass
    except FileNotFoundError as error:
        raise AudioError(f"{path}: no such file") from error
    except OSError as error:
        raise AudioError(f"{path}: cannot open it ({error.strerror})") from error
    try:
        handle = soundfile.SoundFile(str(path))
    except (soundfile.SoundFileError, RuntimeError) as error:
        reason = (getattr(error, "error_string", None) or str(error)).rstrip(".")
        header = _wav_format(path)
        if header is None:
            raise AudioError(f"{path}: not a readable audio file ({reason}); {_convert_hint(path)}") from error
        tag, channels, rate, bits = header
        _check_rate(path, rate)
        raise AudioError(
            f"{path}: a wav file that cannot be decoded ({reason}: format 0x{tag:04x}, {bits}-bit, "
            f"{channels} channels, {rate} Hz); {_convert_hint(path)}"
        ) from error
    try:
        _check_rate(path, handle.samplerate)
    except AudioError:
        handle.close()
        raise
    return handle


def stream_audio(path: str | Path, target_rate: int = 16000, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Mono float32 pieces of an audio file at ``target_rate``, read ``block_frames`` frames at a time.

    Memory stays bounded by the block, whatever the file's length. Channels are averaged and
    the rate converted with a streaming :class:`Resampler`, so the pieces put together equal
    :func:`resample` of the whole file (within float rounding). A file cut off mid-sample
    yields the whole frames it has. Raises :class:`AudioError` naming the file and the reason.
    """
    path = Path(path)
    with _open(path) as handle:
        resampler = Resampler(handle.samplerate, target_rate)
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (soundfile.SoundFileError, RuntimeError) as error:
                seconds = handle.tell() / handle.samplerate
                raise AudioError(f"{path}: damaged after {seconds:.1f} s ({error}); {_convert_hint(path)}") from error
            if len(block) == 0:
                break
            yield resampler.process(to_mono(block))
        yield resampler.flush()


def read_wav(path: str | Path, target_rate: int = 16000) -> np.ndarray:
    """Read an audio file (any format of :data:`FORMATS`, not only wav) as mono float32 at ``target_rate``.

    A file that cannot be used raises :class:`AudioError` naming the file, the reason and how to convert it.
    """
    return np.concatenate(list(stream_audio(path, target_rate)))


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 16000) -> None:
    """Write mono float samples in [-1, 1] as a 16-bit PCM wav, atomically.

    The data goes to a temporary file in the same folder, is fsynced, then renamed over
    ``path``: a reader (or a crash) sees the old file or the whole new one, never half a
    take. Making the rename itself durable (fsyncing the folder) is the caller's choice.
    """
    path = Path(path)
    ints = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    # Not tempfile.mkstemp: its files are private (0600); os.open's 0666 honours the umask as open() would.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as raw:
            with wave.open(raw, "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(rate)
                handle.writeframes(ints.tobytes())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class Resampler:
    """Streaming resampler (soxr, :data:`QUALITY`): one object per stream, fed chunks of any size.

    ``process`` returns the output that is ready. soxr filters in blocks, so output comes in
    bursts and lags the input by up to ~0.1 s for 8 kHz input (~30 ms at 48 kHz); ``flush``
    ends the stream with the rest, after which the object serves a new stream. A whole
    stream's output equals :func:`resample` of its whole input (within float rounding):
    ``round(len * out_rate / in_rate)`` samples, halves rounded up, aligned with the input
    (soxr removes its filter's delay). Memory is bounded by the chunk size. Equal rates
    pass the samples through untouched.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.passthrough = in_rate == out_rate
        self._stream = (
            None if self.passthrough else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=QUALITY)
        )

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed mono input; return every output sample that is now ready."""
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining output and get ready for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return out


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole mono clip: ``round(len * out_rate / in_rate)`` samples, as :class:`Resampler` streams it."""
    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if in_rate == out_rate:
        return samples
    if in_rate <= 0 or out_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
    return soxr.resample(samples, in_rate, out_rate, quality=QUALITY)
