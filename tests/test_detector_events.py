"""The streaming detector's contract (issue #25): scores and events do not depend on chunking, an
event is the utterance's peak, only the best keyword fires on one utterance, sensitivity moves
every threshold the same way, and ``process`` takes int16 / PCM bytes and refuses what it cannot read.

Real audio through the shipped encoder: keywords enrolled from espeak-ng takes, detected in another
voice (the same material as tests/test_cli.py).
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from spoken import say
from test_cli import ENROLL_VOICES, MODEL, OTHER_VOICE, compose, noise

from device.detector import DetectorSettings, StreamingDetector, as_samples
from device.enroll import score
from device.sensitivity import FALLBACK_SHIFT_PER_TENTH, TAIL_RANKS, threshold_at
from device.spotter import Spotter
from device.store import KeywordStore

RATE = 16000


@pytest.fixture(scope="module")
def spotter(tmp_path_factory) -> Spotter:
    """'hey toaster' and 'open sesame' enrolled through the Python API (quicker than the CLI)."""
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} absent (export a model: `make export`)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (apt install espeak-ng)")
    spotter = Spotter(tmp_path_factory.mktemp("events") / "store", MODEL)
    for word in ("hey toaster", "open sesame"):
        spotter.enroll(word, [say(word, *v) for v in ENROLL_VOICES], keep_takes=False)
    return spotter


@pytest.fixture(scope="module")
def stream_audio() -> tuple[np.ndarray, dict[str, list[float]]]:
    """Another voice saying both keywords between other words, then a second of silence."""
    audio, ends = compose(
        [
            ("", noise(1.0, 0.002, seed=1)),
            ("", say("good morning everyone", *OTHER_VOICE)),
            ("", noise(1.0, 0.01, seed=2, colour="brown")),
            ("hey toaster", say("hey toaster", *OTHER_VOICE)),
            ("", noise(1.5, 0.002, seed=3)),
            ("open sesame", say("open sesame", *OTHER_VOICE)),
            ("", noise(1.5, 0.002, seed=5)),
        ]
    )
    return np.concatenate([audio, np.zeros(RATE, np.float32)]), ends


def run(stream, audio, chunk: int) -> tuple[list, list]:
    """Feed ``audio`` in ``chunk``-sample pieces; return the events and every hop's (time, scores)."""
    hops: list = []
    stream.on_hop = lambda now, scores, thresholds: hops.append((now, scores.copy()))
    events = []
    for start in range(0, len(audio), chunk):
        events += stream.process(audio[start : start + chunk])
    return events, hops


def test_scores_and_events_are_identical_for_any_chunk_size(spotter, stream_audio):
    audio, ends = stream_audio
    results = {chunk: run(spotter.new_stream(), audio, chunk) for chunk in (1600, 1024, 160, RATE, len(audio))}
    events, hops = results[1600]
    assert sorted(e.keyword for e in events) == ["hey toaster", "open sesame"], events
    for chunk, (other_events, other_hops) in results.items():
        assert other_events == events, chunk  # same keyword, time and score, to the bit
        assert [t for t, _ in other_hops] == [t for t, _ in hops], chunk
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(other_hops, hops, strict=True)), chunk
    times = np.array([t for t, _ in hops])
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-9)  # one run every hop of stream time
    for event in events:
        assert abs(event.time_s - ends[event.keyword][0]) < 0.3, (event, ends)


def test_an_event_carries_the_peak_score_of_its_utterance(spotter, stream_audio):
    audio, ends = stream_audio
    stream = spotter.new_stream()
    events, hops = run(stream, audio, 1600)
    names = [k.name for k in stream.keywords]
    for event in events:
        k = names.index(event.keyword)
        # The hops from first passing the threshold to the event: the event's score is their highest.
        passing = [(t, s[k]) for t, s in hops if s[k] >= stream.thresholds[k] and abs(t - event.time_s) < 0.6]
        assert passing, event
        assert event.score == pytest.approx(max(s for _, s in passing[:4]))
        assert event.score >= passing[0][1]


