"""``kws listen`` and the microphone side of ``kws enroll``, with a wav file standing in for the microphone.

The daemon is tested as a user runs it (a subprocess fed by ``KWS_FAKE_INPUT``,
stopped with SIGTERM) and in-process for what is hard to provoke from outside:
a microphone that fails to open, stalls or ends (reconnect with back-off), and a
store that changes under a running daemon (reload without reopening the stream).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from spoken import say

from device.audio import read_wav, write_wav
from device.fake_input import WavInputStream
from device.microphone import Endpointer, MicrophoneError
from device.store import KeywordStore

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")
RATE = 16000
ENROLL_VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
OTHER_VOICE = ("en-us+f3", 50, 160)

needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH (apt install)")


def floor(seconds: float, rms: float = 0.002, seed: int = 0, samples: int | None = None) -> np.ndarray:
    """A quiet room: Gaussian noise at ``rms``."""
    count = int(seconds * RATE) if samples is None else samples
    return (np.random.default_rng(seed).standard_normal(count) * rms).astype(np.float32)


def with_floor(audio: np.ndarray, seed: int = 1) -> np.ndarray:
    return (audio + floor(0, seed=seed, samples=len(audio))).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store with 'hey toaster' enrolled from five en-us takes (through the Python API: quicker)."""
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} absent (export a model: `make export`)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (apt install espeak-ng)")
    from device.spotter import Spotter

    folder = tmp_path_factory.mktemp("listen") / "store"
    Spotter(folder, MODEL).enroll("hey toaster", [say("hey toaster", *v) for v in ENROLL_VOICES])
    return folder


@pytest.fixture(scope="module")
def keyword_wav(tmp_path_factory) -> Path:
    """~4 s: quiet, another voice saying the keyword, quiet."""
    audio = np.concatenate([floor(1.0, seed=2), with_floor(say("hey toaster", *OTHER_VOICE)), floor(2.0, seed=3)])
    path = tmp_path_factory.mktemp("listen-audio") / "keyword.wav"
    write_wav(path, audio, RATE)
    return path


# -- the fake microphone itself ------------------------------------------------------------------------------


def test_wav_input_stream_behaves_like_a_paced_input_stream(tmp_path):
    path = tmp_path / "one_second.wav"
    write_wav(path, np.linspace(-0.5, 0.5, RATE).astype(np.float32), 8000)  # any rate: resampled on open
    blocks, finished = [], threading.Event()

    def callback(indata, frames, time_info, status):
        assert indata.shape == (frames, 2) and indata.dtype == np.float32 and not status
        blocks.append(indata.copy())

    stream = WavInputStream(
        samplerate=RATE, channels=2, dtype="float32", blocksize=800, callback=callback,
        device=None, finished_callback=finished.set, path=path, speed=10,
    )  # fmt: skip
    started = time.monotonic()
    with stream:
        assert stream.active
        assert finished.wait(5)
    elapsed = time.monotonic() - started
    assert not stream.active and stream.closed
    assert len(blocks) == 40  # 2 s of 8 kHz audio at 16 kHz in 50 ms blocks
    assert 0.15 < elapsed < 2.0  # 2 s of audio at 10x: paced, not instant


def test_wav_input_stream_loops_when_asked(tmp_path):
    path = tmp_path / "short.wav"
    write_wav(path, floor(0.2), RATE)
    count = []
    stream = WavInputStream(
        samplerate=RATE, blocksize=800, callback=lambda *a: count.append(1), path=path, speed=50, loop=True
    )
    with stream:
        time.sleep(0.3)
        assert stream.active
    assert len(count) > 4  # more blocks than the file holds


def test_endpointer_stops_after_silence_or_at_the_maximum():
    e = Endpointer(floor_db=-70.0, block_seconds=0.05, silence_seconds=0.6, max_seconds=3.0)
    for level in [-70] * 10:
        e.feed(level)
    assert not e.started
    for level in [-20] * 10 + [-70] * 11:
        e.feed(level)
    assert e.started and not e.done
    e.feed(-70)
    assert e.done  # 12 quiet blocks = 0.6 s
    e = Endpointer(floor_db=-70.0, block_seconds=0.05, max_seconds=3.0)
    for _ in range(60):
        e.feed(-20.0)
    assert e.done
    noisy_room = Endpointer(floor_db=-45.0)
    noisy_room.feed(-40.0)
    assert not noisy_room.started  # 5 dB above a noisy floor is not speech


# -- the daemon as a user runs it --------------------------------------------------------------------------------


def _read_until(process: subprocess.Popen, predicate, timeout: float) -> list[str]:
    """Lines from the process's stdout until one satisfies ``predicate`` (reader thread: no blocking forever)."""
    lines: list[str] = []
    done = threading.Event()

    def reader():
        for line in process.stdout:
            lines.append(line)
            if predicate(line):
                done.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    done.wait(timeout)
    return lines


