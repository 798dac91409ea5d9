"""Evaluation: metric arithmetic, episode structure, DTW, streaming scoring, leakage guard, an end-to-end run.

No TensorFlow: the evaluation package must run where only the device runtime and numpy are.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from device.detector import DetectorSettings
from device.frontend import FrontendConfig
from device.store import Keyword
from trainer.datasets import Clip
from trainer.evaluation import guard
from trainer.evaluation.data import NOISE_WORD, ItemBank, through_rate
from trainer.evaluation.dtw import DTWScorer, dtw_batch, dtw_pairs, dtw_reference, mfcc
from trainer.evaluation.fewshot import EmbeddingScorer, FewShotConfig, evaluate, sample_episodes, support_mode
from trainer.evaluation.metrics import fa_per_hour, frr, mean_ci, rate_at, threshold_at_frr
from trainer.evaluation.streaming import (
    Event,
    StreamConfig,
    StreamItem,
    Trace,
    TracingDetector,
    build_stream,
    count,
    keyword_windows,
    replay,
    sweep,
)
from trainer.evaluation.suite import Method, fewshot_tasks, run_fewshot

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = Path(os.environ.get("KWS_EVAL_TEST_MODEL", REPO / "firmware_models" / "encoder.tflite"))


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------


def test_confidence_interval_by_hand():
    mean, ci = mean_ci([0.5, 1.0, 0.75])
    assert mean == pytest.approx(0.75)
    assert ci == pytest.approx(1.96 * 0.25 / math.sqrt(3))  # sample std of (0.5, 1, 0.75) is 0.25
    assert mean_ci([0.4]) == (0.4, 0.0)
    assert mean_ci(np.full(400, 0.9))[1] == pytest.approx(0.0)


def test_frr_and_false_alarms_per_hour_by_hand():
    assert frr(3, 20) == pytest.approx(0.15)
    assert fa_per_hour(2, 1800.0) == pytest.approx(4.0)
    assert fa_per_hour(5, 3 * 3600.0) == pytest.approx(5 / 3)
    assert math.isnan(frr(0, 0)) and math.isnan(fa_per_hour(1, 0.0))


def test_threshold_at_frr_rejects_the_requested_share():
    known = np.arange(100) / 100.0  # 0.00 .. 0.99
    t = threshold_at_frr(known, 0.05)
    assert np.mean(known < t) == pytest.approx(0.05)
    assert threshold_at_frr(known, 0.0) == 0.0


def test_rate_at_picks_best_point_within_budget():
    fa = np.array([10.0, 3.0, 1.0, 0.4, 0.0])
    frrs = np.array([0.01, 0.05, 0.10, 0.30, 0.90])
    assert rate_at(fa, frrs, 1.0) == pytest.approx(0.10)
    assert rate_at(fa, frrs, 0.5) == pytest.approx(0.30)
    assert rate_at(frrs, fa, 0.05) == pytest.approx(3.0)
    assert math.isnan(rate_at(fa, frrs, -1.0))


# ---------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------


def _grid_labels(words: int, speakers: int, takes: int, noise: int = 0) -> tuple[np.ndarray, np.ndarray]:
    w, s = [], []
    for word in range(words):
        for speaker in range(speakers):
            w += [f"w{word}"] * takes
            s += [f"s{speaker}"] * takes
    return np.array(w + [NOISE_WORD] * noise), np.array(s + [f"noise:{i}" for i in range(noise)])


def test_same_speaker_episodes_use_one_speaker_and_never_overlap():
    words, speakers = _grid_labels(12, 4, 8)
    config = FewShotConfig(ways=10, shots=3, queries=4, episodes=30, mode="same", seed=1)
    for e in sample_episodes(words, speakers, config):
        assert e.support.shape == (10, 3)
        assert not set(e.support.ravel()) & set(e.query)
        assert len(set(speakers[e.support.ravel()]) | set(speakers[e.query])) == 1
        assert list(words[e.support[:, 0]]) == list(e.words)
        assert all(words[q] == e.words[label] for q, label in zip(e.query, e.query_labels, strict=True))
        assert all(len(set(words[row])) == 1 for row in e.support)


def test_cross_speaker_episodes_query_other_speakers():
    words, speakers = _grid_labels(12, 4, 8)
    config = FewShotConfig(ways=10, shots=5, queries=5, episodes=30, mode="cross", seed=2)
    for e in sample_episodes(words, speakers, config):
        support_speakers = set(speakers[e.support.ravel()])
        assert len(support_speakers) == 1  # one enrolling speaker when the data allows it
        assert not support_speakers & set(speakers[e.query])
        assert not set(e.support.ravel()) & set(e.query)


def test_cross_speaker_with_one_clip_per_speaker_keeps_support_speakers_out_of_queries():
    rng = np.random.default_rng(0)
    words = np.repeat([f"w{i}" for i in range(20)], 10)
    speakers = np.array([f"s{x}" for x in rng.integers(0, 60, len(words))])  # Speech-Commands-like
    config = FewShotConfig(ways=10, shots=3, queries=5, episodes=40, mode="cross", seed=3)
    for e in sample_episodes(words, speakers, config):
        for label, row in enumerate(e.support):
            queries = e.query[e.query_labels == label]
            assert not set(speakers[row]) & set(speakers[queries])
            assert not set(row) & set(queries)


def test_support_regime_is_fixed_per_dataset_not_per_shot_count():
    words = np.repeat([f"w{i}" for i in range(12)], 6)
    speakers = np.array([f"s{i}" for i in range(len(words))])
    speakers[::6] = "p"  # one speaker says every word once: enough for 1-shot, not for 3-shot
    assert support_mode(words, speakers, ways=10, shots=1) == "speaker"
    assert support_mode(words, speakers, ways=10, shots=3) == "mixed"
    auto = sample_episodes(words, speakers, FewShotConfig(ways=10, shots=1, episodes=5))
    assert all(set(speakers[e.support.ravel()]) == {"p"} for e in auto)
    mixed = sample_episodes(words, speakers, FewShotConfig(ways=10, shots=1, episodes=5, support="mixed"))
    assert any(len(set(speakers[e.support.ravel()])) > 1 for e in mixed)
    with pytest.raises(ValueError, match="no speaker"):
        sample_episodes(words, speakers, FewShotConfig(ways=10, shots=3, support="speaker"))


def test_open_set_unknowns_are_outside_the_episode_and_noise_is_noise():
    words, speakers = _grid_labels(14, 3, 6, noise=30)
    config = FewShotConfig(ways=10, shots=2, queries=2, episodes=20, mode="cross", unknown_queries=6, noise_queries=4)
    for e in sample_episodes(words, speakers, config):
        assert not set(words[e.unknown]) & set(e.words)
        assert NOISE_WORD not in set(words[e.unknown])
        assert set(words[e.noise]) == {NOISE_WORD} and len(e.noise) == 4


def test_episodes_are_repeatable_and_impossible_requests_are_refused():
    words, speakers = _grid_labels(12, 3, 6)
    config = FewShotConfig(ways=10, shots=3, episodes=5, mode="same", seed=9)
    a, b = sample_episodes(words, speakers, config), sample_episodes(words, speakers, config)
    assert all(
        np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query) for x, y in zip(a, b, strict=True)
    )
    one_take = _grid_labels(12, 3, 1)
    with pytest.raises(ValueError, match="same-speaker"):
        sample_episodes(*one_take, FewShotConfig(ways=10, shots=1, mode="same"))


def test_perfect_embeddings_score_perfectly_and_random_ones_near_chance():
    words, speakers = _grid_labels(12, 4, 6)
    labels = np.unique(words, return_inverse=True)[1]
    config = FewShotConfig(ways=10, shots=2, queries=3, episodes=50, mode="cross")
    episodes = sample_episodes(words, speakers, config)
    perfect = np.eye(12, dtype=np.float32)[labels]
    assert evaluate(EmbeddingScorer("one-hot", perfect), episodes, config, "t").summary()["accuracy"] == 1.0
    noise = np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    accuracy = evaluate(EmbeddingScorer("random", noise), episodes, config, "t").summary()["accuracy"]
    assert 0.0 <= accuracy < 0.25


# ---------------------------------------------------------------------------------------
# DTW
# ---------------------------------------------------------------------------------------


def test_dtw_hand_made_case():
    a = np.array([[0.0], [1.0], [2.0]], np.float32)
    b = np.array([[0.0], [2.0]], np.float32)
    # costs |a_i - b_j|: [[0, 2], [1, 1], [2, 0]]; best path (0,0)->(1,0)->(2,1) or (0,0)->(1,1)->(2,1): 0 + 1 + 0
    assert dtw_reference(a, b) == pytest.approx(1.0)
    assert dtw_batch([a], [b], normalise=False)[0] == pytest.approx(1.0)
    assert dtw_batch([a], [b])[0] == pytest.approx(1.0 / 5)
    assert dtw_batch([a], [a], normalise=False)[0] == pytest.approx(0.0)


def test_batched_dtw_matches_the_textbook_loop_and_is_symmetric():
    rng = np.random.default_rng(1)
    seqs = [rng.normal(size=(rng.integers(2, 15), 3)).astype(np.float32) for _ in range(8)]
    pairs = np.array([(i, j) for i in range(8) for j in range(8)])
    fast = dtw_pairs(seqs, pairs)
    slow = np.array([dtw_reference(seqs[i], seqs[j]) / (len(seqs[i]) + len(seqs[j])) for i, j in pairs])
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-3)  # float32 |x|^2 + |y|^2 - 2xy, then sqrt
    np.testing.assert_allclose(fast.reshape(8, 8), fast.reshape(8, 8).T, rtol=1e-4, atol=1e-3)
    banded = dtw_pairs(seqs, pairs, band=0.1)
    assert np.all(banded >= fast - 1e-4)  # a band can only remove paths


def test_dtw_scorer_prefers_the_matching_template():
    rng = np.random.default_rng(2)
    base = [rng.normal(size=(20, 13)).astype(np.float32) for _ in range(3)]
    # 3 words x 3 takes: each take is its word's template, time-stretched and slightly noisy
    takes = []
    for template in base:
        for stretch in (16, 20, 26):
            idx = np.linspace(0, len(template) - 1, stretch).round().astype(int)
            takes.append(template[idx] + 0.05 * rng.normal(size=(stretch, 13)).astype(np.float32))
    words = np.repeat(["a", "b", "c"], 3)
    speakers = np.array(["x", "y", "z"] * 3)
    config = FewShotConfig(ways=3, shots=1, queries=2, episodes=10, mode="cross")
    episodes = sample_episodes(words, speakers, config)
    assert evaluate(DTWScorer(takes, workers=1), episodes, config, "t").summary()["accuracy"] == 1.0


def _tone_bank(pairs: list[tuple[float, float]]) -> ItemBank:
    """One word per pair of tones (0.25 s each), 3 speakers x 2 takes each at take-specific levels."""
    t = np.arange(4000) / 16000
    words, speakers, audio = [], [], []
    for first, second in pairs:
        tones = np.concatenate([np.sin(2 * np.pi * first * t), np.sin(2 * np.pi * second * t)])
        for speaker in range(3):
            for take in range(2):
                words.append(f"{first:g}-{second:g} Hz")
                speakers.append(f"s{speaker}")
                audio.append((0.1 * (1 + take + speaker) * tones).astype(np.float32))
    kinds = np.array(["clip"] * len(audio))
    return ItemBank("tones", np.array(words), np.array(speakers), kinds, audio)


def test_queries_through_a_narrow_channel_lose_what_lies_above_it():
    """Words told apart only above 4 kHz: as recorded DTW gets them all; queried at 8 kHz it cannot."""
    bank = _tone_bank([(4600.0, 6300.0), (6300.0, 4600.0), (5400.0, 7200.0), (7200.0, 5400.0)])
    base = FewShotConfig(ways=4, shots=1, queries=2, episodes=20, mode="cross")
    tasks = fewshot_tasks("tones", 4, [1], ["cross"], base) + fewshot_tasks(
        "tones", 4, [1], ["cross"], replace(base, query_rate=8000)
    )
    assert tasks[1][0] == "tones 4-way 1-shot cross, queries at 8 kHz"
    wide, narrow = run_fewshot(bank, tasks, [Method("DTW")], workers=1)
    assert wide["accuracy"] == 1.0
    assert narrow["accuracy"] < 0.6
    # The supports are the recorded clips; only queries are moved to the transformed copy.
    episode = sample_episodes(bank.words, bank.speakers, base)[0]
    moved = episode.with_queries_from(len(bank))
    np.testing.assert_array_equal(moved.support, episode.support)
    np.testing.assert_array_equal(moved.query, episode.query + len(bank))


def test_through_rate_keeps_length_and_removes_the_top_band():
    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = through_rate((0.3 * low + 0.3 * high).astype(np.float32), 8000)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    frequencies = np.fft.rfftfreq(12000, 1 / 16000)
    assert spectrum[np.argmin(abs(frequencies - 1000))] > 1000 * spectrum[np.argmin(abs(frequencies - 6000))]


def test_mfcc_shape_and_mean_normalisation():
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.3) * (t < 0.7)).astype(np.float32)
    features = mfcc(tone)
    assert features.shape[1] == 13 and 40 < len(features) < 100
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-4)


# ---------------------------------------------------------------------------------------
# streaming scoring
# ---------------------------------------------------------------------------------------


def _events() -> list[Event]:
    return [
        Event(2.0, 2.5, "seven", "s1", "target", "seven@s1"),
        Event(10.0, 10.5, "seven", "s1", "target", "seven@s1"),
        Event(15.0, 15.5, "seven", "s2", "same-source", None),  # same word, other speaker: ignored
        Event(6.0, 6.4, "apple", "s3", "other-words", None),
    ]


def test_replay_and_counting_on_a_synthetic_trace():
    times = np.round(np.arange(1, 201) * 0.1, 6)  # 0.1 .. 20.0 s
    scores = np.zeros_like(times)
    scores[(times >= 2.6) & (times <= 4.5)] = 0.9  # one long excursion: a hit, then a re-fire after 1.5 s
    scores[np.isclose(times, 6.2)] = 0.8  # a false alarm on a non-keyword word
    scores[np.isclose(times, 15.8)] = 0.95  # the keyword word by someone else: neither hit nor false alarm
    windows = keyword_windows(_events(), "seven@s1", "seven", 20.0, tolerance=1.0)
    assert windows.negative_seconds == pytest.approx(20.0 - 3 * 1.5)

    # Each fires when its score falls back under the threshold, or 3 hops (the default hold) after it passed.
    detections = replay(times, scores, 0.7, refractory=1.5)
    np.testing.assert_allclose(detections, [2.9, 4.6, 6.3, 15.9])
    hits, targets, false_alarms = count(detections, windows)
    assert (hits, targets, false_alarms) == (1, 2, 2)  # 4.6 is past 2.5 + 1.0: a false alarm

    detections = replay(times, scores, 0.85, refractory=3.0)
    np.testing.assert_allclose(detections, [2.9, 15.9])
    np.testing.assert_allclose(replay(times, scores, 0.85, refractory=3.0, hold_hops=1), [2.7, 15.9])
    # hold_hops=0: the baselines' rule, the first hop over the threshold fires (then the refractory blocks).
    np.testing.assert_allclose(replay(times, scores, 0.7, refractory=1.5, hold_hops=0), [2.6, 4.1, 6.2, 15.8])
    coarse = np.round(np.arange(1, 27) * 0.75, 6)  # a 0.75 s hop, as EfficientWord-Net's
    peak = np.where(np.isclose(coarse, 3.0), 0.9, 0.0)
    np.testing.assert_allclose(replay(coarse, peak, 0.7, refractory=2.0, hold_hops=0), [3.0])
    assert count(replay(coarse, peak, 0.7, refractory=2.0, hold_hops=0), windows) == (1, 2, 0)
    assert count(detections, windows) == (1, 2, 0)

    trace = Trace(times, scores[:, None], ["seven@s1"], np.array([0.5]))
    result = sweep(trace, [windows], np.array([0.7, 0.85, 0.99]), refractory=1.5)
    np.testing.assert_allclose(result["frr"], [0.5, 0.5, 1.0])
    hours = windows.negative_seconds / 3600
    np.testing.assert_allclose(result["fa_per_hour"], [2 / hours, 1 / hours, 0.0])  # 4.1 still fires at 0.85


class _FakeEncoder:
    """Just enough of ``device.encoder.Encoder`` for the detector: embedding follows the window's loudness."""

    def __init__(self) -> None:
        self.manifest = SimpleNamespace(frontend=FrontendConfig())
        self.window_frames = 50
        self.embedding_size = 2

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        level = float(np.clip((frames.mean() + 5.0) / 8.0, 0.0, 1.0))  # log-mel mean: -5 quiet, +4 loud
        return np.array([level, math.sqrt(1.0 - level**2)], np.float32)


