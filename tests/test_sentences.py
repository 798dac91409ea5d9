"""Sentence windows: cut at a fixed hop without the pauses, and placed in episodes as open-set queries."""

import wave

import numpy as np
import pytest

from device.frontend import FrontendConfig
from trainer.episodes import EpisodeConfig
from trainer.negatives import speech_runs
from trainer.pipeline import EpisodeMaker
from trainer.sentences import cut_windows, is_bank_speaker, load_sentence_windows

RATE = 16000


def _tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_windows_start_every_hop_and_leave_out_the_pause():
    # 1 s of sound, 1 s of near-silence, 1 s of sound: windows of 0.5 s every 0.25 s
    audio = np.concatenate([_tone(1.0), _tone(1.0, level=1e-4), _tone(1.0)])
    windows = cut_windows(audio, RATE // 2, RATE // 4)
    starts = [start for start, _ in windows]
    # windows half in a tone are kept (-3 dB), the three wholly inside the pause are not
    assert starts == [0, 4000, 8000, 12000, 28000, 32000, 36000, 40000]
    assert all(w.dtype == np.int16 and len(w) == RATE // 2 for _, w in windows)
    assert np.abs(windows[0][1]).max() == pytest.approx(0.3 * 32767, rel=0.01)


def test_audio_shorter_than_a_window_gives_none():
    assert cut_windows(_tone(0.2), RATE // 2, RATE // 4) == []


def test_windows_are_keyed_by_file_and_start(tmp_path):
    _write_tone(tmp_path / "speaker1" / "s1.wav")
    windows, keys = load_sentence_windows([tmp_path, tmp_path / "absent"], RATE // 2, hop_seconds=0.25, workers=1)
    assert [k.name for k in keys] == ["s1.wav#0", "s1.wav#4000", "s1.wav#8000"]
    assert len(windows) == 3


def _maker(sentence_queries: int, sentences: list[np.ndarray]) -> EpisodeMaker:
    words = [f"w{i}" for i in range(8) for _ in range(4)]
    bank = [(_tone(0.4) * 32767).astype(np.int16) for _ in words]
    config = EpisodeConfig(ways=3, shots=2, queries=2, unknown_queries=2, noise_queries=1,
                           sentence_queries=sentence_queries)  # fmt: skip
    return EpisodeMaker(bank, words, config, None, [], window_frames=40, frontend=FrontendConfig(), seed=3,
                        sentences=sentences)  # fmt: skip


def test_sentence_windows_sit_between_unknown_words_and_noise_with_indices_past_the_clips():
    sentences = [(_tone(1.0) * 32767).astype(np.int16) for _ in range(5)]
    maker = _maker(3, sentences)
    features, labels = maker.features_and_labels(0)
    assert features.shape[0] == labels.shape[0] == maker.config.size == 3 * 4 + 2 + 3 + 1
    clip_part, sentence_part, noise_part = labels[:14], labels[14:17], labels[17:]
    assert clip_part.max() < 32
    assert ((sentence_part >= 32) & (sentence_part < 32 + 5)).all()  # len(bank) + j
    assert (noise_part == -1).all()


def test_asking_for_sentence_windows_without_any_is_an_error():
    with pytest.raises(ValueError, match="sentence windows"):
        _maker(2, [])


def _write_tone(path, seconds: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes((_tone(seconds) * 32767).astype(np.int16).tobytes())


def test_bank_speakers_never_reach_training_and_are_all_the_bank_hears(tmp_path):
    for speaker in range(40):
        _write_tone(tmp_path / f"so-{speaker:04d}" / "s.wav")
    bank = {f"so-{s:04d}" for s in range(40) if is_bank_speaker(tmp_path / f"so-{s:04d}" / "s.wav", 0.25)}
    assert 4 <= len(bank) <= 18  # about a quarter, by a stable hash of the folder name
    _, keys = load_sentence_windows([tmp_path], RATE // 2, bank_fraction=0.25, hop_seconds=0.25, workers=1)
    trained = {k.parent.name for k in keys}
    assert trained and not trained & bank and len(trained) + len(bank) == 40
    assert sum(1 for _ in speech_runs([tmp_path], [], seed=0, bank_fraction=0.25)) == len(bank)
    assert sum(1 for _ in speech_runs([tmp_path], [], seed=0)) == 40  # no split: every file
