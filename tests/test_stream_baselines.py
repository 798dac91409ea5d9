"""The baselines streamed beside ours: subsequence DTW, the ported EfficientWord-Net engine, the comparison table."""

from __future__ import annotations

import numpy as np
import pytest
from spoken import say

from device.frontend import FrontendConfig
from trainer.evaluation import report
from trainer.evaluation.dtw import subsequence_dtw, subsequence_dtw_reference, subsequence_dtw_windows
from trainer.evaluation.stream_baselines import (
    dtw_template,
    dtw_trace,
    peer_gate,
    peer_scores,
    running_mean_removed,
    summarise_baseline,
)
from trainer.evaluation.streaming import Event, KeywordPlan, keyword_windows


def test_subsequence_dtw_matches_the_double_loop_and_finds_a_copy_at_any_pace():
    rng = np.random.default_rng(0)
    template = rng.standard_normal((7, 3)).astype(np.float32)
    windows = rng.standard_normal((5, 16, 3)).astype(np.float32)
    windows[1, 3:10] = template  # said at the template's pace, mid-window
    windows[2, 2:16] = np.repeat(template, 2, axis=0)  # said twice as slowly: within the slope limit
    windows[3, :4] = template[::2]  # twice as fast
    got = subsequence_dtw(template, windows)
    expected = [subsequence_dtw_reference(template, w) for w in windows]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[1] == pytest.approx(0.0, abs=1e-6) and got[2] == pytest.approx(0.0, abs=1e-6)
    assert got[3] < got[0] and got[3] < got[4]  # half the frames skipped costs something, but less than noise


def test_subsequence_dtw_cannot_collapse_a_template_onto_one_frame():
    template = np.array([[1.0], [-1.0], [1.0], [-1.0]], np.float32)
    window = np.zeros((1, 10, 1), np.float32)
    window[0, 5] = 1.0  # one frame like part of the template: free vertical steps would match it all there
    assert subsequence_dtw(template, window)[0] > 0.5


