"""Synthetic speech generator: reserved words never spoken, deterministic speakers, valid resumable output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from collections import Counter
from pathlib import Path

import pytest

from trainer import synth
from trainer.reserved import EVALUATION_KEYWORDS, RESERVED_WORDS
from trainer.synth import (
    Catalog,
    ClipJob,
    Speaker,
    Voice,
    assign,
    build_vocabulary,
    generate,
    is_reserved,
    render_chunk,
    sample_speakers,
)

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH (scripts/install_tts.sh)"
)
needs_dict = pytest.mark.skipif(not synth.DICT_PATH.is_file(), reason=f"{synth.DICT_PATH} missing (Debian wamerican)")

# A catalog that needs no engine installed, for the pure planning logic.
FAKE_CATALOG = Catalog(
    voices={
        "espeak": [Voice("espeak", "en-us", "enus"), Voice("espeak", "de", "de", accent="foreign")],
        "flite": [Voice("flite", "slt", "slt", 167.0), Voice("flite", "rms", "rms", None)],
        "festival": [Voice("festival", "kal_diphone", "kal", 105.0)],
    },
    variants=["f3", "Mr serious", "klatt4", "m1"],
)


@pytest.fixture(scope="module")
def espeak_speakers() -> list[Speaker]:
    return sample_speakers(synth.find_voices(["espeak"]), 2, seed=0)


def _wav_info(path: Path) -> tuple[int, int, int, float]:
    with wave.open(str(path), "rb") as handle:
        frames = handle.getnframes()
        return handle.getframerate(), handle.getnchannels(), handle.getsampwidth(), frames / handle.getframerate()


def test_reserved_words_cover_keywords_plurals_and_homophones():
    for word in EVALUATION_KEYWORDS:
        assert word in RESERVED_WORDS
    for near in ("know", "for", "four", "fore", "to", "too", "won", "ate", "nein", "oh", "write", "rite", "of", "goes"):
        assert near in RESERVED_WORDS
    for plural in ("yeses", "stops", "lefts", "rights", "downs", "ups", "sixes", "nines"):
        assert plural in RESERVED_WORDS


def test_is_reserved_checks_every_token_of_a_phrase():
    assert is_reserved("hey go")
    assert is_reserved("hey_go")
    assert is_reserved("Four")
    assert is_reserved("okay know")
    assert not is_reserved("hey toaster")
    assert not is_reserved("goat")  # a token containing a keyword is not the keyword


@needs_dict
def test_default_vocabulary_excludes_reserved_words_and_is_prefix_stable():
    vocabulary = build_vocabulary(3000, seed=0)
    assert len(vocabulary) == len(set(vocabulary)) == 3000
    assert not [text for text in vocabulary if is_reserved(text)]
    phrases = [text for text in vocabulary if " " in text]
    assert 0.15 * 3000 < len(phrases) < 0.35 * 3000
    assert all(len(text.split()) == 2 and text.replace(" ", "").isalpha() for text in phrases)
    assert build_vocabulary(100, seed=0) == vocabulary[:100]
    assert build_vocabulary(100, seed=1) != vocabulary[:100]


def test_vocabulary_from_an_explicit_word_list_drops_reserved_words():
    vocabulary = build_vocabulary(50, seed=0, phrase_share=0.5, words=["toaster", "go", "marmalade", "four", "pickle"])
    assert vocabulary
    assert not [text for text in vocabulary if is_reserved(text)]


def test_speakers_are_distinct_deterministic_and_underscore_free():
    speakers = sample_speakers(FAKE_CATALOG, 300, seed=0)
    ids = [s.id for s in speakers]
    assert len(ids) == len(set(ids)) == 300
    assert not [i for i in ids if "_" in i or " " in i]
    assert [s.id for s in sample_speakers(FAKE_CATALOG, 300, seed=0)] == ids
    assert [s.id for s in sample_speakers(FAKE_CATALOG, 20, seed=0)] == ids[:20]
    assert {s.engine for s in speakers} == {"espeak", "flite", "festival"}


def test_assignment_gives_each_word_distinct_speakers_with_balanced_load():
    speakers = sample_speakers(FAKE_CATALOG, 50, seed=0)
    words = [f"word{i}" for i in range(200)]
    jobs = assign(words, speakers, per_word=10, seed=0)
    assert len(jobs) == 2000
    by_word: dict[str, list[str]] = {}
    for job in jobs:
        by_word.setdefault(job.text, []).append(job.speaker.id)
    assert all(len(set(ids)) == 10 for ids in by_word.values())
    load = Counter(job.speaker.id for job in jobs)
    assert len(load) == 50 and max(load.values()) - min(load.values()) <= 3
    assert assign(words, speakers, per_word=10, seed=0) == jobs


@needs_espeak
def test_generation_writes_16k_mono_clips_in_the_layout_and_a_manifest(tmp_path, espeak_speakers):
    summary = generate(tmp_path, ["toaster", "hey banana", "go", "marmalade"], espeak_speakers, per_word=2, jobs=2)
    assert (summary.new, summary.failed, summary.words, summary.speakers) == (6, 0, 3, 2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["hey_banana", "marmalade", "toaster"]
    ids = {s.id for s in espeak_speakers}
    for folder in ("hey_banana", "marmalade", "toaster"):
        files = sorted((tmp_path / folder).glob("*.wav"))
        assert {f.stem.rsplit("_", 1)[0] for f in files} == ids
        assert all(f.stem.rsplit("_", 1)[1] == "0" for f in files)
        for path in files:
            rate, channels, width, seconds = _wav_info(path)
            assert (rate, channels, width) == (16000, 1, 2)
            assert 0.15 < seconds < 3.0
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert {"word", "speaker", "engine", "voice", "params", "path", "duration"} <= set(rows[0])
    assert all((tmp_path / row["path"]).is_file() and not is_reserved(row["word"]) for row in rows)


@needs_espeak
def test_rerun_skips_valid_clips_and_redoes_missing_or_broken_ones(tmp_path, espeak_speakers):
    generate(tmp_path, ["toaster", "marmalade"], espeak_speakers, per_word=2, jobs=1)
    files = sorted(tmp_path.glob("*/*.wav"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = generate(tmp_path, ["toaster", "marmalade"], espeak_speakers, per_word=2, jobs=1)
    assert (again.new, again.cached, again.clips) == (0, 4, 4)
    assert all(f.stat().st_mtime_ns == stamps[f] for f in files)

    files[0].unlink()
    files[1].write_bytes(b"RIFF broken")
    repaired = generate(tmp_path, ["toaster", "marmalade"], espeak_speakers, per_word=2, jobs=1)
    assert (repaired.new, repaired.cached, repaired.clips) == (2, 2, 4)
    assert not list(tmp_path.rglob("*.tmp"))


@needs_espeak
def test_a_failing_voice_is_reported_not_raised(tmp_path):
    broken = Speaker("espeak", "nosuchvoice", "nosuchvoice", None, 100, 50, 100)
    results = render_chunk(tmp_path, [ClipJob("toaster", broken)])
    assert len(results) == 1 and results[0][1] is not None
    assert not list(tmp_path.rglob("*.wav"))


def test_cli_help_describes_the_options():
    done = subprocess.run([sys.executable, "-m", "trainer.synth", "--help"], capture_output=True, text=True, check=True)
    for option in ("--out", "--words", "--speakers", "--jobs", "--quick", "--per-word"):
        assert option in done.stdout
