"""Audio input: resampling, down-mixing, reading every common format in blocks, clear errors, atomic writes."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from device.audio import AudioError, Resampler, read_wav, resample, stream_audio, to_mono, write_wav

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _raw_wav(path: Path, rate: int = 16000, bits: int = 16, channels: int = 1, data: bytes = b"\0" * 400) -> Path:
    """A PCM wav with exactly these header fields (the ``wave`` module refuses to write odd ones)."""
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# -- resampling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_tone_and_the_duration(rate):
    out = resample(_tone(1000.0, rate), rate, 16000)
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    peak_hz = np.argmax(spectrum) * 16000 / (len(out) - 4000)
    assert abs(peak_hz - 1000.0) < 5
    assert abs(np.sqrt(np.mean(out[2000:-2000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_removes_content_above_the_new_nyquist():
    out = resample(_tone(12000.0, 48000), 48000, 16000)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.01


@pytest.mark.parametrize(("in_rate", "out_rate"), [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 15200)])
def test_streaming_resampler_equals_whole_clip_in_any_chunks(in_rate, out_rate):
    audio = np.random.default_rng(0).standard_normal(in_rate + 7).astype(np.float32)
    whole = resample(audio, in_rate, out_rate)
    # The documented length: round(len * out / in), halves up.
    assert len(whole) == (2 * len(audio) * out_rate + in_rate) // (2 * in_rate)
    r, pieces, i = Resampler(in_rate, out_rate), [], 0
    rng = np.random.default_rng(1)
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        pieces.append(r.process(audio[i : i + n]))
        i += n
    pieces.append(r.flush())
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-6)


def test_a_flushed_resampler_serves_a_new_stream_and_equal_rates_pass_through():
    audio = np.random.default_rng(2).standard_normal(4800).astype(np.float32)
    r = Resampler(48000, 16000)
    first = np.concatenate([r.process(audio), r.flush()])
    second = np.concatenate([r.process(audio), r.flush()])
    np.testing.assert_array_equal(first, second)
    same = Resampler(16000, 16000)
    np.testing.assert_array_equal(same.process(audio), audio)
    assert len(same.flush()) == 0


def test_resampler_memory_is_bounded_by_the_chunk():
    # 1 M samples at 4 kHz in one chunk: the old polyphase code built a [4 M x 32] int64 index (2.1 GB).
    code = (
        "import resource, numpy as np\n"
        "from device.audio import Resampler\n"
        "chunk = np.zeros(1_000_000, np.float32)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out = Resampler(4000, 16000).process(chunk)\n"
        "print(len(out), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outputs, grown_kb = map(int, result.stdout.split())
    assert outputs > 3_900_000  # soxr holds back only its filter's latency
    assert grown_kb < 100_000, f"{grown_kb} KB for a 4 MB chunk"


def test_stereo_is_averaged():
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1)
    np.testing.assert_allclose(to_mono(stereo), np.full(10, 0.25))


# -- reading files -------------------------------------------------------------------------------------------


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
    assert len(audio) == 16000
    assert abs(np.max(np.abs(audio[100:-100])) - 0.5) < 0.02


@pytest.mark.parametrize(
    ("name", "rate", "channels", "kwargs"),
    [
        ("pcm24_extensible.wav", 48000, 2, {"format": "WAVEX", "subtype": "PCM_24"}),
        ("pcm32.wav", 44100, 1, {"subtype": "PCM_32"}),
        ("float32.wav", 22050, 1, {"subtype": "FLOAT"}),
        ("take.flac", 16000, 1, {}),
        ("take.ogg", 44100, 2, {"subtype": "VORBIS"}),
        ("take.opus", 48000, 1, {"format": "OGG", "subtype": "OPUS"}),
    ],
)
def test_every_common_format_reads_as_mono_at_the_target_rate(tmp_path, name, rate, channels, kwargs):
    tone = _tone(440.0, rate)
    soundfile.write(tmp_path / name, np.stack([tone] * channels, axis=1), rate, **kwargs)
    audio = read_wav(tmp_path / name, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 400  # lossy codecs pad a little
    expected = _tone(440.0, 16000)[2000:14000]
    lag = int(np.argmax(np.correlate(audio[1000:15000], expected, mode="valid")))
    assert np.corrcoef(audio[1000 + lag : 1000 + lag + len(expected)], expected)[0, 1] > 0.99
    assert abs(np.sqrt(np.mean(audio[2000:14000] ** 2)) - 0.5 / np.sqrt(2)) < 0.02


@pytest.mark.parametrize("block_frames", [1, 1000, 65536])
def test_a_file_read_in_blocks_equals_the_whole_file_resampled(tmp_path, block_frames):
    path = tmp_path / "stereo44k.wav"
    audio = np.random.default_rng(3).uniform(-0.5, 0.5, (44100 // 4, 2)).astype(np.float32)
    soundfile.write(path, audio, 44100, subtype="FLOAT")
    pieces = list(stream_audio(path, 16000, block_frames=block_frames))
    assert len(pieces) > 1 or block_frames == 65536
    np.testing.assert_allclose(np.concatenate(pieces), resample(audio.mean(axis=1), 44100, 16000), atol=1e-6)


def test_write_then_read_round_trip(tmp_path):
    tone = _tone(440.0, 16000)
    write_wav(tmp_path / "a.wav", tone)
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav"), tone, atol=1e-4)


def test_a_wav_cut_off_mid_sample_reads_its_whole_frames(tmp_path):
    tone = _tone(440.0, 16000)
    write_wav(tmp_path / "take.wav", tone)
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tmp_path / "take.wav").read_bytes()[:1001])  # `head -c 1001`: 44 header bytes + 478.5 samples
    np.testing.assert_allclose(read_wav(cut), tone[:478], atol=1e-4)


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(AudioError, match=r"bad.wav: not a readable audio file .*convert it with `sox bad.wav"):
        read_wav(bad)
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "takes.wav").mkdir()
    with pytest.raises(AudioError, match="takes.wav: is a folder, not an audio file"):
        read_wav(tmp_path / "takes.wav")


@pytest.mark.parametrize("rate", [4_000_000_000, 1_000_000_000, 0, 500])
def test_a_header_with_an_absurd_rate_is_named_not_read_as_silence(tmp_path, rate):
    path = _raw_wav(tmp_path / "absurd.wav", rate=rate, data=b"\x10\x20" * 16000)
    with pytest.raises(AudioError, match=rf"absurd.wav: its header says {rate} Hz, not a plausible sample rate"):
        read_wav(path)


@pytest.mark.parametrize("bits", [40, 64])
def test_a_sample_width_libsndfile_cannot_read_names_the_file_and_the_width(tmp_path, bits):
    path = _raw_wav(tmp_path / "wide.wav", bits=bits, data=b"\0" * (bits // 8) * 100)
    with pytest.raises(AudioError, match=rf"wide.wav: a wav file that cannot be decoded .*{bits}-bit.*convert it"):
        read_wav(path)


# -- writing -------------------------------------------------------------------------------------------------


def test_write_wav_replaces_a_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "take_00.wav"
    old = _tone(440.0, 16000)
    write_wav(path, old)
    with pytest.raises(wave.Error):
        write_wav(path, _tone(880.0, 16000), rate=0)  # fails inside the writer, after the data was prepared
    np.testing.assert_allclose(read_wav(path), old, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take_00.wav"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the detector streams files --------------------------------------------------------------------------------


def _spotter(tmp_path: Path):
    """A Spotter over the shipped model with one keyword that fires on anything (threshold -1)."""
    from device.spotter import Spotter
    from device.store import Keyword, KeywordStore

    manifest = json.loads(MODEL.with_suffix(".json").read_text())
    vector = np.zeros(manifest["embedding_size"])
    vector[0] = 1.0
    keyword = Keyword(
        name="any", prototypes=[vector.tolist()], threshold=-1.0, encoder_sha256=manifest["sha256"], takes=3
    )
    KeywordStore(tmp_path / "store").put(keyword)
    return Spotter(tmp_path / "store", MODEL)


def _babble(seconds: float, rate: int) -> np.ndarray:
    """Noise bursts loud enough to open the detector's energy gate, with quiet gaps."""
    rng = np.random.default_rng(5)
    audio = 0.001 * rng.standard_normal(int(seconds * rate))
    for start in np.arange(0.5, seconds - 1, 2.0):
        a, b = int(start * rate), int((start + 0.6) * rate)
        audio[a:b] += 0.2 * rng.standard_normal(b - a)
    return audio.astype(np.float32)


