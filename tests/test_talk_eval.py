"""The real-talk stream evaluation: its arithmetic, its stream, its guard, and one short end-to-end run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.evaluation.metrics import poisson_upper
from trainer.evaluation.streaming import RATE, Event, KeywordPlan, KeywordWindows, StreamItem, Trace
from trainer.evaluation.talk import (
    OWN_VOICE,
    TALK_WORD,
    TalkPiece,
    TalkStreamConfig,
    build_talk_stream,
    fa_sources,
    own_speech_recordings,
    own_voice_items,
    summarise_talk,
)
from trainer.real_speech import TalkFile

ROOT = Path(__file__).resolve().parents[1]
TALK_ROOT = ROOT.parent / "shared" / "data" / "real_speech"
FSDD = ROOT.parent / "shared" / "data" / "fsdd"
MODEL = ROOT / "firmware_models" / "encoder.tflite"


@pytest.mark.parametrize(("count", "bound"), [(0, 2.9957), (1, 4.7439), (2, 6.2958), (5, 10.5130), (20, 29.0620)])
def test_poisson_upper_bound_matches_the_exact_table(count, bound):
    assert poisson_upper(count) == pytest.approx(bound, abs=2e-3)


def test_poisson_upper_bound_grows_with_the_count_and_refuses_a_negative_one():
    bounds = [poisson_upper(k) for k in range(30)]
    assert all(b > k for k, b in enumerate(bounds)) and np.all(np.diff(bounds) > 0)
    assert poisson_upper(0) == pytest.approx(-math.log(0.05), abs=1e-6)
    with pytest.raises(ValueError):
        poisson_upper(-1)


def _talk(seconds: float, seed: int, language: str = "ja") -> TalkPiece:
    """Speech-like talk: 0.3 s bursts of tones with 0.1 s breaths, 0.5 s of silence at the end."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    audio = (0.2 * np.sin(2 * np.pi * rng.uniform(150, 300) * t) * ((t % 0.4) < 0.3)).astype(np.float32)
    audio[-RATE // 2 :] = 0.0
    file = TalkFile(Path(f"/x/{language}/{seed}.opus"), f"voxlingua107_dev/{language}/{seed}.opus", "voxlingua107_dev",
                    language, seconds)  # fmt: skip
    return TalkPiece(file, audio)


def _word(keyword: str | None, source: str = "target") -> StreamItem:
    t = np.arange(int(0.6 * RATE)) / RATE
    audio = np.concatenate([np.zeros(RATE // 5), 0.3 * np.sin(2 * np.pi * 440 * t), np.zeros(RATE // 5)])
    return StreamItem(audio.astype(np.float32), "four", "jackson", source, keyword)


def test_talk_stream_holds_every_talk_file_and_word_where_its_events_say():
    talk = [_talk(4.0, i) for i in range(6)]
    words = [_word("four by jackson") for _ in range(6)] + [_word(None, OWN_VOICE)]
    config = TalkStreamConfig(no_pause_share=0.5)
    stream = build_talk_stream(talk, words, config, np.random.default_rng(0))
    talk_events = [e for e in stream.events if e.word == TALK_WORD]
    word_events = [e for e in stream.events if e.word != TALK_WORD]
    assert [e.speaker for e in talk_events] == [p.file.file_id for p in talk]
    assert {e.source for e in talk_events} == {"talk:voxlingua107_dev:ja"}
    assert len(word_events) == len(words) and sum(e.source == OWN_VOICE for e in word_events) == 1
    for e in word_events:  # the word's sound is where its event is, louder than the floor around it
        inside = stream.audio[int(e.start * RATE) : int(e.end * RATE)]
        assert np.sqrt(np.mean(inside**2)) > 10 * 10 ** (config.noise_dbfs / 20)
    events = sorted(stream.events, key=lambda e: e.start)
    assert all(a.end <= b.start + 0.06 for a, b in zip(events, events[1:], strict=False))  # 50 ms crossfade at most
    no_pause = [e for e in word_events if e.source.endswith("(no pause)")]
    assert no_pause, "with a 0.5 share some words follow talk with no pause"
    for e in no_pause:  # the talk before it ends at its last sound, and the word's speech starts ~50 ms later
        before = max((t for t in talk_events if t.start < e.start), key=lambda t: t.start)
        assert 0.0 <= e.start - before.end < 0.1
    paused = [e for e in word_events if e.keyword and not e.source.endswith("(no pause)")]
    assert all(
        e.start - max(t.end for t in talk_events if t.start < e.start) >= config.pause_seconds[0] - 0.06 for e in paused
    )


def test_talk_stream_is_the_same_for_the_same_seed():
    talk = [_talk(3.0, i) for i in range(3)]
    a = build_talk_stream(talk, [_word("k")], TalkStreamConfig(), np.random.default_rng(4))
    b = build_talk_stream(talk, [_word("k")], TalkStreamConfig(), np.random.default_rng(4))
    assert np.array_equal(a.audio, b.audio) and a.events == b.events


def test_false_alarms_are_traced_to_the_talk_or_word_they_came_in():
    events = [
        Event(0.0, 10.0, TALK_WORD, "voxlingua107_dev/ja/1.opus", "talk:voxlingua107_dev:ja", None),
        Event(11.0, 11.6, "four", "jackson", "target", "four by jackson"),
        Event(12.0, 20.0, TALK_WORD, "mboshi/2.wav", "talk:mboshi:mdw", None),
        Event(21.0, 21.5, "six", "jackson", OWN_VOICE, None),
        Event(22.0, 22.5, "two", "theo", "target", "two by theo"),
    ]
    windows = KeywordWindows(np.array([[11.0, 12.6]]), np.zeros((0, 2)), 30.0)
    detections = np.array([3.0, 10.4, 11.5, 15.0, 21.8, 22.4, 27.0])
    sources = fa_sources(detections, windows, events)
    assert sources == {
        "talk:voxlingua107_dev:ja": 2,  # 3.0 and 10.4 (0.4 s after the talk's end)
        "talk:mboshi:mdw": 1,
        OWN_VOICE: 1,
        "another keyword's take": 1,
        "pause": 1,  # 27.0: 4.5 s after the last word
    }  # 11.5 is a hit, not a false alarm


def test_talk_summary_counts_as_the_detector_would_fire():
    times = np.round(np.arange(0.1, 60.0, 0.1), 3)
    scores = np.zeros((len(times), 2))
    for t in (5.0, 30.0):  # keyword 0: its occurrence at 5 s and a false alarm in the talk at 30 s
        scores[np.abs(times - t) < 0.25, 0] = 0.9
    scores[np.abs(times - 45.0) < 0.25, 1] = 0.9  # keyword 1: one false alarm, and its occurrence missed
    trace = Trace(times, scores, ["a", "b"], np.array([0.5, 0.5]))
    events = [
        Event(0.0, 4.0, TALK_WORD, "ja/1", "talk:voxlingua107_dev:ja", None),
        Event(4.8, 5.3, "wa", "s1", "target", "a"),
        Event(6.0, 50.0, TALK_WORD, "mboshi/1", "talk:mboshi:mdw", None),
        Event(52.0, 52.5, "wb", "s2", "target", "b"),
    ]
    windows = [
        KeywordWindows(np.array([[4.8, 6.3]]), np.zeros((0, 2)), 60.0 - 1.5),
        KeywordWindows(np.array([[52.0, 53.5]]), np.zeros((0, 2)), 60.0 - 1.5),
    ]
    from trainer.evaluation.streaming import TestStream

    stream = TestStream(np.zeros(60 * RATE, np.float32), events)
    summary = summarise_talk(trace, windows, stream, TalkStreamConfig(), refractory=2.0)
    point = summary["as_enrolled"]
    assert point["frr"] == pytest.approx(0.5) and point["false_alarms"] == 2
    assert point["fa_per_hour"] == pytest.approx(2 / (2 * 58.5 / 3600))
    assert point["fa_sources"] == {"talk:mboshi:mdw": 2}
    assert summary["per_keyword"]["a"]["hits"] == 1 and summary["per_keyword"]["b"]["hits"] == 0
    assert point["spread"]["max"] == point["spread"]["min"]  # one false alarm each
    assert summary["talk_sources"]["talk:mboshi:mdw"]["files"] == 1


needs_data = [
    pytest.mark.skipif(not (TALK_ROOT / "manifest.csv").is_file(), reason=f"real-talk corpus absent at {TALK_ROOT}"),
    pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD absent at {FSDD}"),
    pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (make export)"),
]


def _apply(marks):
    def wrap(f):
        for m in marks:
            f = m(f)
        return f

    return wrap


@_apply(needs_data)
def test_talk_eval_refuses_a_model_whose_bank_heard_evaluation_talk(tmp_path):
    for path in MODEL.parent.glob("encoder.*"):
        shutil.copy(path, tmp_path / path.name)
    manifest_path = tmp_path / "encoder.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["training"].setdefault("negative_bank", {})["talk_files"] = ["voxlingua107_dev/ja/leaked.opus"]
    manifest_path.write_text(json.dumps(manifest))
    command = [sys.executable, "-m", "trainer.evaluation", "talk", "--model", str(tmp_path / "encoder.tflite")]
    done = subprocess.run([*command, "--results", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "evaluation talk" in done.stderr and "leaked.opus" in done.stderr


@_apply(needs_data)
def test_a_short_talk_run_reports_every_keyword_and_traces_every_false_alarm(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "trainer.evaluation", "talk", "--talk-minutes", "2", "--talk-keywords", "2"]
    command += ["--talk-occurrences", "4", "--talk-baselines", "", "--results", str(out), "--workers", "1"]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, TQDM_DISABLE="1")
    )
    assert done.returncode == 0, done.stderr[-3000:]
    talk = json.loads((out / "talk.json").read_text())["talk"]
    assert len(talk["per_keyword"]) == 2 and talk["target_occurrences"] == 8
    assert (
        talk["talk_hours"] >= 0.8 * 2 / 60  # no-pause splices cut trailing silence
        and set(talk["talk_sources"])
        and all(s.startswith("talk:") for s in talk["talk_sources"])
    )
    for row in talk["per_keyword"].values():
        assert sum(row["fa_sources"].values()) == row["false_alarms"]
        assert row["fa_per_hour_upper95"] > row["fa_per_hour"]
    mine = talk["with_own_speech"]  # --speech on the same pass: thresholds only rise, so false alarms only fall
    assert mine["keywords_moved"] and mine["false_alarms"] <= talk["as_enrolled"]["false_alarms"]
    for name in mine["keywords_moved"]:
        assert mine["per_keyword"][name]["threshold"] >= talk["per_keyword"][name]["threshold"]
    assert "### Real-talk false alarms" in (out / "talk.md").read_text()
    assert "With `--speech`" in (out / "talk.md").read_text()
    assert (out / "talk_fsdd_det.png").stat().st_size > 1000


def test_own_speech_is_the_speakers_other_words_and_never_a_word_the_stream_holds():
    rng = np.random.default_rng(0)
    words = np.array(["one", "two", "three"] * 20)
    speakers = np.array(["ann"] * 30 + ["bob"] * 30)
    audio = [np.concatenate([np.zeros(800), 0.3 * np.ones(RATE // 2), np.zeros(800)]).astype(np.float32)] * 60
    plans = [KeywordPlan("one by ann", "one", "ann", [], [], []), KeywordPlan("two by bob", "two", "bob", [], [], [])]
    used = {0, 1, 2}
    own = own_voice_items(words, speakers, audio, plans, used, 3, rng)
    in_stream = set(used)
    speech = own_speech_recordings(words, speakers, audio, plans, used, 4.0, rng)
    assert set(speech) == {"one by ann", "two by bob"} and len(own) == 6
    assert all(len(s) >= 4.0 * RATE for s in speech.values())
    chosen = used - in_stream
    assert chosen and not chosen & in_stream  # nothing spliced into the stream is given as --speech
    assert all(words[i] != "one" for i in chosen if speakers[i] == "ann")
    assert all(words[i] != "two" for i in chosen if speakers[i] == "bob")
    assert own_speech_recordings(words, speakers, audio, plans, set(), 60.0, rng) == {}  # too little: none
