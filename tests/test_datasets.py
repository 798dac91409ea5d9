"""Dataset readers: every supported layout, speakers kept, and the training corpus's exclusions."""

import os
from pathlib import Path

import numpy as np
import pytest

from device.audio import write_wav
from trainer.datasets import detect_layout, read_dataset

SHARED = Path(os.environ.get("KWS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.zeros(1600, np.float32))


def test_speech_commands_layout(tmp_path):
    _touch(tmp_path / "marvin" / "0a7c2a8d_nohash_0.wav")
    _touch(tmp_path / "marvin" / "0a7c2a8d_nohash_1.wav")
    _touch(tmp_path / "sheila" / "1b4c9b89_nohash_0.wav")
    _touch(tmp_path / "_background_noise_" / "white_noise.wav")
    clips = read_dataset(tmp_path, source="sc")
    assert detect_layout(tmp_path) == "folder_per_word"
    assert sorted((c.word, c.speaker) for c in clips) == [
        ("marvin", "0a7c2a8d"),
        ("marvin", "0a7c2a8d"),
        ("sheila", "1b4c9b89"),
    ]


def test_fsdd_layout(tmp_path):
    _touch(tmp_path / "recordings" / "3_jackson_12.wav")
    _touch(tmp_path / "recordings" / "0_theo_1.wav")
    clips = read_dataset(tmp_path)
    assert detect_layout(tmp_path) == "fsdd"
    assert sorted((c.word, c.speaker, c.source) for c in clips) == [
        ("three", "jackson", "fsdd"),
        ("zero", "theo", "fsdd"),
    ]


def test_mswc_layout(tmp_path):
    (tmp_path / "en" / "clips" / "toaster").mkdir(parents=True)
    _touch(tmp_path / "en" / "clips" / "toaster" / "common_voice_en_1.wav")
    clips = read_dataset(tmp_path)
    assert detect_layout(tmp_path) == "mswc"
    assert [(c.word, c.lang, c.speaker) for c in clips] == [("en_toaster", "en", "common_voice_en_1")]


def test_multilingual_words_layout_with_manifest(tmp_path):
    _touch(tmp_path / "set" / "zh_bei3jing1" / "dsp-1_1.wav")
    (tmp_path / "set" / "manifest.csv").write_text(
        "file,dataset,word,speaker,take\nzh_bei3jing1/dsp-1_1.wav,set,zh_bei3jing1,dsp-1,1\n"
    )
    (clip,) = read_dataset(tmp_path)
    assert (clip.word, clip.speaker, clip.lang, clip.source) == ("zh_bei3jing1", "dsp-1", "zh", "set")
    assert clip.spoken_text == "bei3jing1"


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason=f"shared data not found at {SHARED}/data")
def test_training_corpus_never_holds_reserved_words_speakers_or_the_held_out_language():
    from trainer.config import DataConfig
    from trainer.corpus import build_corpus
    from trainer.reserved import is_reserved

    config = DataConfig(
        sources=[str(SHARED / "data" / "multilingual_words"), str(SHARED / "data" / "speech_commands_v1_sample")]
    )
    corpus = build_corpus(config, seed=0)
    everything = corpus.train + corpus.validation
    assert everything and corpus.held_out
    assert not any(is_reserved(c.spoken_text) for c in everything)
    assert not any(c.lang == "zh" for c in everything)
    assert all(c.lang == "zh" for c in corpus.held_out)
    sc = read_dataset(SHARED / "data" / "speech_commands_v1_sample")
    reserved_speakers = {c.speaker for c in sc if is_reserved(c.word)}
    assert not any(c.speaker in reserved_speakers for c in everything if c.source == "speech_commands_v1_sample")
    assert not {c.word for c in corpus.train} & {c.word for c in corpus.validation}
    # an English recorded word shares its class with the TTS word ("en_open" -> "open"); others keep the prefix
    assert not any(c.word.startswith("en_") for c in everything)
    assert any(c.word.startswith("ar_") for c in everything)