@needs_model
@pytest.mark.parametrize("rate", [16000, 48000])
def test_detect_file_streams_the_file_and_detects_as_over_the_whole_audio(tmp_path, rate):
    spotter = _spotter(tmp_path)
    path = tmp_path / "long.wav"
    soundfile.write(path, _babble(8.0, rate), rate, subtype="PCM_16")
    audio, stream, chunk = read_wav(path, 16000), spotter.new_stream(), 1600
    expected = []
    for start in range(0, len(audio), chunk):
        expected += stream.process(audio[start : start + chunk])
    expected += stream.process(np.zeros(16000, np.float32))
    got = spotter.detect_file(path)
    assert len(expected) >= 3
    assert [(d.keyword, d.time_s) for d in got] == [(d.keyword, d.time_s) for d in expected]
    np.testing.assert_allclose([d.score for d in got], [d.score for d in expected], atol=1e-4)


@needs_model
def test_detect_file_memory_does_not_grow_with_the_file(tmp_path):
    spotter = _spotter(tmp_path)
    path = tmp_path / "minute48k.wav"
    soundfile.write(path, 0.0005 * np.random.default_rng(6).standard_normal(60 * 48000), 48000, subtype="PCM_16")
    tracemalloc.start()
    try:
        spotter.detect_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The whole minute as float32 would be 11.5 MB at 48 kHz (the old reader held it, as int16 and float, too).
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB"