def test_detect_file_is_chunk_size_independent(spotter, stream_audio, tmp_path):
    from device.audio import write_wav

    audio, _ = stream_audio
    path = tmp_path / "stream.wav"
    write_wav(path, audio, RATE)
    events = spotter.detect_file(path)
    for seconds in (0.064, 0.01, 1.0):
        assert spotter.detect_file(path, chunk_seconds=seconds) == events


def test_only_the_best_keyword_fires_on_one_utterance(spotter, stream_audio):
    audio, _ = stream_audio
    toaster = spotter.store.keywords["hey toaster"]
    # A second keyword with the same prototype passes on the same utterance; its margin is 0.05 larger.
    twin = replace(toaster, name="toaster twin", threshold=toaster.threshold - 0.05)
    stream = spotter.new_stream()
    stream.set_keywords([toaster, twin])
    events, _ = run(stream, audio, 1600)
    assert [e.keyword for e in events] == ["toaster twin"], events
    # The other way round, the original wins; without best_only both fire.
    stream.set_keywords([toaster, replace(twin, threshold=toaster.threshold + 0.02)])
    stream.reset()
    assert [e.keyword for e in run(stream, audio, 1600)[0]] == ["hey toaster"]
    independent = StreamingDetector(spotter.encoder, [toaster, twin], DetectorSettings(best_only=False))
    assert sorted(e.keyword for e in run(independent, audio, 1600)[0]) == ["hey toaster", "toaster twin"]


def test_int16_and_pcm_bytes_give_the_float_results(spotter, stream_audio):
    audio, _ = stream_audio
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    expected, expected_hops = run(spotter.new_stream(), pcm.astype(np.float32) / 32768, 1600)
    assert expected
    as_bytes = pcm.astype("<i2").tobytes()
    for name, data, chunk in (
        ("int16", pcm, 1600),
        ("float64", pcm.astype(np.float64) / 32768, 1600),
        ("bytes", as_bytes, 3200),
        ("bytearray", bytearray(as_bytes), 2048),
        ("memoryview", memoryview(as_bytes), 320),
    ):
        events, hops = run(spotter.new_stream(), data, chunk)
        assert events == expected, name
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(hops, expected_hops, strict=True)), name
    assert spotter.process(pcm[:1600]) == []  # the Spotter API takes them too


@pytest.mark.parametrize(
    ("given", "error", "says"),
    [
        (np.zeros((1600, 1), np.float32), ValueError, "shape (1600, 1)"),
        (np.zeros((2, 800), np.int16), ValueError, "shape (2, 800)"),
        (np.zeros(1600, np.int32), TypeError, "dtype int32"),
        (np.array([0.0, "x"], dtype=object), TypeError, "dtype object"),
        ("not audio", TypeError, "got str"),
        ([0.0, 0.1], TypeError, "got list"),
        (b"\x00\x01\x02", ValueError, "got 3 bytes"),
    ],
)
def test_unreadable_input_is_refused_saying_what_it_was(given, error, says):
    with pytest.raises(error) as raised:
        as_samples(given)
    assert says in str(raised.value)
    assert "\\x00" not in str(raised.value)  # names the length, never prints the bytes


def test_sensitivity_moves_thresholds_monotonically_along_the_negative_bank(spotter):
    negatives = spotter.negatives
    for keyword in spotter.store.keywords.values():
        assert [r for r, _ in keyword.stats["negative_tail"]] == [r for r in TAIL_RANKS if r <= len(negatives)]
        grid = [threshold_at(keyword.threshold, keyword.stats, s) for s in np.linspace(0, 1, 21)]
        assert all(a >= b for a, b in zip(grid, grid[1:], strict=False)), grid
        assert threshold_at(keyword.threshold, keyword.stats, 0.5) == keyword.threshold
        scores = score(keyword.prototype_matrix(), negatives)
        passing = {s: int(np.sum(scores >= threshold_at(keyword.threshold, keyword.stats, s))) for s in (0.3, 0.5, 0.7)}
        assert passing[0.5] == keyword.stats["negative_above_threshold"]
        # Each 0.1 doubles the bank windows passing: 0.7 about 4x those at 0.5, 0.3 about a quarter.
        assert 2.5 * passing[0.5] <= passing[0.7] <= 7 * max(passing[0.5], 1), passing
        assert passing[0.3] <= passing[0.5] / 1.5, passing