@needs_model
@needs_espeak
def test_listen_prints_a_json_detection_runs_the_hook_and_stops_on_sigterm(store, keyword_wav, tmp_path):
    hook_file = tmp_path / "hook.txt"
    env = dict(
        os.environ,
        KWS_MODEL=str(MODEL),
        KWS_CONFIG="/nonexistent/kws-config.toml",
        KWS_FAKE_INPUT=str(keyword_wav),
        KWS_FAKE_INPUT_SPEED="4",
    )
    hook = f'echo "$KWS_KEYWORD|$KWS_SCORE|$KWS_TIME" >> {hook_file}'
    process = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "--store", str(store), "listen", "--json", "--on-detect", hook],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _read_until(process, lambda line: '"keyword"' in line, timeout=30)
        # The hook has written its line before the daemon stops (a hook still running at exit is terminated).
        deadline = time.monotonic() + 5
        while not hook_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in lines if line.strip()]
    assert events and events[0]["keyword"] == "hey toaster", (lines, stderr)
    assert {"keyword", "time_s", "score", "timestamp"} <= set(events[0])
    assert 1.0 < events[0]["time_s"] < 4.5  # the word ends ~2 s into the file
    for said in ("runtime", "keywords 'hey toaster' (threshold", "microphone opened", "KWS_FAKE_INPUT", "stopped"):
        assert said in stderr, (said, stderr)
    assert "Traceback" not in stderr
    keyword, score, when = hook_file.read_text().splitlines()[0].split("|")
    assert keyword == "hey toaster" and float(score) == pytest.approx(events[0]["score"], abs=1e-3)
    assert float(when) == pytest.approx(events[0]["time_s"], abs=1e-2)


@needs_model
@needs_espeak
def test_enroll_records_takes_from_the_microphone(tmp_path):
    parts = [floor(0.8, seed=30)]
    for i, voice in enumerate(ENROLL_VOICES):
        parts += [with_floor(say("hey toaster", *voice), seed=31 + i), floor(1.2, seed=40 + i)]
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.concatenate(parts), RATE)
    env = dict(
        os.environ,
        KWS_MODEL=str(MODEL),
        KWS_CONFIG="/nonexistent/kws-config.toml",
        KWS_FAKE_INPUT=str(mic),
        KWS_FAKE_INPUT_SPEED="10",
    )
    store = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "--store", str(store), "enroll", "hey toaster"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for take in range(1, 6):
        assert f"Take {take}/5: say 'hey toaster' now" in result.stderr
    assert "enrolled 'hey toaster': 5 takes" in result.stdout
    recorded = sorted((store / KeywordStore(store).keywords["hey toaster"].takes_dir).glob("take_*.wav"))
    assert len(recorded) == 5
    for path in recorded:
        assert 0.4 < len(read_wav(path)) / RATE < 3.0  # end-pointed: the word and a little silence

    # Too few takes in the "room": the microphone ends (unplugged) and the user is told so.
    short = tmp_path / "short.wav"
    write_wav(short, np.concatenate(parts[:3]), RATE)
    env["KWS_FAKE_INPUT"] = str(short)
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "--store", str(store), "enroll", "other word"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "kws: error:" in result.stderr and "no audio" in result.stderr
    assert "Traceback" not in result.stderr


# -- the daemon in-process: reconnects and store reloads -------------------------------------------------------------


class Opener:
    """Stands in for :func:`device.microphone.open_input_stream`: scripted failures, then fake streams."""

    def __init__(self, wav: Path, failures: int = 0, dead_first: bool = False, speed: float = 20, loop: bool = False):
        self.wav, self.failures, self.dead_first, self.speed, self.loop = wav, failures, dead_first, speed, loop
        self.calls = 0
        self.refreshes: list[bool] = []

    def __call__(self, callback, samplerate, device, block_seconds, refresh=False):
        self.calls += 1
        self.refreshes.append(refresh)
        if self.calls <= self.failures:
            raise MicrophoneError(f"scripted failure {self.calls}")
        if self.dead_first and self.calls == self.failures + 1:
            return _DeadStream(), samplerate  # opens fine, never delivers audio
        stream = WavInputStream(
            samplerate=samplerate, blocksize=round(block_seconds * samplerate), callback=callback,
            path=self.wav, speed=self.speed, loop=self.loop,
        )  # fmt: skip
        stream.start()
        return stream, samplerate


class _DeadStream:
    active = True

    def stop(self):
        pass

    def close(self):
        pass