def test_replay_reproduces_the_real_detector_at_its_own_threshold():
    rng = np.random.default_rng(4)
    audio = rng.normal(0, 0.003, 16000 * 30).astype(np.float32)
    for start in (3, 9, 10, 17, 24):  # bursts, two of them close together (refractory matters)
        audio[start * 16000 : start * 16000 + 8000] += rng.normal(0, 0.3, 8000).astype(np.float32)
    keyword = Keyword("burst", [[1.0, 0.0]], threshold=0.6, encoder_sha256="x", takes=3)
    settings = DetectorSettings(gate_db=None)
    detector = TracingDetector(_FakeEncoder(), [keyword], settings)
    for start in range(0, len(audio), 1600):
        detector.process(audio[start : start + 1600])
    fired = detector.fired["burst"]
    assert len(fired) >= 4
    replayed = replay(np.array(detector.trace_times), np.array(detector.trace_scores)[:, 0], 0.6, 1.5)
    np.testing.assert_allclose(replayed, fired)


def test_stream_places_words_at_the_requested_snr():
    rng = np.random.default_rng(5)
    t = np.arange(8000) / 16000
    word = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    silence = np.zeros(4000, np.float32)
    items = [StreamItem(np.concatenate([silence, word, silence]), "w", "s", "target", "w@s")] * 3
    noise = [rng.normal(0, 1, 16000 * 5).astype(np.float32)]
    config = StreamConfig(snr_db=10.0, noise_dbfs=-40.0, gap_seconds=(1.0, 1.0))
    stream = build_stream(items, noise, config, rng)
    assert len(stream.events) == 3
    e = stream.events[0]
    assert e.start == pytest.approx(1.05, abs=0.02) and e.end - e.start == pytest.approx(0.5, abs=0.03)
    speech = stream.audio[int(e.start * 16000) + 800 : int(e.end * 16000) - 800]
    gap = stream.audio[int((e.end + 0.2) * 16000) : int((e.end + 0.8) * 16000)]
    noise_db = 10 * np.log10(np.mean(gap.astype(np.float64) ** 2))
    speech_db = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) - 10 ** (noise_db / 10))
    assert noise_db == pytest.approx(-40.0, abs=1.5)
    assert speech_db - noise_db == pytest.approx(10.0, abs=1.0)


