"""local-wake streamed as a baseline: its ``lwake listen`` loop in its own venv (skipped where that venv is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from spoken import say

from device.noise import coloured_noise
from trainer.evaluation import localwake
from trainer.evaluation.streaming import KeywordPlan

VENV = localwake.default_venv()
REASON = localwake.unavailable(VENV)
needs_venv = pytest.mark.skipif(REASON is not None, reason=f"local-wake not installed: {REASON}")


def test_unavailable_names_the_missing_venv_without_running_anything(tmp_path):
    reason = localwake.unavailable(tmp_path / "nowhere")
    assert reason == f"no local-wake venv at {tmp_path / 'nowhere'} (make install-localwake)"
    (tmp_path / "bare" / "bin").mkdir(parents=True)
    (tmp_path / "bare" / "bin" / "python").write_text("")
    assert "speech-embedding.onnx" in localwake.unavailable(tmp_path / "bare")


def test_hops_are_those_lwake_listen_reads():
    assert localwake.hop_count(3999) == 0
    assert localwake.hop_count(4000) == 1
    assert localwake.hop_count(16000 * 60) == 240  # 0.25 s slides


@needs_venv
def test_score_peaks_on_the_spliced_word_and_equals_the_packages_own_listen_loop():
    rng = np.random.default_rng(3)
    takes = [say("hey toaster", pitch=p, speed=s) for p, s in ((40, 150), (55, 165), (65, 175))]
    word = say("hey toaster", pitch=48, speed=158)  # another rendition of the same word
    seconds, at = 8.0, 4.0
    audio = 0.01 * coloured_noise(int(seconds * 16000), rng, exponent=1.0)
    start = int(at * 16000)
    audio[start : start + len(word)] += word
    audio = audio.astype(np.float32)
    plans = [KeywordPlan("hey toaster", "hey toaster", "espeak", [], [], [], enrolled=takes)]
    # chunks of 5 hops: several chunks per worker and a buffer reaching back into the previous chunk
    (baseline,) = localwake.localwake_traces(VENV, audio, plans, workers=2, chunk_hops=5)
    trace = baseline.trace
    assert baseline.label == localwake.LOCALWAKE_LABEL and baseline.refractory == 2.0
    assert len(trace.times) == localwake.hop_count(len(audio)) == 32
    np.testing.assert_allclose(np.diff(trace.times), 0.25)
    assert trace.scores.shape == (32, 1) and np.all(trace.scores <= 0)  # minus a distance
    assert trace.names == ["hey toaster"] and np.all(trace.thresholds == 0)
    scores = trace.scores[:, 0]
    peak = trace.times[int(np.argmax(scores))]
    word_end = (start + len(word)) / 16000
    assert word_end - 0.1 <= peak <= word_end + localwake.LOCALWAKE_BUFFER_SECONDS  # a buffer holding the word
    noise_only = (trace.times < at) & (trace.times >= localwake.LOCALWAKE_BUFFER_SECONDS)  # full buffers of noise
    assert scores.max() > scores[noise_only].max() + 0.02  # measured: distance 0.194 on the word, >= 0.231 on noise

    # the port against `lwake.listen.listen` itself, its microphone replaced by the same stream
    theirs = localwake.package_listen_distances(VENV, audio, takes)
    np.testing.assert_array_equal(-scores, theirs)
