"""``trainer.bench``: the arithmetic behind its figures on hand cases, the BENCHMARKS.md section, and one quick run.

The helpers are checked by hand because a wrong percentile or share would print a
plausible but false number; the end-to-end run only proves the bench still works
against the current device code (its figures are not judged here).
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer import bench

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")


def test_summarize_median_and_p95_on_a_hand_case():
    stats = bench.summarize(range(1, 101))  # 1..100
    assert stats.n == 100
    assert stats.median == pytest.approx(50.5)
    assert stats.p95 == pytest.approx(95.05)  # linear interpolation between 95 and 96
    odd = bench.summarize([0.3, 0.1, 0.2])
    assert (odd.median, odd.n) == (pytest.approx(0.2), 3)


def test_summarize_of_nothing_is_nan_not_an_error():
    stats = bench.summarize([])
    assert stats.n == 0 and np.isnan(stats.median) and np.isnan(stats.p95)


def test_cpu_share_is_cpu_seconds_per_audio_second():
    assert bench.cpu_share(0.6, 60.0) == pytest.approx(0.01)  # 0.6 s of CPU for a minute of audio: 1 % of a core
    assert bench.cpu_share(3.0, 100.0) == pytest.approx(bench.CPU_SHARE_TARGET)
    with pytest.raises(ValueError):
        bench.cpu_share(1.0, 0.0)


def test_share_rest_is_what_frontend_and_encoder_do_not_explain():
    share = bench.Share(total=0.025, frontend=0.01, encoder=0.012, encoder_runs=10, hops=10)
    assert share.rest == pytest.approx(0.003)
    assert bench.Share(0.01, 0.006, 0.006, 1, 1).rest == 0.0  # timer noise never makes it negative


def test_verdict_and_ratio_formatting():
    assert bench.verdict(0.029, 0.03) == "met"
    assert bench.verdict(0.031, 0.03) == "NOT met"
    assert bench.verdict(float("nan"), 0.03) == "n/a"
    assert bench.times_ref(2e-4, 1e-5) == "20.0x"
    assert bench.times_ref(2e-2, 1e-5) == "2,000x"
    assert bench.times_ref(float("nan"), 1e-5) == ""


def test_milliseconds_keep_only_meaningful_digits():
    assert bench.ms(0.00009) == "0.09 ms"
    assert bench.ms(0.036) == "36.0 ms"
    assert bench.ms(0.352) == "352 ms"
    assert bench.ms(-0.054) == "-54.0 ms"


def test_vm_status_reads_this_process_memory():
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc (not Linux)")
    memory = bench.vm_status_mb(os.getpid())
    assert 1.0 < memory["VmRSS"] <= memory["VmHWM"] < 100_000


def test_match_detections_pairs_events_with_words():
    words = [(1.0, 1.6), (5.0, 5.8), (9.0, 9.5)]
    events = [
        (1.9, 1.55),  # word 0, 300 ms after its end
        (2.0, 1.6),  # word 0 again: a duplicate
        (3.9, 3.0),  # 2.3 s after word 0 ended, before word 1 started: a false alarm
        (5.7, 5.6),  # word 1, returned 100 ms before the word's end
        (0.5, 0.4),  # before any word: a false alarm
    ]
    match = bench.match_detections(words, events, max_delay=1.5)
    assert match.latencies == pytest.approx([0.3, -0.1])
    assert match.stamp_errors == pytest.approx([-0.05, -0.2])
    assert (match.misses, match.false_alarms, match.duplicates) == (1, 2, 1)


def test_word_stream_knows_where_each_word_ends():
    rng = np.random.default_rng(0)
    word = np.zeros(8000, np.float32)
    word[1600:6400] = 0.5 * np.sin(np.arange(4800) * 0.3)  # 0.3 s of tone inside 0.5 s of silence
    audio, words = bench.word_stream([word, word], np.zeros(bench.RATE, np.float32), rng)
    assert len(words) == 2
    for start, end in words:
        assert end - start == pytest.approx(0.3, abs=0.011)  # trimmed to the tone (10 ms frames)
        assert np.abs(audio[int(start * bench.RATE) : int(end * bench.RATE)]).max() > 0.4
        assert np.abs(audio[int(end * bench.RATE) + 160 : int(end * bench.RATE) + 8000]).max() == 0.0
    assert words[1][0] - words[0][1] >= 2.5


def test_detection_delays_pair_each_detection_with_the_chunk_it_names():
    sent = {0: 10.00, 30: 10.03, 60: 10.06, 90: 10.09}  # chunk timestamp (ms) -> when its write finished
    received = [(10.075, 60), (10.5, 7), (10.2, None), (10.1, 90)]  # an unknown stamp and no stamp are ignored
    assert bench.detection_delays(sent, received) == pytest.approx([0.015, 0.01])
    assert bench.detection_delays(sent, []) == []


def test_server_rows_say_why_when_skipped():
    results = bench.Results.__new__(bench.Results)
    results.server = bench.ServerBench(skipped="the `wyoming` package is not installed")
    rows = bench.server_rows(results)
    assert len(rows) == 2
    assert all("skipped: the `wyoming` package" in r.value and r.target == "—" for r in rows)


def test_append_benchmarks_creates_then_appends_dated_sections(tmp_path):
    report = bench.Report(
        rows=[bench.Row("model size", "12,496 bytes"), bench.Row("pipeline", "1.00% of a core", "90x", "met")],
        header=[("machine", bench.machine_line()), ("command", "`python -m trainer.bench --quick`")],
        notes=["a note"],
    )
    path = tmp_path / "BENCHMARKS.md"
    when = datetime.datetime(2026, 11, 24, 8, 30, tzinfo=datetime.timezone.utc)
    bench.append_benchmarks(path, bench.render_markdown(report, when))
    bench.append_benchmarks(path, bench.render_markdown(report, when + datetime.timedelta(days=1)))
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert text.count("# Benchmarks") == 1
    assert "## Speed, memory and latency (2026-11-24 08:30 UTC)" in text
    assert text.index("2026-11-24 08:30") < text.index("2026-11-25 08:30")
    assert f"- machine: {bench.cpu_model()}, {os.cpu_count()} cores" in text
    assert "- command: `python -m trainer.bench --quick`" in text
    assert "| pipeline | 1.00% of a core | 90x | met |" in text
    assert text.count("## Latest runs") == 1 and text.index("## Latest runs") < text.index("2026-11-24 08:30")


def test_console_table_lines_up():
    report = bench.Report(rows=[bench.Row("a", "1"), bench.Row("longer measure", "22", "3x", "met")], header=[])
    lines = bench.render_console(report).splitlines()
    table = [line for line in lines if line.startswith(("measure", "a ", "longer"))]
    assert len(table) == 3
    assert table[1].index("1") == table[2].index("22") == table[0].index("value")


@pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH (apt install espeak-ng)")
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory is read from /proc (Linux only)")
def test_quick_bench_runs_end_to_end_and_writes_a_section(tmp_path):
    target = tmp_path / "BENCHMARKS.md"
    command = [sys.executable, "-m", "trainer.bench", "--quick", "--model", str(MODEL)]
    done = subprocess.run(
        [*command, "--write-benchmarks", "--benchmarks", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, KWS_CONFIG=str(tmp_path / "no-config.toml")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for measure in (
        "encoder latency, 1 thread",
        "pipeline, speech stream, 10 keywords",
        "end of word",
        "peak RSS",
        "Wyoming server",
    ):
        assert measure in done.stdout
    section = target.read_text()
    assert "## Speed, memory and latency" in section
    assert "--quick" in section and "- machine:" in section


@pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")
def test_detect_memory_measures_the_command_not_the_bench(tmp_path):
    import json

    import soundfile

    from device.store import Keyword, KeywordStore

    manifest = json.loads(MODEL.with_suffix(".json").read_text())
    vector = np.zeros(manifest["embedding_size"])
    vector[0] = 1.0
    keyword = Keyword(name="x", prototypes=[vector.tolist()], threshold=0.9, encoder_sha256=manifest["sha256"], takes=3)
    KeywordStore(tmp_path / "store").put(keyword)
    wav = tmp_path / "long.wav"
    minute = (0.01 * np.random.default_rng(0).standard_normal(60 * 16000)).astype(np.float32)
    bench.write_long_wav(wav, minute, 48000, 90.0)
    assert soundfile.info(str(wav)).frames == 90 * 48000
    ballast = np.ones(256 * 2**20 // 8)  # 256 MB resident here: a child exec'd from this process inherits it
    result = bench.detect_memory(MODEL, tmp_path / "store", wav, 90.0, 48000, tmp_path)
    assert ballast.sum() > 0
    assert result.label == "peak RSS, kws detect, 1.5 min 48 kHz"
    assert 20 < result.peak_mb < 150, result