# ---------------------------------------------------------------------------------------
# leakage guard
# ---------------------------------------------------------------------------------------


def _clip(path: str, word: str, speaker: str = "ann", source: str = "sc", lang: str = "en") -> Clip:
    return Clip(Path("/data") / path, word, speaker, source, lang)


def test_disjointness_fires_on_a_training_clip_by_path_or_by_speaker_and_word():
    clips = [_clip("sc/yes/ann_nohash_0.wav", "yes"), _clip("sc/no/bob_nohash_0.wav", "no", "bob")]
    guard.assert_disjoint(clips, ["sc/yes/ann_nohash_1.wav", "other/yes/ann_nohash_0.wav"])
    with pytest.raises(guard.LeakageError, match="ann_nohash_0"):
        guard.assert_disjoint(clips, ["yes/ann_nohash_0.wav"])
    with pytest.raises(guard.LeakageError, match="1 evaluation clips"):
        guard.assert_disjoint(clips, [("sc", "bob", "no")])


def test_unseen_word_claim_needs_reserved_words_or_a_held_out_language():
    guard.assert_unseen_words([_clip("a.wav", "yes"), _clip("b.wav", "seven")])
    with pytest.raises(guard.LeakageError, match="marvin"):
        guard.assert_unseen_words([_clip("a.wav", "yes"), _clip("b.wav", "marvin")])
    zh = [_clip("c.wav", "zh_bei3jing1", lang="zh")]
    with pytest.raises(guard.LeakageError):
        guard.assert_unseen_words(zh)
    guard.assert_unseen_words(zh, held_out_languages=["zh"])


