"""Audio input: resampling, down-mixing and wav reading with clear errors."""

import wave

import numpy as np
import pytest

from device.audio import AudioError, Resampler, read_wav, resample, to_mono, write_wav


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_tone_and_the_duration(rate):
    out = resample(_tone(1000.0, rate), rate, 16000)
    assert abs(len(out) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    peak_hz = np.argmax(spectrum) * 16000 / (len(out) - 4000)
    assert abs(peak_hz - 1000.0) < 5
    assert abs(np.sqrt(np.mean(out[2000:-2000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_removes_content_above_the_new_nyquist():
    out = resample(_tone(12000.0, 48000), 48000, 16000)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.01


def test_streaming_resampler_equals_whole_clip():
    audio = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    whole = resample(audio, 44100, 16000)
    r, pieces, i = Resampler(44100, 16000), [], 0
    rng = np.random.default_rng(1)
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        pieces.append(r.process(audio[i : i + n]))
        i += n
    pieces.append(r.flush())
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)


def test_stereo_is_averaged():
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1)
    np.testing.assert_allclose(to_mono(stereo), np.full(10, 0.25))


def test_read_wav_converts_rate_and_channels(tmp_path):
    path = tmp_path / "stereo48k.wav"
    tone = _tone(500.0, 48000)
    ints = (np.stack([tone, tone], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(48000)
        handle.writeframes(ints.tobytes())
    audio = read_wav(path)
    assert abs(len(audio) - 16000) <= 1
    assert abs(np.max(np.abs(audio[100:-100])) - 0.5) < 0.02


def test_write_then_read_round_trip(tmp_path):
    tone = _tone(440.0, 16000)
    write_wav(tmp_path / "a.wav", tone)
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav"), tone, atol=1e-4)


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(AudioError, match="not a readable PCM wav"):
        read_wav(bad)
    with pytest.raises(AudioError, match="no such file"):
        read_wav(tmp_path / "missing.wav")