def _run_in_thread(listener):
    thread = threading.Thread(target=listener.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    return thread


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@needs_model
@needs_espeak
def test_a_lost_microphone_is_reopened_with_back_off(store, keyword_wav, caplog):
    import io

    from device.listen import Listener, ListenOptions
    from device.spotter import Spotter

    caplog.set_level("INFO", logger="kws.listen")
    options = ListenOptions(json=True, backoff_initial=0.05, backoff_max=0.2, stall_seconds=0.3)
    opener = Opener(keyword_wav, failures=3, dead_first=True, speed=20)
    out = io.StringIO()
    listener = Listener(Spotter(store, MODEL), options, out=out, opener=opener)
    thread = _run_in_thread(listener)
    try:
        # A detection from the second playback: the daemon got through failures, a stall and an unplug.
        duration = len(read_wav(keyword_wav)) / RATE
        assert _wait_for(lambda: any(e["time_s"] > duration for e in listener.events), timeout=20), caplog.text
    finally:
        listener.stop("test")
        thread.join(10)
    assert not thread.is_alive()
    text = caplog.text
    # back-off: 0.05, 0.1, 0.2 s (doubling, capped at backoff_max), also after the stall
    for delay in ("retrying in 0.05 s", "retrying in 0.1 s", "retrying in 0.2 s", "reopening in 0.2 s"):
        assert delay in text, text
    assert "no audio for" in text  # the stream that opened but stayed silent
    assert "the stream stopped" in text  # the file ended: the "device" disappeared
    assert "microphone is back" in text and "stopped (test)" in text
    assert opener.refreshes[0] is False and all(opener.refreshes[1:])  # retries re-enumerate PortAudio devices
    times = [e["time_s"] for e in listener.events]
    assert times == sorted(times)  # stream time keeps counting across reconnects
    assert {json.loads(line)["keyword"] for line in out.getvalue().splitlines()} == {"hey toaster"}


@needs_model
@needs_espeak
def test_keywords_enrolled_meanwhile_are_picked_up_without_reopening_the_stream(store, tmp_path, caplog):
    import io

    from device.listen import Listener, ListenOptions
    from device.spotter import Spotter

    caplog.set_level("INFO", logger="kws.listen")
    live = tmp_path / "store"
    shutil.copytree(store, live)
    loop = tmp_path / "loop.wav"
    audio = np.concatenate([floor(1.0, seed=50), with_floor(say("open sesame", *OTHER_VOICE)), floor(1.5, seed=51)])
    write_wav(loop, audio, RATE)
    opener = Opener(loop, speed=8, loop=True)
    listener = Listener(
        Spotter(live, MODEL), ListenOptions(json=True, reload_seconds=0.1), out=io.StringIO(), opener=opener
    )
    thread = _run_in_thread(listener)
    try:
        time.sleep(0.5)
        assert [k.name for k in listener.detector.keywords] == ["hey toaster"]
        Spotter(live, MODEL).enroll("open sesame", [say("open sesame", *v) for v in ENROLL_VOICES])
        assert _wait_for(lambda: len(listener.detector.keywords) == 2, timeout=5), caplog.text
        assert _wait_for(lambda: any(e["keyword"] == "open sesame" for e in listener.events), timeout=15)
        Spotter(live, MODEL).remove("open sesame")
        assert _wait_for(lambda: [k.name for k in listener.detector.keywords] == ["hey toaster"], timeout=5)
    finally:
        listener.stop("test")
        thread.join(10)
    assert opener.calls == 1 and listener.reconnects == 0  # the audio stream was never reopened
    assert "keyword store changed: keywords 'hey toaster'" in caplog.text
    assert "'open sesame' (threshold" in caplog.text


def test_without_portaudio_devices_and_listen_say_so(monkeypatch, capsys, tmp_path):
    from device import cli

    monkeypatch.delenv("KWS_FAKE_INPUT", raising=False)
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` raises ImportError
    assert cli.main(["devices"]) == 1
    assert "kws: error: the sounddevice package is not installed" in capsys.readouterr().err
    if MODEL.is_file():
        assert cli.main(["--store", str(tmp_path), "--model", str(MODEL), "listen"]) == 1
        err = capsys.readouterr().err
        assert "kws: error:" in err and "sounddevice" in err and "Traceback" not in err


@needs_model
@needs_espeak
def test_on_detect_hooks_are_bounded_and_none_outlives_the_daemon(store, keyword_wav, tmp_path):
    """Hooks that hang (one ignoring SIGTERM): at most 4 run, the rest are skipped, all are gone after SIGTERM."""
    pids = tmp_path / "pids.txt"
    env = dict(
        os.environ,
        KWS_MODEL=str(MODEL),
        KWS_CONFIG="/nonexistent/kws-config.toml",
        KWS_FAKE_INPUT=str(keyword_wav),
        KWS_FAKE_INPUT_SPEED="8",
        KWS_FAKE_INPUT_LOOP="1",
    )
    # The shell ignores SIGTERM (and so does its sleep, which inherits that): only SIGKILL ends them.
    hook = f"trap '' TERM; echo $$ >> {pids}; sleep 60; echo done"
    command = [sys.executable, "-m", "device.cli", "--store", str(store), "listen", "--json", "--on-detect", hook]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []  # events so far (the predicate runs in _read_until's reader thread)
        lines = _read_until(
            process, lambda line: '"keyword"' in line and seen.append(line) is None and len(seen) >= 6, 40
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert len([line for line in lines if '"keyword"' in line]) >= 6, (lines, stderr)
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 4, (started, stderr)
    assert "commands still running; skipping the one for 'hey toaster'" in stderr
    assert "stopping 4 --on-detect commands still running" in stderr
    for pid in started:
        status = Path(f"/proc/{pid}/status")
        alive = status.exists() and "State:\tZ" not in status.read_text()
        assert not alive, f"hook shell {pid} outlived the daemon"
    assert "Traceback" not in stderr