def test_training_clip_ids_from_the_manifest(tmp_path):
    model = tmp_path / "encoder.tflite"
    assert guard.training_clip_ids({}, model) is None
    assert guard.training_clip_ids({"clip_ids": ["a/b.wav"]}, model) == ["a/b.wav"]
    ids = tmp_path / "clips.txt"
    ids.write_text("yes/ann_nohash_0.wav\n")
    digest = hashlib.sha256(ids.read_bytes()).hexdigest()
    training = {"clip_ids_file": "clips.txt", "clip_ids_sha256": digest}
    assert guard.training_clip_ids(training, model) == ["yes/ann_nohash_0.wav"]
    with pytest.raises(guard.LeakageError):
        guard.check([_clip("sc/yes/ann_nohash_0.wav", "yes")], training, model)
    training["clip_ids_sha256"] = "0" * 64
    with pytest.raises(guard.LeakageError, match="does not match"):
        guard.training_clip_ids(training, model)
    (tmp_path / "clips.json").write_text(json.dumps([["sc", "ann", "yes"]]))
    assert guard.training_clip_ids({"clip_ids_file": "clips.json"}, model) == [("sc", "ann", "yes")]


# ---------------------------------------------------------------------------------------
# end to end on espeak-ng words with the shipped model
# ---------------------------------------------------------------------------------------