def test_streaming_windows_are_the_explicit_windows():
    rng = np.random.default_rng(1)
    template = rng.standard_normal((9, 4)).astype(np.float32)
    frames = rng.standard_normal((305, 4)).astype(np.float32)
    got = subsequence_dtw_windows(template, frames, window=40, hop=10, block=7)  # blocks not a divisor
    ends = np.arange(40, 306, 10)
    assert len(got) == len(ends)
    expected = subsequence_dtw(template, np.stack([frames[e - 40 : e] for e in ends]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_running_mean_is_causal_and_by_hand():
    features = np.array([[1.0], [3.0], [5.0], [7.0]], np.float32)
    np.testing.assert_allclose(running_mean_removed(features, 2)[:, 0], [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(running_mean_removed(features, 10)[:, 0], [0.0, 1.0, 2.0, 3.0])


def test_peer_gate_and_score_follow_the_package():
    window = np.full(24000, 0.01, np.float32)
    window[8000:12000] = 0.5  # the word after a quiet start: scored
    assert not peer_gate(window)
    window[:800] = 0.2  # sound at 40% of the peak in the first 0.1 s: skipped
    assert peer_gate(window)
    assert peer_gate(np.zeros(24000, np.float32))
    references = np.array([[1.0, 0.0], [0.0, 1.0]])
    windows = np.array([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]])
    np.testing.assert_allclose(peer_scores(windows, references), [1.0, 0.5, 0.9])  # best (cos + 1) / 2


def test_dtw_trace_peaks_where_the_keyword_is_said():
    frontend = FrontendConfig()
    rng = np.random.default_rng(2)
    takes = [say("toaster", pitch=p) for p in (40, 50, 60)]
    audio = (0.003 * rng.standard_normal(16000 * 16)).astype(np.float32)
    occurrences = {"toaster": 4.0, "window": 10.0}
    for word, at in occurrences.items():
        clip = say(word, pitch=55) * np.float32(0.3)
        start = int(at * 16000)
        audio[start : start + len(clip)] += clip
    plan = KeywordPlan("toaster", "toaster", "me", takes, [], [], enrolled=takes)
    baseline = dtw_trace(audio, [plan], frontend, window_frames=120, refractory=1.5)  # one process per core
    trace = baseline.trace
    one_process = dtw_trace(audio, [plan], frontend, window_frames=120, refractory=1.5, workers=1).trace
    np.testing.assert_array_equal(trace.scores, one_process.scores)
    assert trace.scores.shape == (len(trace.times), 1) and trace.names == ["toaster"]
    best = float(trace.times[int(np.argmax(trace.scores[:, 0]))])
    assert 4.0 < best < 4.0 + len(say("toaster")) / 16000 + 1.3  # the window that holds the keyword
    near_other = (trace.times > 10.3) & (trace.times < 11.5)
    assert trace.scores[:, 0].max() > trace.scores[near_other, 0].max()  # another word scores lower
    events = [Event(4.0, 4.6, "toaster", "me", "target", "toaster"), Event(10.0, 10.5, "window", "x", "o", None)]
    summary = summarise_baseline(baseline, [keyword_windows(events, "toaster", "toaster", 16.0, 1.0)])
    assert summary["label"] == "MFCC+DTW" and min(summary["global"]["frr"]) == 0.0
    assert len(dtw_template(takes[0], frontend)) < 120  # speech frames only, not the noise lead


def test_comparison_rows_by_hand():
    def sweep(frr_at_fa: list, fa_at_frr: list) -> dict:
        return {
            "frr_at_fa": dict(zip((0.5, 1.0, 2.0, 5.0), frr_at_fa, strict=True)),
            "fa_at_frr": dict(zip((0.05, 0.10, 0.20), fa_at_frr, strict=True)),
        }

    result = {
        "calibrated": sweep([0.5, 0.4, 0.3, 0.2], [0.0, 10.0, 4.0]),
        "baselines": [{"label": "DTW", "global": sweep([1.0, 0.9, None, 0.25], [20.0, 25.0, None])}],
    }
    header, rows = report.stream_comparison_rows(result)
    assert len(header) == 8
    assert rows == [["DTW", "+50.0", "+50.0", "n/a", "+5.0", "ours 0", "2.5x", "n/a"]]

    result["baselines"][0].update(detector="1.2 s every 0.1 s", windows_scored=10, processing_seconds=1.0)
    result["baselines_skipped"] = [
        "EfficientWord-Net: no EfficientWord-Net venv at /x (make install-peer)",
        "local-wake: no local-wake venv at /y (make install-localwake)",
    ]
    text = "\n".join(report.stream_baseline_lines(result))
    assert "- DTW: 1.2 s every 0.1 s; 10 windows scored" in text and "| DTW | +50.0 |" in text
    assert "EfficientWord-Net not streamed: no EfficientWord-Net venv at /x (make install-peer)." in text
    assert "local-wake not streamed: no local-wake venv at /y (make install-localwake)." in text


def test_fewshot_differences_by_hand():
    summaries = [
        {"task": "t1", "method": "ours", "accuracy": 0.815},
        {"task": "t1", "method": "teacher", "accuracy": 0.890},
        {"task": "t1", "method": "DTW", "accuracy": 0.475},
        {"task": "t2", "method": "ours", "accuracy": 0.9},
        {"task": "t2", "method": "teacher", "accuracy": 0.85},
    ]
    header, rows = report.fewshot_difference_rows(summaries)
    assert header == ["task", "ours - teacher", "ours - DTW"]
    assert rows == [["t1", "-7.5", "+34.0"], ["t2", "+5.0", ""]]


def test_synthetic_evaluation_voices_are_none_of_trainings_and_say_the_reserved_words(tmp_path):
    from trainer.evaluation import synth_set
    from trainer.evaluation.data import read_clips
    from trainer.synth import ENGINES, find_voices

    if synth_set.unavailable():
        pytest.skip(synth_set.unavailable())
    catalog = find_voices(ENGINES)
    training = synth_set.training_speaker_ids(catalog)
    assert len(training) == 300
    chosen = synth_set.evaluation_speakers(catalog, 6, training)
    assert len(chosen) == 6 and not {s.id for s in chosen} & training
    with pytest.raises(RuntimeError, match="differ from training"):
        synth_set.evaluation_speakers(catalog, 6, training | _all_ids(catalog))
    summary = synth_set.render(tmp_path / "set", speakers=2, takes=1)
    assert summary.clips == 40 and summary.failed == 0
    clips = read_clips(tmp_path / "set", "reserved")
    assert {c.word for c in clips} == set(synth_set.EVALUATION_KEYWORDS)
    assert len({c.speaker_key for c in clips}) == 2


def _all_ids(catalog) -> set[str]:
    from trainer.evaluation import synth_set
    from trainer.synth import sample_speakers

    return {s.id for s in sample_speakers(catalog, 4 * 6, synth_set.EVAL_SEED)}