# -- the command line ----------------------------------------------------------------------------------------


def _kws(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KWS_MODEL": str(MODEL), "KWS_CONFIG": "/nonexistent/kws-config.toml"}
    env.pop("KWS_FAKE_INPUT", None)
    command = [sys.executable, "-m", "device.cli", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@needs_model
def test_cli_bad_takes_are_bad_input_with_the_file_named_never_a_traceback(tmp_path):
    folder = tmp_path / "take1.wav"
    folder.mkdir()
    absurd = _raw_wav(tmp_path / "absurd.wav", rate=4_000_000_000, data=b"\x10\x20" * 16000)
    for args, fragment in [
        (["enroll", "word", folder, folder, folder], "take1.wav: is a folder"),
        (["embed", absurd], "absurd.wav: its header says 4000000000 Hz"),
    ]:
        result = _kws("--store", tmp_path / "store", *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and fragment in result.stderr, result.stderr


@needs_model
def test_cli_embeds_a_wav_cut_off_mid_sample(tmp_path):
    write_wav(tmp_path / "take.wav", _babble(1.5, 16000))
    cut = tmp_path / "cut.wav"
    cut.write_bytes((tmp_path / "take.wav").read_bytes()[:20001])
    result = _kws("embed", cut, "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    vector = np.asarray(json.loads(result.stdout)["embedding"])
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-3


def test_detect_enroll_and_embed_help_name_the_formats(capsys):
    from device.cli import main

    for command in ("detect", "enroll", "embed"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "FLAC" in text and "24/32-bit" in text and "Opus" in text and "sox" in text, command