WORDS = ("lantern", "pepper", "window", "garden", "rocket", "meadow", "silver", "tunnel")
VOICES = ("en-us", "en-us+f3", "en-gb", "en-gb-scotland+m3", "en-029", "en-gb-x-rp+f2")


@pytest.fixture(scope="module")
def espeak_dataset(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    root = tmp_path_factory.mktemp("espeak_words")
    for word in WORDS:
        (root / word).mkdir()
        for voice in VOICES:
            for rate in (140, 175):
                name = f"{voice.replace('+', '-')}-r{rate}_0.wav"
                subprocess.run(
                    ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(root / word / name), word], check=True
                )
    return root


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="firmware_models/encoder.tflite not exported yet")
def test_fewshot_protocol_on_generated_words_is_well_above_chance(espeak_dataset, tmp_path):
    from trainer.evaluation.cli import main

    out = tmp_path / "result.json"
    code = main(
        [
            "fewshot", "--model", str(SHIPPED_MODEL), "--dataset", str(espeak_dataset), "--words", "all",
            "--ways", "5", "--shots", "1,3", "--episodes", "40", "--mode", "cross", "--workers", "1",
            "--results", str(tmp_path / "eval"), "--json", str(out),
            "--write-benchmarks", "--benchmarks", str(tmp_path / "BENCHMARKS.md"),
        ]
    )  # fmt: skip
    assert code == 0
    summaries = json.loads(out.read_text())["fewshot"]
    assert [s["shots"] for s in summaries] == [1, 3]
    for s in summaries:
        assert 0.0 <= s["accuracy"] <= 1.0
        assert s["accuracy"] > 2.5 * s["chance"], s
    assert "5-way 3-shot cross" in (tmp_path / "eval" / "fewshot.md").read_text()
    benchmarks = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Evaluation" in benchmarks and "kws-eval fewshot" in benchmarks and "machine:" in benchmarks