def test_old_keywords_without_calibration_stats_shift_by_the_fallback(spotter):
    keyword = spotter.store.keywords["hey toaster"]
    stats = {k: v for k, v in keyword.stats.items() if not k.startswith("negative_")}
    assert threshold_at(keyword.threshold, stats, 0.7) == pytest.approx(
        keyword.threshold - 2 * FALLBACK_SHIFT_PER_TENTH
    )
    assert threshold_at(keyword.threshold, stats, 0.5) == keyword.threshold


def test_higher_sensitivity_never_detects_less(spotter, stream_audio):
    audio, _ = stream_audio
    talk = np.concatenate([say(t, *OTHER_VOICE) for t in ("hey there toast", "open the door sesame", "hello")])
    audio = np.concatenate([audio, talk, np.zeros(RATE, np.float32)])
    counts, thresholds = [], []
    for sensitivity in (0.0, 0.3, 0.5, 0.7, 0.9, 1.0):
        keywords = list(spotter.store.keywords.values())
        stream = StreamingDetector(spotter.encoder, keywords, DetectorSettings(sensitivity_override=sensitivity))
        counts.append(len(run(stream, audio, 1600)[0]))
        thresholds.append(stream.thresholds)
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    assert all(np.all(a >= b) for a, b in zip(thresholds, thresholds[1:], strict=False))


def test_sensitivity_precedence_and_storage(spotter, tmp_path):
    store = KeywordStore(tmp_path / "store")
    keyword = spotter.store.keywords["hey toaster"]
    store.put(keyword)
    stored = store.update_settings("hey toaster", sensitivity=0.8)
    assert stored.sensitivity == 0.8
    reloaded = KeywordStore(tmp_path / "store").keywords["hey toaster"]
    assert reloaded.sensitivity == 0.8
    assert DetectorSettings(sensitivity=0.3).sensitivity_of(reloaded) == 0.8  # the keyword's own beats the default
    assert DetectorSettings(sensitivity=0.3).sensitivity_of(keyword) == 0.3  # a keyword without its own
    assert DetectorSettings(sensitivity_override=0.6).sensitivity_of(reloaded) == 0.6  # --sensitivity beats both
    assert store.update_settings("hey toaster", sensitivity=None).sensitivity is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        DetectorSettings(sensitivity=1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        DetectorSettings(sensitivity_override=-0.1)


def test_store_records_keep_the_sensitivity_validated_and_old_records_still_load(spotter, tmp_path):
    import json

    from device.store import STORE_FILE, StoreError, _checksum

    folder = tmp_path / "store"
    store = KeywordStore(folder)
    keyword = spotter.store.keywords["hey toaster"]
    for bad in (1.5, -0.1, True, "0.7", float("nan")):
        with pytest.raises(StoreError, match="sensitivity"):
            store.put(replace(keyword, sensitivity=bad))
    with pytest.raises(StoreError, match="negative_tail"):
        store.put(replace(keyword, stats=keyword.stats | {"negative_tail": [[2, 0.5], [1, 0.6]]}))
    for bad in ("english", "en_US", "en-us", 7):  # stored tags are checked and in their usual case
        with pytest.raises(StoreError, match="language"):
            store.put(replace(keyword, language=bad))
    with pytest.raises(TypeError, match="not a keyword setting: threshold"):
        store.update_settings("hey toaster", threshold=0.1)
    store.put(replace(keyword, sensitivity=0.25))
    # A record written before sensitivity and the tail existed: no such keys at all.
    data = json.loads((folder / STORE_FILE).read_text())
    record = data["payload"]["keywords"][0]
    del record["sensitivity"], record["language"]
    record["stats"] = {k: v for k, v in record["stats"].items() if not k.startswith("negative_")}
    data["checksum"] = _checksum(data["payload"])
    (folder / STORE_FILE).write_text(json.dumps(data))
    old = KeywordStore(folder).keywords["hey toaster"]
    assert old.sensitivity is None
    stream = StreamingDetector(spotter.encoder, [old], DetectorSettings(sensitivity=0.7))
    assert stream.thresholds[0] == pytest.approx(old.threshold - 2 * FALLBACK_SHIFT_PER_TENTH)
