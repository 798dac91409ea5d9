"""The negative bank: isolated-word runs as a room hears them, and swapping a bank beside an exported model."""

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from device.encoder import Encoder
from device.enroll import load_negatives
from device.manifest import load_manifest, sha256_of
from trainer.evaluation.data import shared_data
from trainer.negatives import bank_summary, talk_windows, with_talk, word_runs
from trainer.real_speech import TalkFile, TalkLeakageError, talk_files

SHIPPED = Path(__file__).resolve().parents[1] / "firmware_models" / "encoder.tflite"


def _write_word(path: Path, seconds: float, rng: np.random.Generator) -> None:
    t = np.arange(int(seconds * 16000)) / 16000
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) * np.hanning(len(t))
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes((audio * 32767).astype("<i2").tobytes())


def _rms_dbfs(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def test_word_runs_put_each_word_alone_between_pauses_over_room_noise(tmp_path):
    rng = np.random.default_rng(0)
    clips = []
    for i in range(10):
        clips.append(tmp_path / f"w{i}.wav")
        _write_word(clips[-1], 0.5, rng)
    noise = [np.random.default_rng(1).normal(0, 0.1, 16000 * 30).astype(np.float32)]
    runs = list(word_runs(clips, noise, seed=3, words_per_run=4))
    assert len(runs) == 3  # 4 + 4 + 2 words
    for run in runs[:2]:
        # four 0.5 s words, four 0.5-1.5 s pauses, one closing second
        assert 4 * 0.5 + 4 * 0.5 + 1.0 <= len(run) / 16000 <= 4 * 0.5 + 4 * 1.5 + 1.0
        tail = run[-8000:]  # inside the closing second: room noise only
        assert -50.5 <= _rms_dbfs(tail) <= -37.5
        loudest = max(_rms_dbfs(run[i : i + 1600]) for i in range(0, len(run) - 1600, 1600))
        assert loudest > _rms_dbfs(tail) + 10  # the words stand well above the room


def test_replacing_the_bank_keeps_the_model_and_its_enrolled_keywords_valid(tmp_path):
    if not SHIPPED.is_file():
        pytest.skip("no shipped encoder in firmware_models/")
    for path in SHIPPED.parent.glob("encoder.*"):
        shutil.copy(path, tmp_path / path.name)
    model = tmp_path / "encoder.tflite"
    before = load_manifest(model)
    bank = np.random.default_rng(0).normal(size=(50, before.embedding_size)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)

    from trainer.negatives import replace_negative_bank

    after = replace_negative_bank(model, bank, bank_summary(bank, 30))
    assert after.sha256 == before.sha256 == sha256_of(model)  # same weights: stored keywords stay valid
    assert load_manifest(model).training["negative_bank"] == {"windows": 50, "isolated_word_windows": 20}
    loaded = load_negatives(Encoder(model))
    np.testing.assert_allclose(loaded, bank, atol=1e-3)  # float16 on disk
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_talk_part_of_the_bank_is_replaced_not_stacked():
    base = np.ones((5, 4), np.float16)
    first, summary = with_talk(base, {"windows": 5}, np.zeros((3, 4)), ["voxlingua107_dev/en/a.opus"])
    assert len(first) == 8 and summary["talk_windows"] == 3 and summary["windows"] == 8
    second, summary = with_talk(first, summary, np.full((2, 4), 2.0), ["voxlingua107_dev/fr/b.opus"])
    assert len(second) == 7 and summary["talk_files"] == ["voxlingua107_dev/fr/b.opus"]
    assert np.array_equal(second[:5], base) and np.all(second[5:] == 2.0)


def test_evaluation_talk_never_enters_the_bank(tmp_path):
    evaluation_file = TalkFile(tmp_path / "ja.opus", "voxlingua107_dev/ja/x.opus", "voxlingua107_dev", "ja", 3.0)
    with pytest.raises(TalkLeakageError, match="ja/x.opus"):
        talk_windows(Encoder(SHIPPED), [evaluation_file], 0.1, seed=0)


TALK = shared_data("real_speech")


@pytest.mark.skipif(not (TALK / "manifest.csv").is_file(), reason=f"real-speech corpus not found at {TALK}")
def test_talk_windows_are_the_detectors_windows_of_real_talk():
    encoder = Encoder(SHIPPED)
    talk = talk_files(TALK, "train")[0]
    bank = talk_windows(encoder, [talk], 0.1, seed=0)
    expected = int((talk.seconds - encoder.window_samples / 16000) / 0.1) + 1
    assert abs(len(bank) - expected) <= 2
    assert bank.dtype == np.float16
    assert np.allclose(np.linalg.norm(bank.astype(np.float32), axis=1), 1.0, atol=0.02)