@pytest.mark.skipif(not SHIPPED_MODEL.is_file(), reason="firmware_models/encoder.tflite not exported yet")
def test_cli_refuses_to_call_trained_words_unseen(espeak_dataset, tmp_path, capsys):
    from trainer.evaluation.cli import main

    args = ["fewshot", "--model", str(SHIPPED_MODEL), "--dataset", str(espeak_dataset), "--ways", "5"]
    assert main([*args, "--words", "lang:en", "--results", str(tmp_path)]) == 3  # English is not held out
    assert "not reserved" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# the peer: EfficientWord-Net in its own venv (make install-peer)
# ---------------------------------------------------------------------------------------


def test_peer_baseline_is_skipped_with_a_reason_when_its_venv_is_absent(tmp_path, capsys):
    from trainer.evaluation import peer
    from trainer.evaluation.cli import _methods

    assert "make install-peer" in peer.unavailable(tmp_path / "nowhere")
    args = SimpleNamespace(model=Path("m.tflite"), also=None, teacher=Path("t"), peer_venv=tmp_path / "nowhere")
    methods = _methods(args, ["dtw", "peer"])
    assert [m.label for m in methods] == ["ours", "MFCC+DTW"]
    assert "skipping EfficientWord-Net" in capsys.readouterr().err and args.peer_skipped


