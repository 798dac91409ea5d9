"""Issue #25: teaching a keyword "not this" (--not), clips of what fired (listen --save), look-alike
keywords, re-enrollment (--replace) and microphone takes checked one at a time.

Speech is espeak-ng (tests/spoken.py): "hey jasper" enrolled from one voice, "hey casper"
(its look-alike) and "hey jasper" said by another voice as the false alarm and the real word.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from spoken import say
from test_cli import MODEL, RATE, assert_clean_error, json_lines, kws, needs_espeak, needs_model

from device.audio import read_wav, write_wav
from device.clips import DEFAULT_MARGIN, DEFAULT_MAX_CLIPS, ClipSaver, SampleRing
from device.store import KeywordStore

ROOT = Path(__file__).resolve().parents[1]
ENROLL_VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
OTHER_VOICE = ("en-us+f3", 50, 160)


def quiet(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.002).astype(np.float32)


def spoken_clip(text: str, voice=OTHER_VOICE, seed: int = 1) -> np.ndarray:
    """Quiet, the phrase, quiet: what a false alarm (or the word) recorded in a room looks like."""
    return np.concatenate([quiet(1.0, seed), say(text, *voice), quiet(1.5, seed + 1)])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path | list[Path]]:
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} absent (export a model: `make export`)")
    folder = tmp_path_factory.mktemp("not-this")
    takes = []
    for i, voice in enumerate(ENROLL_VOICES):
        takes.append(folder / f"take{i}.wav")
        write_wav(takes[-1], say("hey jasper", *voice), RATE)
    out = {"takes": takes}
    for name, text in (("casper", "hey casper"), ("jasper", "hey jasper")):
        out[name] = folder / f"{name}.wav"
        write_wav(out[name], spoken_clip(text), RATE)
    return out


# -- --not -------------------------------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_not_raises_the_threshold_so_the_look_alike_stops_and_the_word_still_fires(files, tmp_path):
    store = tmp_path / "store"
    assert kws("--store", store, "enroll", "hey jasper", *files["takes"]).returncode == 0
    before = KeywordStore(store).keywords["hey jasper"]
    fired = json_lines(kws("--store", store, "detect", files["casper"], "--json").stdout)
    assert [e["keyword"] for e in fired] == ["hey jasper"]  # the false alarm the user saw

    result = kws("--store", store, "set", "hey jasper", "--not", files["casper"])
    assert result.returncode == 0, result.stderr
    after = KeywordStore(store).keywords["hey jasper"]
    not_score = after.stats["not_scores"][0]
    assert not_score == pytest.approx(fired[0]["score"], abs=0.02)  # the same windows the detector saw
    assert after.threshold == pytest.approx(not_score + 0.03, abs=1e-3) and after.threshold > before.threshold
    assert after.threshold < min(after.stats["take_scores_loo"])  # the takes still pass
    assert f"threshold {before.threshold:.3f} -> {after.threshold:.3f}" in result.stdout
    assert after.stats["calibrated_threshold"] == before.threshold
    kept = sorted(p.name for p in (store / after.takes_dir).iterdir())
    assert kept == ["not_00.wav"] + [f"take_{i:02d}.wav" for i in range(5)]
    assert 2.0 <= len(read_wav(store / after.takes_dir / "not_00.wav")) / RATE <= 2.6  # bounded, not the file

    assert json_lines(kws("--store", store, "detect", files["casper"], "--json").stdout) == []
    real = json_lines(kws("--store", store, "detect", files["jasper"], "--json").stdout)
    assert [e["keyword"] for e in real] == ["hey jasper"]

    # Teaching the same file again changes nothing: the threshold is worked out from the calibrated one.
    again = kws("--store", store, "set", "hey jasper", "--not", files["casper"])
    assert again.returncode == 0
    assert KeywordStore(store).keywords["hey jasper"].threshold == pytest.approx(after.threshold, abs=0.005)
    assert_clean_error(kws("--store", store, "set", "hey jasper"), 2, "--sensitivity", "--not")
    assert_clean_error(kws("--store", store, "set", "hey jasper", "--not", tmp_path / "missing.wav"), 2, "missing.wav")


@needs_model
@needs_espeak
def test_enroll_with_not_and_a_not_file_that_is_the_keyword_itself(files, tmp_path):
    from device.spotter import Spotter

    spotter = Spotter(tmp_path / "store", MODEL)
    keyword = spotter.enroll("hey jasper", files["takes"], not_files=[files["casper"]], keep_takes=False)
    assert keyword.threshold > keyword.stats["calibrated_threshold"] and keyword.takes_dir is None
    assert "not_warning" not in keyword.stats
    taught = spotter.teach_not("hey jasper", [files["jasper"]])  # the word itself, by another voice
    assert "sounds like the keyword itself" in taught.stats["not_warning"]
    assert taught.threshold <= min(taught.stats["take_scores_loo"]) - 0.02 + 1e-4  # capped: the word still fires
    assert [e.keyword for e in spotter.detect_file(files["jasper"])] == ["hey jasper"]
    # --add keeps what was taught, scored against the new prototypes.
    added = spotter.enroll("hey jasper", files["takes"][:2], add=True, keep_takes=False)
    assert (
        added.stats["not_labels"] == taught.stats["not_labels"]
        and added.threshold > added.stats["calibrated_threshold"]
    )


# -- re-enrollment and look-alikes -------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_re_enrolling_is_refused_without_replace_and_look_alikes_are_warned(files, tmp_path):
    store = tmp_path / "store"
    assert kws("--store", store, "enroll", "hey jasper", *files["takes"]).returncode == 0
    refused = kws("--store", store, "enroll", "hey jasper", *files["takes"][:3])
    assert_clean_error(refused, 2, "already enrolled", "--replace", "--add")
    assert KeywordStore(store).keywords["hey jasper"].takes == 5  # nothing lost
    replaced = kws("--store", store, "enroll", "hey jasper", *files["takes"][:3], "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert KeywordStore(store).keywords["hey jasper"].takes == 3

    alike = kws("--store", store, "enroll", "hey fake", *files["takes"])
    assert alike.returncode == 0, alike.stderr
    assert "'hey fake' sounds like 'hey jasper' (1.00" in alike.stderr
    assert "choose a more distinct phrase" in alike.stderr


# -- kws listen --save --------------------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_listen_save_keeps_a_wav_and_json_of_each_detection(files, tmp_path):
    store = tmp_path / "store"
    assert kws("--store", store, "enroll", "hey jasper", *files["takes"]).returncode == 0
    clips = tmp_path / "clips"
    env = dict(
        os.environ,
        KWS_MODEL=str(MODEL),
        KWS_CONFIG="/nonexistent/kws-config.toml",
        KWS_FAKE_INPUT=str(files["jasper"]),
        KWS_FAKE_INPUT_SPEED="4",
    )
    command = [sys.executable, "-m", "device.cli", "--store", str(store), "listen", "--json", "--save", str(clips)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not list(clips.glob("*detection*.json")):
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    event = json_lines(stdout)[0]
    sidecars = sorted(clips.glob("*-detection-*.json"))
    assert sidecars, (stderr, sorted(p.name for p in clips.iterdir()) if clips.exists() else None)
    record = json.loads(sidecars[0].read_text())
    assert record["kind"] == "detection" and record["keyword"] == "hey jasper"
    assert record["score"] == pytest.approx(event["score"], abs=1e-3) and record["time_s"] == event["time_s"]
    wav = clips / record["wav"]
    assert wav.name.startswith("kws-") and "hey_jasper" in wav.name and f"score{record['score']:.3f}" in wav.name
    assert f"thr{record['threshold']:.3f}" in wav.name and f"t{record['time_s']:.2f}" in wav.name
    audio = read_wav(wav)
    assert 2.0 <= len(audio) / RATE <= 2.5 and record["clip_seconds"] == pytest.approx(len(audio) / RATE, abs=1e-3)
    assert np.abs(audio).max() > 0.1  # the word is in it
    assert "--save: kept the detection" in stderr
    assert_clean_error(kws("--store", store, "listen", "--save", files["jasper"]), 2, "is a file")


def test_clip_saver_near_misses_one_clip_each_and_the_folder_is_capped(tmp_path, caplog):
    rate = 1000
    saver = ClipSaver(tmp_path, rate, margin=DEFAULT_MARGIN, max_clips=2, refractory_seconds=1.0)
    names, thresholds = ["word"], np.array([0.7])
    audio = np.linspace(-0.5, 0.5, 20 * rate).astype(np.float32)
    for hop in range(200):  # a near miss (0.67 peaks at 2.0 s), a detection at 6.0 s, two more near misses
        now = hop * 0.1
        score = {19: 0.66, 20: 0.67, 21: 0.66, 100: 0.68, 150: 0.69}.get(hop, 0.2)
        saver.hop(now, names, np.array([score]), thresholds)
        if hop == 60:
            saver.detection("word", 0.8, 0.7, now)
        saver.feed(audio[hop * 100 : (hop + 1) * 100])
    saver.flush()
    kinds = [json.loads(p.with_suffix(".json").read_text())["kind"] for p in saver.saved]
    assert len(list(tmp_path.glob("*.wav"))) == len(list(tmp_path.glob("*.json"))) == 2  # capped at 2
    assert "deleted the oldest" in caplog.text
    assert kinds == ["near-miss", "near-miss"]
    first = json.loads(sorted(tmp_path.glob("*.json"))[0].read_text())
    assert first["clip_seconds"] == 2.5 and first["event_offset_s"] == 2.0
    assert DEFAULT_MAX_CLIPS == 200


def test_clip_defaults_match_the_cli_and_the_ring_returns_what_it_was_fed():
    from device import cli

    assert (cli.DEFAULT_SAVE_MARGIN, cli.DEFAULT_SAVE_MAX) == (DEFAULT_MARGIN, DEFAULT_MAX_CLIPS)
    ring = SampleRing(10)
    ring.feed(np.arange(7, dtype=np.float32))
    ring.feed(np.arange(7, 15, dtype=np.float32))
    assert ring.span(5, 15).tolist() == list(range(5, 15)) and ring.span(0, 8).tolist() == [5, 6, 7]


# -- microphone takes, one at a time -----------------------------------------------------------------------


@needs_model
@needs_espeak
def test_a_take_unlike_the_others_is_asked_for_again_alone(tmp_path):
    words = ["hey toaster", "open sesame"] + ["hey toaster"] * 4  # take 2 is another word: said again
    parts = [quiet(0.8, 30)]
    for i, word in enumerate(words):
        voice = ENROLL_VOICES[min(i, len(ENROLL_VOICES) - 1)]
        parts += [say(word, *voice), quiet(1.2, 40 + i)]
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.concatenate(parts), RATE)
    env = {"KWS_FAKE_INPUT": str(mic), "KWS_FAKE_INPUT_SPEED": "10"}
    result = kws("--store", tmp_path / "store", "enroll", "hey toaster", env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    assert "rejected: take 2: does not sound like the takes so far" in result.stderr
    assert result.stderr.count("Take 2/5: say 'hey toaster' now") == 2
    assert "enrolled 'hey toaster': 5 takes" in result.stdout
    lengths = [float(line.split("(")[1].split(" s")[0]) for line in result.stderr.splitlines() if "  ok (" in line]
    assert len(lengths) == 5 and all(0.4 <= x <= 1.2 for x in lengths), lengths  # speech, not the recording


def test_a_record_whose_not_negatives_do_not_match_is_never_written(tmp_path):
    from device.store import Keyword, StoreError

    good = Keyword("word", [[1.0, 0.0]], 0.7, "0" * 64, 3, {"not_labels": ["tv.wav"], "not_scores": [0.6]})
    store = KeywordStore(tmp_path)
    for stats in ({"not_embeddings": [[1.0, 0.0, 0.0]]}, {"not_embeddings": [[1.0, 0.0]], "not_scores": [0.6, 0.5]}):
        with pytest.raises(StoreError, match="not_labels, not_scores and not_embeddings"):
            store.put(Keyword(**{**good.__dict__, "stats": good.stats | stats}))
    store.put(Keyword(**{**good.__dict__, "stats": good.stats | {"not_embeddings": [[0.0, 1.0]]}}))
    assert KeywordStore(tmp_path).keywords["word"].stats["not_scores"] == [0.6]