def _peer_reason() -> str | None:
    from trainer.evaluation import peer

    return peer.unavailable()


@pytest.mark.skipif(_peer_reason() is not None, reason=f"EfficientWord-Net peer: {_peer_reason()}")
def test_peer_embeds_clips_as_unit_vectors():
    from trainer.evaluation import peer
    from trainer.evaluation.embedders import EmbedderSpec, embed_all

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(len(t))).astype(np.float32)  # 0.5 s: zero-padded
    noise = (0.05 * rng.standard_normal(32000)).astype(np.float32)  # 2 s: cropped to 1.5 s
    rows = embed_all(EmbedderSpec("peer", peer.default_venv(), "peer"), [tone, noise], workers=1)
    assert rows.shape == (2, peer.PEER_EMBEDDING_SIZE) and rows.dtype == np.float32
    assert np.all(np.isfinite(rows))
    assert np.linalg.norm(rows, axis=1) == pytest.approx([1.0, 1.0], abs=1e-4)
    assert float(rows[0] @ rows[1]) < 0.99  # different sounds, different vectors


def test_model_card_measured_section_is_replaced_not_appended(tmp_path):
    from trainer.evaluation import report

    card = tmp_path / "README.md"
    assert not report.update_model_card(card, f"{report.CARD_SECTION}\n\nfirst\n")
    card.write_text("# Encoder\n\nmade by export\n")
    assert report.update_model_card(card, f"{report.CARD_SECTION}\n\n| a | 1 |\n")
    assert report.update_model_card(card, f"{report.CARD_SECTION}\n\n| a | 2 |\n")
    text = card.read_text()
    assert text.startswith("# Encoder\n\nmade by export\n\n") and text.count(report.CARD_SECTION) == 1
    assert "| a | 2 |" in text and "| a | 1 |" not in text


def _row_sum(index: int) -> float:
    from trainer.evaluation.forked import shared

    return float(shared()[index].sum())


@pytest.mark.parametrize("workers", [1, 2])
def test_fork_imap_shares_one_object_and_keeps_the_order(workers):
    from trainer.evaluation.forked import fork_imap, shared

    rows = np.arange(40, dtype=np.float64).reshape(10, 4)
    assert list(fork_imap(_row_sum, range(9, -1, -1), rows, workers)) == [float(r.sum()) for r in rows[::-1]]
    assert shared() is None  # released once the map is done
