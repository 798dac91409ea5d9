"""Speed, memory, size and latency of the on-device pipeline: ``make bench``.

    python -m trainer.bench --model firmware_models/encoder.tflite [--write-benchmarks] [--quick]

What it measures, and why each the way it does:

* model size, MACs per window and parameters, from the manifest (what export measured);
* encoder latency (median, p95) at 1 and 2 LiteRT threads: the cost of one hop;
* whole-pipeline CPU share at real time: minutes of audio through ``StreamingDetector``
  (hop 0.1 s, 0.1 s chunks) as fast as possible, process CPU time / audio seconds =
  the fraction of one core the detector needs live. A speech-heavy stream keeps the
  encoder busy every hop; a quiet stream shows what the energy gate saves. With 1 and
  10 keywords, split into frontend, encoder and the rest;
* peak resident memory (VmHWM) of a real ``kws listen`` fed by ``KWS_FAKE_INPUT``;
* peak resident memory of a real ``kws detect`` over long files (10 min at 48 kHz, 2 h at
  16 kHz, written to a temporary folder): the file is streamed, so it must not grow with length;
* end-of-word-to-event latency in *stream* time (independent of machine load): keyword
  takes in unseen voices spliced into noise where each word's end is known;
* enrollment time for 5 takes;
* the Wyoming server (``python -m device.wyoming_server``) with 4 clients streaming at real
  time: the delay it adds per chunk (chunk -> detection, audio-stop -> final event) and its
  peak resident memory; skipped, with the reason, when the ``wyoming`` package is missing.

The audio is made with espeak-ng, so the bench runs anywhere; the shared background
noise (``$KWS_SHARED`` or ``../shared``) is used when present, synthetic noise otherwise.

Timings on a shared or busy machine are noisy, so every timing is also divided by a
reference op (a 64x64x64 float32 numpy matmul, one thread) measured in the same run,
at its start and its end: ratios stay comparable between runs when absolute times do not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from device.audio import read_wav, resample, write_wav
from device.detector import Detection, DetectorSettings, StreamingDetector
from device.encoder import Encoder
from device.enroll import EnrollmentError
from device.frontend import LogMelStream, log_mel
from device.manifest import ModelError
from device.spotter import Spotter
from device.store import Keyword
from device.vad import speech_bounds
from trainer import benchmarks_file

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BENCHMARKS = ROOT / "BENCHMARKS.md"
RATE = 16000
HOP_SECONDS = 0.1
CHUNK_SECONDS = 0.1

# Targets from the issue; reported as met / not met, never asserted.
CPU_SHARE_TARGET = 0.03  # of one core, at a 100 ms hop
MEMORY_TARGET_MB = 80.0  # peak resident memory of `kws listen`
DETECT_MEMORY_TARGET_MB = 150.0  # peak resident memory of `kws detect`, whatever the file's length
LATENCY_TARGET_S = 0.300  # median end of word -> event

KEYWORD = "hey toaster"
# Nine more keywords for the 10-keyword runs (a spare or two in case one fails enrollment).
OTHER_KEYWORDS = [
    "lights on",
    "open sesame",
    "hello computer",
    "stop the music",
    "good morning",
    "okay robot",
    "play the radio",
    "next song",
    "wake up buddy",
    "call my sister",
    "kitchen timer",
]
# (espeak-ng voice, pitch, words per minute): the enrolling "user" and, for the latency
# streams, other speakers the keyword was never enrolled from.
ENROLL_VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
OTHER_VOICES = [
    ("en-gb", 50, 160),
    ("en-gb-scotland", 45, 150),
    ("en-029", 55, 170),
    ("en-gb-x-rp", 50, 145),
    ("en-us-nyc", 40, 160),
    ("en-us+f2", 60, 155),
    ("en-gb+f3", 65, 170),
    ("en-us+m3", 35, 150),
    ("en-gb-x-gbclan", 50, 175),
    ("en-us+f4", 70, 140),
]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog, and then it runs back into the forest before anyone notices.",
    "We went to the market on a sunny morning and bought apples, fresh bread and a large piece of cheese.",
    "After lunch the children played in the garden until it started to rain, and then they came inside.",
    "Could you please remind me to water the plants tomorrow, because I keep forgetting about them?",
    "The train to the city leaves at half past eight, so we should leave the house a little earlier.",
    "My neighbour is learning to play the piano, and every evening we hear the same three songs.",
    "It is going to be cold this weekend, with snow in the mountains and strong wind along the coast.",
    "She read the letter twice, folded it carefully and put it back in the envelope without a word.",
    "If the meeting runs late, start dinner without me and keep a plate warm in the oven.",
    "The museum opens at ten, but the queue for the new exhibition usually starts an hour before.",
    "Turn left at the church, go past the bakery, and the library is the red building on your right.",
    "He fixed the bicycle in the garage, washed his hands and sat down with a cup of tea.",
]
# The shared noise files that sound like a lived-in room (not the synthetic white/pink ones).
ROOM_NOISES = ["doing_the_dishes.wav", "running_tap.wav", "exercise_bike.wav", "dude_miaowing.wav"]


@dataclass(frozen=True)
class Profile:
    """How much of everything to measure: the default run aims at ~5 min on 2 busy cores, quick at well under 1."""

    latency_runs: int = 500
    stream_seconds: float = 120.0
    listen_seconds: float = 20.0
    listen_speed: float = 1.0  # KWS_FAKE_INPUT_SPEED
    word_count: int = 40
    enroll_runs: int = 5
    server_seconds: float = 15.0  # the wav each Wyoming client streams, at real time
    detect_files: tuple[tuple[float, int], ...] = ((600.0, 48000), (7200.0, 16000))  # (seconds, rate) for kws detect


FULL = Profile()
QUICK = Profile(
    latency_runs=100,
    stream_seconds=15.0,
    listen_seconds=8.0,
    listen_speed=4.0,
    word_count=10,
    enroll_runs=2,
    server_seconds=7.0,
    detect_files=((60.0, 48000), (600.0, 16000)),
)


# -- small arithmetic helpers (unit-tested on hand cases) ---------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Median and 95th percentile of a sample (linear interpolation, as numpy does)."""

    median: float
    p95: float
    n: int


def summarize(values: Iterable[float]) -> Stats:
    """Median and p95; NaNs when there are no values, so a table can still be printed."""
    array = np.asarray(list(values), dtype=np.float64)
    if len(array) == 0:
        return Stats(float("nan"), float("nan"), 0)
    return Stats(float(np.percentile(array, 50)), float(np.percentile(array, 95)), len(array))


def cpu_share(cpu_seconds: float, audio_seconds: float) -> float:
    """Fraction of one core needed to keep up with live audio: CPU seconds spent per second of audio."""
    if audio_seconds <= 0:
        raise ValueError(f"audio_seconds must be positive, got {audio_seconds}")
    return cpu_seconds / audio_seconds


def verdict(value: float, target: float) -> str:
    """'met' / 'not met' for an upper-bound target (NaN: nothing to judge)."""
    if not np.isfinite(value):
        return "n/a"
    return "met" if value <= target else "NOT met"


@dataclass
class WordMatch:
    """Detections matched against known word ends (all times in stream seconds)."""

    latencies: list[float]  # event returned - true word end, one per detected word
    stamp_errors: list[float]  # Detection.time_s - true word end, same words
    misses: int
    false_alarms: int
    duplicates: int


def match_detections(
    words: Sequence[tuple[float, float]], events: Sequence[tuple[float, float]], max_delay: float = 1.5
) -> WordMatch:
    """Pair each event with the word it belongs to.

    ``words``: ``(start, end)`` of every spoken keyword, in order; ``events``:
    ``(returned_at, detection.time_s)``. An event belongs to the latest word that
    started before it was returned, if it came at most ``max_delay`` after that
    word's end; the first such event is the word's hit, later ones are duplicates,
    and an event belonging to no word is a false alarm.
    """
    starts = np.array([w[0] for w in words], dtype=np.float64)
    hit: dict[int, tuple[float, float]] = {}
    false_alarms = duplicates = 0
    for returned, stamp in sorted(events):
        index = int(np.searchsorted(starts, returned, side="right")) - 1
        if index < 0 or returned - words[index][1] > max_delay:
            false_alarms += 1
        elif index in hit:
            duplicates += 1
        else:
            hit[index] = (returned, stamp)
    ordered = sorted(hit)
    return WordMatch(
        latencies=[hit[i][0] - words[i][1] for i in ordered],
        stamp_errors=[hit[i][1] - words[i][1] for i in ordered],
        misses=len(words) - len(hit),
        false_alarms=false_alarms,
        duplicates=duplicates,
    )


def vm_status_mb(pid: int | str, fields: Sequence[str] = ("VmHWM", "VmRSS")) -> dict[str, float]:
    """Memory lines of ``/proc/<pid>/status`` in MB (1 MB = 2**20 bytes); Linux only."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            found[name] = int(rest.split()[0]) / 1024.0  # the kernel reports kB
    return found


# -- reference op and encoder latency ------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The yardstick: median wall and CPU seconds of one 64x64x64 float32 matmul."""

    wall: float
    cpu: float
    wall_start: float = 0.0
    wall_end: float = 0.0


def time_reference_op(samples: int = 40, repeats: int = 50) -> tuple[list[float], list[float]]:
    """Per-op wall and CPU times of a 64^3 float32 matmul, ``samples`` batches of ``repeats``.

    64^3 is below OpenBLAS's threading threshold, so it runs on one thread: its CPU time
    and wall time only differ by how much the machine's other load preempts us.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
    out = np.empty((64, 64), np.float32)
    for _ in range(repeats):
        np.matmul(a, b, out=out)
    walls, cpus = [], []
    for _ in range(samples):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            np.matmul(a, b, out=out)
        walls.append((time.perf_counter() - wall) / repeats)
        cpus.append((time.process_time() - cpu) / repeats)
    return walls, cpus


def combine_reference(start: tuple[list[float], list[float]], end: tuple[list[float], list[float]]) -> Reference:
    """One yardstick from the measurements at the start and the end of the run (medians of both together)."""
    return Reference(
        wall=float(np.median(start[0] + end[0])),
        cpu=float(np.median(start[1] + end[1])),
        wall_start=float(np.median(start[0])),
        wall_end=float(np.median(end[0])),
    )


def encoder_latency(model: Path, threads: int, frames: np.ndarray, runs: int) -> Stats:
    """Wall seconds of ``embed_frames`` (quantise, invoke, dequantise, normalise) after a warm-up."""
    encoder = Encoder(model, num_threads=threads)
    for _ in range(10):  # first invocations pay for lazy allocations
        encoder.embed_frames(frames)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        encoder.embed_frames(frames)
        times.append(time.perf_counter() - start)
    return summarize(times)


# -- audio ---------------------------------------------------------------------------------------------


def shared_dir() -> Path | None:
    """The shared data folder (``$KWS_SHARED`` or the repository's ``../shared``), when present."""
    candidate = Path(os.environ.get("KWS_SHARED") or ROOT.parent / "shared")
    return candidate if candidate.is_dir() else None


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)) + 1e-20))


def at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """Scaled so that its RMS is ``dbfs`` (re full scale)."""
    return (samples * (10 ** (dbfs / 20) / rms(samples))).astype(np.float32)


def pink_noise(count: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: a stand-in for room tone when the shared noise recordings are absent."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    scale = np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    return np.fft.irfft(spectrum / scale, count).astype(np.float32)


class NoiseBank:
    """Background noise for the streams: shared recordings when present, synthetic otherwise."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        folder = shared_dir()
        self.folder = folder / "data" / "background_noise" if folder else None
        if self.folder is not None and not self.folder.is_dir():
            self.folder = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def source(self) -> str:
        return f"shared {self.folder}" if self.folder else "synthetic pink noise"

    def _file(self, name: str) -> np.ndarray | None:
        if self.folder is None or not (self.folder / name).is_file():
            return None
        if name not in self._cache:
            self._cache[name] = read_wav(self.folder / name, RATE)
        return self._cache[name]

    def room(self, seconds: float, dbfs: float) -> np.ndarray:
        """A lived-in room (dishes, tap, bike, cat) at ``dbfs`` RMS: pieces of each recording in turn."""
        count = int(seconds * RATE)
        pieces = [a for a in (self._file(n) for n in ROOM_NOISES) if a is not None and len(a) > RATE]
        if not pieces:
            return at_level(pink_noise(count, self.rng), dbfs)
        out, filled, i = np.zeros(count, np.float32), 0, 0
        while filled < count:
            source = pieces[i % len(pieces)]
            length = min(count - filled, len(source), int(self.rng.uniform(5, 15) * RATE))
            start = int(self.rng.integers(0, len(source) - length + 1))
            out[filled : filled + length] = at_level(source[start : start + length], 0.0)
            filled, i = filled + length, i + 1
        return at_level(out, dbfs)

    def quiet(self, seconds: float, dbfs: float) -> np.ndarray:
        """Room tone only (the shared pink noise, looped), so quiet that the energy gate should idle."""
        count = int(seconds * RATE)
        source = self._file("pink_noise.wav")
        if source is None or len(source) < RATE:
            return at_level(pink_noise(count, self.rng), dbfs)
        return at_level(np.resize(source, count), dbfs)


class Speaker:
    """espeak-ng, one wav per (text, voice): the takes and the speech of every stream."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("espeak-ng") is None:
            raise RuntimeError("espeak-ng is not on PATH (`sudo apt install espeak-ng`); the bench speaks with it")
        self.folder = folder
        self._count = 0

    def say(self, text: str, voice: tuple[str, int, int], peak: float = 0.5) -> np.ndarray:
        """``text`` spoken by ``voice`` = (name, pitch, words per minute), peak-normalised to ``peak``."""
        name, pitch, speed = voice
        self._count += 1
        path = self.folder / f"say_{self._count}.wav"
        subprocess.run(
            ["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        audio = read_wav(path, RATE)
        path.unlink()
        return (audio * (peak / max(1e-6, float(np.abs(audio).max())))).astype(np.float32)


def trimmed(samples: np.ndarray) -> np.ndarray:
    """The word alone: from its first to its last 10 ms frame within 30 dB of its peak (the vad's rule)."""
    bounds = speech_bounds(samples, RATE)
    return samples if bounds is None else samples[bounds[0] : bounds[1]]


def speech_stream(speaker: Speaker, noise: NoiseBank, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Continuous talk (many voices, short pauses) over room noise at about 20 dB SNR: the encoder runs every hop."""
    count = int(seconds * RATE)
    talk, filled, i = np.zeros(count, np.float32), int(0.3 * RATE), 0
    while filled < count:
        sentence = trimmed(speaker.say(SENTENCES[i % len(SENTENCES)], OTHER_VOICES[i % len(OTHER_VOICES)], 0.5))
        length = min(len(sentence), count - filled)
        talk[filled : filled + length] = sentence[:length]
        filled += length + int(rng.uniform(0.2, 0.8) * RATE)
        i += 1
    return (talk + noise.room(seconds, -40.0)).astype(np.float32)


def word_stream(
    takes: Sequence[np.ndarray], background: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Trimmed keyword takes spliced into ``background`` with 2.5-3.5 s gaps; return audio and (start, end) of each.

    The gap exceeds the detector's refractory period and the encoder's window, so every
    word is judged on its own.
    """
    words, position = [], int(1.5 * RATE)
    pieces = []
    for take in takes:
        word = trimmed(take)
        pieces.append((position, word))
        words.append((position / RATE, (position + len(word)) / RATE))
        position += len(word) + int(rng.uniform(2.5, 3.5) * RATE)
    audio = np.resize(background, position + 2 * RATE).astype(np.float32)
    for start, word in pieces:
        audio[start : start + len(word)] += word
    return audio, words


def unseen_voices(count: int) -> list[tuple[str, int, int]]:
    """``count`` speakers the keyword was not enrolled from: the other voices, a little higher and faster each round."""
    voices = []
    for i in range(count):
        name, pitch, speed = OTHER_VOICES[i % len(OTHER_VOICES)]
        round_ = i // len(OTHER_VOICES)
        voices.append((name, pitch + 5 * round_, speed + 10 * round_))
    return voices


def chunks(audio: np.ndarray, seconds: float = CHUNK_SECONDS) -> list[np.ndarray]:
    size = max(1, int(seconds * RATE))
    return [audio[i : i + size] for i in range(0, len(audio), size)]


# -- keywords and enrollment ---------------------------------------------------------------------------


def enroll_keywords(spotter: Spotter, speaker: Speaker, names: Sequence[str], wanted: int) -> list[str]:
    """Enroll up to ``wanted`` of ``names`` from five espeak takes each; a word the model rejects is skipped."""
    enrolled = []
    for name in names:
        if len(enrolled) == wanted:
            break
        try:
            spotter.enroll(name, [speaker.say(name, v) for v in ENROLL_VOICES])
        except EnrollmentError as error:
            print(f"  (skipping keyword {name!r}: {error})", file=sys.stderr)
            continue
        enrolled.append(name)
    return enrolled


def enrollment_seconds(spotter: Spotter, takes: list[np.ndarray], runs: int) -> Stats:
    """Wall time of ``Spotter.enroll`` for one keyword (check, embed, calibrate, write the store and takes).

    One warm-up enrollment first, so the negative bank is already loaded, as in a
    long-running program; ``kws enroll`` also pays for loading the model.
    """
    spotter.enroll("bench enroll", takes, replace=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        spotter.enroll("bench enroll", takes, replace=True)
        times.append(time.perf_counter() - start)
    spotter.remove("bench enroll")
    return summarize(times)


# -- pipeline CPU share --------------------------------------------------------------------------------


class _CpuTimed:
    """Wraps a callable and adds up the process CPU time spent inside it."""

    def __init__(self, function: Callable) -> None:
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.process_time()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - start


@dataclass(frozen=True)
class Share:
    """CPU fractions of one core at real time, for one stream and keyword set."""

    total: float
    frontend: float  # the frontend alone over the same chunks
    encoder: float  # inside Encoder.embed_frames during the pipeline run
    encoder_runs: int
    hops: int

    @property
    def rest(self) -> float:
        """Detector bookkeeping: window copies, the energy gate, scoring, smoothing."""
        return max(0.0, self.total - self.frontend - self.encoder)


def frontend_share(encoder: Encoder, pieces: list[np.ndarray]) -> float:
    """CPU share of the log-mel frontend alone, fed the same chunks: the floor no detector can go below."""
    warm_up = LogMelStream(encoder.manifest.frontend)
    for piece in pieces[:30]:
        warm_up.feed(piece)
    stream = LogMelStream(encoder.manifest.frontend)
    start = time.process_time()
    for piece in pieces:
        stream.feed(piece)
    return cpu_share(time.process_time() - start, sum(len(p) for p in pieces) / RATE)


def pipeline_share(encoder: Encoder, keywords: list[Keyword], pieces: list[np.ndarray], frontend: float) -> Share:
    """Run the whole detector over ``pieces`` as fast as possible and divide its CPU time by the audio's duration."""
    settings = DetectorSettings(hop_seconds=HOP_SECONDS)
    warm_up = StreamingDetector(encoder, keywords, settings)
    for piece in pieces[:30]:  # caches, lazy allocations: not what a long-running daemon pays
        warm_up.process(piece)
    detector = StreamingDetector(encoder, keywords, settings)
    timed = _CpuTimed(encoder.embed_frames)
    encoder.embed_frames = timed  # instance attribute shadows the method for this run only
    try:
        start = time.process_time()
        for piece in pieces:
            detector.process(piece)
        spent = time.process_time() - start
    finally:
        del encoder.embed_frames
    seconds = sum(len(p) for p in pieces) / RATE
    hops = int(detector.time_s / HOP_SECONDS)
    return Share(cpu_share(spent, seconds), frontend, cpu_share(timed.seconds, seconds), detector.encoder_runs, hops)


# -- end of word to event ------------------------------------------------------------------------------


def run_stream(detector: StreamingDetector, audio: np.ndarray) -> list[tuple[float, Detection]]:
    """Feed 0.1 s chunks; each detection with the stream time at which ``process`` returned it."""
    events, fed = [], 0
    for piece in chunks(audio):
        found = detector.process(piece)
        fed += len(piece)
        events += [(fed / RATE, d) for d in found]
    return events


# -- kws listen peak memory ----------------------------------------------------------------------------

MINIMAL_LISTENER = """
import signal, sys, time
import numpy as np
from device.audio import read_wav
from device.spotter import Spotter
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
spotter = Spotter(sys.argv[1], sys.argv[2])
audio = read_wav(sys.argv[3], spotter.sample_rate)
speed = float(sys.argv[4])
print("microphone opened", file=sys.stderr, flush=True)
block = spotter.sample_rate // 20
began = time.monotonic()
for count, start in enumerate(range(0, len(audio), block)):
    if stop:
        break
    spotter.process(audio[start : start + block])
    time.sleep(max(0.0, began + (count + 1) * 0.05 / speed - time.monotonic()))
while not stop:
    time.sleep(0.05)
"""


@dataclass
class Memory:
    peak_mb: float
    rss_mb: float
    floor_mb: float  # python + numpy + the TFLite runtime, nothing loaded
    events: int
    label: str
    exit_code: int | None


def import_floor_mb() -> float:
    """Peak memory of a Python that only imports numpy and the TFLite runtime: what no daemon can go below."""
    code = (
        "import numpy\nfrom device.interpreter import interpreter_class\ninterpreter_class()\n"
        "print(open('/proc/self/status').read())"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024.0


def _collect(stream, lines: list[str], opened: threading.Event) -> None:
    for line in stream:
        lines.append(line)
        if "microphone opened" in line:
            opened.set()


def listen_memory(model: Path, store: Path, wav: Path, seconds: float, speed: float, scratch: Path) -> Memory:
    """Peak RSS (VmHWM) of ``kws listen`` fed ``wav`` through ``KWS_FAKE_INPUT``, read just before SIGTERM.

    When ``device/listen.py`` does not exist, a minimal stand-in (import, load the
    spotter, detect in real-time chunks) is measured instead, and labelled so.
    """
    daemon = (ROOT / "device" / "listen.py").is_file()
    env = dict(
        os.environ,
        KWS_FAKE_INPUT=str(wav),
        KWS_FAKE_INPUT_SPEED=str(speed),
        KWS_CONFIG=str(scratch / "no-config.toml"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("KWS_FAKE_INPUT_LOOP", None)
    if daemon:
        command = [sys.executable, "-m", "device.cli", "--store", str(store), "--model", str(model), "listen", "--json"]
        label = "kws listen"
    else:
        command = [sys.executable, "-c", MINIMAL_LISTENER, str(store), str(model), str(wav), str(speed)]
        label = "minimal equivalent (device/listen.py absent)"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_lines: list[str] = []
    err_lines: list[str] = []
    opened = threading.Event()
    readers = [
        threading.Thread(target=_collect, args=(process.stdout, out_lines, threading.Event()), daemon=True),
        threading.Thread(target=_collect, args=(process.stderr, err_lines, opened), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 60.0
        while not opened.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label} did not start:\n" + "".join(err_lines[-15:]))
        time.sleep(seconds / speed + 0.3)  # the whole file, once
        status = vm_status_mb(process.pid)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for reader in readers:
        reader.join(timeout=2)
    events = sum(1 for line in out_lines if line.lstrip().startswith("{"))
    return Memory(status["VmHWM"], status["VmRSS"], import_floor_mb(), events, label, code)


# -- kws detect peak memory over long files -----------------------------------------------------------


@dataclass
class DetectMemory:
    """Peak RSS of one ``kws detect`` run over a long file."""

    seconds: float  # of audio
    rate: int
    file_mb: float
    peak_mb: float
    events: int
    wall_s: float

    @property
    def label(self) -> str:
        length = f"{self.seconds / 3600:g} h" if self.seconds >= 3600 else f"{self.seconds / 60:g} min"
        return f"peak RSS, kws detect, {length} {self.rate / 1000:g} kHz"


def write_long_wav(path: Path, piece: np.ndarray, rate: int, seconds: float) -> None:
    """``seconds`` of 16-bit audio at ``rate``: ``piece`` (16 kHz) resampled once and repeated, written block by
    block so the bench itself never holds hours of audio."""
    import soundfile

    block = resample(piece, RATE, rate)
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        left = int(seconds * rate)
        while left > 0:
            handle.write(block[:left])
            left -= min(left, len(block))


# Runs the command given as its arguments and reports that child's peak RSS (kB) as its last stderr line.
# Why a small Python in between: an exec'd child inherits its parent's high-water mark (Linux keeps it
# across exec, and subprocess forks with vfork), so ru_maxrss of a direct child of the bench (hundreds
# of MB of audio and models) would report the bench's memory, not the command's.
PEAK_RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def detect_memory(model: Path, store: Path, wav: Path, seconds: float, rate: int, scratch: Path) -> DetectMemory:
    """Run the real ``kws detect --json`` on ``wav`` and measure its peak RSS (ru_maxrss, via PEAK_RSS_WRAPPER)."""
    command = [sys.executable, "-m", "device.cli", "--store", str(store), "--model", str(model), "detect", str(wav)]
    env = dict(os.environ, KWS_CONFIG=str(scratch / "no-config.toml"))
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_WRAPPER, *command, "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"kws detect {wav.name} exited {done.returncode}:\n{done.stderr[-2000:]}")
    peak = int(done.stderr.split()[-1]) / 1024.0  # Linux reports kB
    events = sum(1 for line in done.stdout.splitlines() if line.lstrip().startswith("{"))
    return DetectMemory(seconds, rate, wav.stat().st_size / 2**20, peak, events, wall)


def detect_memory_section(s: Setup, profile: Profile) -> list[DetectMemory]:
    """``kws detect`` over each long file of the profile: two keyword takes in room noise (~10 s), repeated."""
    piece, _ = word_stream(s.takes[:2], s.noise.room(20.0, -40.0), s.rng)
    results = []
    for seconds, rate in profile.detect_files:
        wav = s.scratch / f"detect-{seconds:.0f}s-{rate}.wav"
        write_long_wav(wav, piece, rate, seconds)
        results.append(detect_memory(s.model, s.scratch / "store1", wav, seconds, rate, s.scratch))
        wav.unlink()
    return results


# -- Wyoming server: added latency and memory with concurrent clients ---------------------------------

SERVER_CLIENTS = 4
SERVER_CHUNK_SECONDS = 0.030


@dataclass
class ServerBench:
    """The Wyoming server under ``SERVER_CLIENTS`` real-time clients (or why it was not measured)."""

    detection: Stats = field(default_factory=lambda: summarize([]))  # chunk sent -> detection received
    stop: Stats = field(default_factory=lambda: summarize([]))  # audio-stop sent -> final event / close
    peak_mb: float = float("nan")
    idle_mb: float = float("nan")  # VmHWM once started and answering, before any audio
    detections: int = 0
    stream_seconds: float = 0.0
    skipped: str = ""


def detection_delays(sent: dict[int, float], received: Sequence[tuple[float, int | None]]) -> list[float]:
    """Seconds from sending the chunk that completed each detection to receiving the detection.

    ``sent``: chunk timestamp (ms) -> when its write finished; ``received``: (when,
    detection timestamp) per detection event. The server stamps a detection with the
    timestamp of the chunk that completed it; a stamp we never sent is ignored.
    """
    return [at - sent[stamp] for at, stamp in received if stamp is not None and stamp in sent]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _server_client(port: int, pcm: bytes, chunk_bytes: int) -> tuple[list[float], float, int]:
    """One client at real-time pace: (detection delays, audio-stop -> final event, detections)."""
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.wake import Detect, Detection, NotDetected

    sent: dict[int, float] = {}
    received: list[tuple[float, int | None]] = []
    final: list[float] = []

    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def read() -> None:
            while True:
                event = await client.read_event()
                now = time.perf_counter()
                if event is None:  # closed after audio-stop
                    final.append(now)
                    return
                if Detection.is_type(event.type):
                    received.append((now, Detection.from_event(event).timestamp))
                elif NotDetected.is_type(event.type):
                    final.append(now)

        reader = asyncio.create_task(read())
        await client.write_event(Detect(names=[KEYWORD]).event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1, timestamp=0).event())
        began = time.perf_counter()
        for count, start in enumerate(range(0, len(pcm), chunk_bytes)):
            stamp = start // 2 * 1000 // RATE
            await client.write_event(AudioChunk(RATE, 2, 1, pcm[start : start + chunk_bytes], timestamp=stamp).event())
            sent[stamp] = time.perf_counter()
            await asyncio.sleep(max(0.0, began + (count + 1) * SERVER_CHUNK_SECONDS - time.perf_counter()))
        stopped = time.perf_counter()
        await client.write_event(AudioStop(timestamp=len(pcm) // 2 * 1000 // RATE).event())
        await asyncio.wait_for(reader, 30)
    return detection_delays(sent, received), final[0] - stopped, len(received)


async def _server_clients(port: int, pcm: bytes, clients: int) -> list[tuple[list[float], float, int]]:
    chunk_bytes = 2 * int(SERVER_CHUNK_SECONDS * RATE)
    return list(await asyncio.gather(*(_server_client(port, pcm, chunk_bytes) for _ in range(clients))))


def server_bench(
    model: Path, store: Path, audio: np.ndarray, scratch: Path, clients: int = SERVER_CLIENTS
) -> ServerBench:
    """Start ``python -m device.wyoming_server`` on a free loopback port and stream ``audio`` from ``clients`` clients.

    The clients send 30 ms chunks at real-time pace, all at once, so the delays are what
    the server adds (detector work in its worker threads, the event loop, the socket);
    the peak memory is the server's VmHWM read after they all finished, before SIGTERM.
    """
    if importlib.util.find_spec("wyoming") is None:
        return ServerBench(skipped="the `wyoming` package is not installed (`pip install wyoming`)")
    port = _free_port()
    log_path = scratch / "wyoming_server.log"
    command = [sys.executable, "-m", "device.wyoming_server", "--uri", f"tcp://127.0.0.1:{port}"]
    command += ["--store", str(store), "--model", str(model)]
    env = dict(os.environ, KWS_CONFIG=str(scratch / "no-config.toml"))
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60.0
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Wyoming server did not start:\n" + log_path.read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        idle = vm_status_mb(process.pid)["VmHWM"]
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes()
        results = asyncio.run(_server_clients(port, pcm, clients))
        peak = vm_status_mb(process.pid)["VmHWM"]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return ServerBench(
        detection=summarize(d for delays, _, _ in results for d in delays),
        stop=summarize(stop for _, stop, _ in results),
        peak_mb=peak,
        idle_mb=idle,
        detections=sum(n for _, _, n in results),
        stream_seconds=len(audio) / RATE,
    )


# -- Wyoming server limits: the largest chunk it takes, one it refuses, a flood of idle connections ------

IDLE_CONNECTIONS = 1500
OVERSIZED_CHUNK_BYTES = 64 << 20


@dataclass
class ServerLimits:
    """``kws serve`` under one client's largest accepted and an oversized chunk, then under idle connections."""

    idle_mb: float = float("nan")  # VmHWM once started, before any client
    chunk_peak_mb: float = float("nan")  # VmHWM after the chunks
    chunk_events: str = ""  # what the chunk client got back, e.g. "error(too-large), not-detected"
    flood_rss_mb: float = float("nan")  # VmRSS with the idle connections open
    flood_peak_mb: float = float("nan")
    flood_fds: int = 0  # the server's open file descriptors then
    served_s: float = float("nan")  # a real client's describe -> info, during the flood
    skipped: str = ""


async def _largest_and_oversized_chunks(port: int) -> list[str]:
    """An oversized chunk (sent in full), then the largest accepted one of the costliest format; the events back."""
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.event import async_read_event, async_write_event

    from device.wyoming_server import MAX_PAYLOAD_BYTES

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await async_write_event(AudioStart(rate=RATE, width=2, channels=1).event(), writer)
    header = {"type": "audio-chunk", "data": {"rate": RATE, "width": 2, "channels": 1}}
    writer.write((json.dumps(header | {"payload_length": OVERSIZED_CHUNK_BYTES}) + "\n").encode())
    piece = bytes(1 << 20)
    for _ in range(OVERSIZED_CHUNK_BYTES >> 20):
        writer.write(piece)
        await writer.drain()
    # 8-bit audio at 4 kHz: the most model-rate audio (65 s) per accepted byte. Noise, so the encoder runs.
    noise = np.random.default_rng(0).integers(96, 160, MAX_PAYLOAD_BYTES, dtype=np.uint8).tobytes()
    await async_write_event(AudioChunk(rate=4000, width=1, channels=1, audio=noise).event(), writer)
    await async_write_event(AudioStop().event(), writer)
    events = []
    while (event := await asyncio.wait_for(async_read_event(reader), 60)) is not None:
        events.append(event.type + (f"({event.data['code']})" if event.data.get("code") else ""))
    writer.close()
    return events


async def _flood_and_serve(port: int, pid: int, count: int) -> tuple[dict[str, float], int, float]:
    """Open ``count`` idle connections, then time a real client's describe; the server's memory and fds meanwhile."""
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    writers = []
    for start in range(0, count, 100):  # in batches: bounded time, and the listen backlog is not overrun
        opened = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(min(100, count - start))),
            return_exceptions=True,
        )
        writers += [w for item in opened if not isinstance(item, BaseException) for w in item[1:]]
    await asyncio.sleep(1.5)  # the held ones are now idle long enough to make room for a real client
    began = time.perf_counter()
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), 10)
    served = time.perf_counter() - began
    if event is None or not Info.is_type(event.type):
        raise RuntimeError(f"a real client was not served during the flood: {event}")
    status = vm_status_mb(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for writer in writers:
        writer.close()
    return status, fds, served


def server_limits_bench(model: Path, store: Path, scratch: Path, connections: int = IDLE_CONNECTIONS) -> ServerLimits:
    """A real ``kws serve`` on a free loopback port: peak memory after one client sends an oversized chunk and
    the largest accepted one, then RSS and descriptors with ``connections`` idle connections open, and how
    long a real client waits for ``info`` meanwhile (the server closes the idlest to make room)."""
    import resource

    if importlib.util.find_spec("wyoming") is None:
        return ServerLimits(skipped="the `wyoming` package is not installed (`pip install wyoming`)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            return ServerLimits(skipped=f"`ulimit -n` is {soft} (hard {hard}); {wanted} descriptors needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    port = _free_port()
    log_path = scratch / "kws_serve_limits.log"
    command = [sys.executable, "-m", "device.cli", "--store", str(store), "--model", str(model)]
    command += ["serve", "--uri", f"tcp://127.0.0.1:{port}"]
    env = dict(os.environ, KWS_CONFIG=str(scratch / "no-config.toml"))
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60.0
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kws serve did not start:\n" + log_path.read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        idle = vm_status_mb(process.pid)["VmHWM"]
        events = asyncio.run(_largest_and_oversized_chunks(port))
        chunk_peak = vm_status_mb(process.pid)["VmHWM"]
        status, fds, served = asyncio.run(_flood_and_serve(port, process.pid, connections))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return ServerLimits(idle, chunk_peak, ", ".join(events), status["VmRSS"], status["VmHWM"], fds, served)


# -- machine description and the BENCHMARKS.md section -------------------------------------------------


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo ('model name' on x86, 'Model' or 'Hardware' on a Pi)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def machine_line() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def runtime_line(runtime: str) -> str:
    """The TFLite runtime the encoder loaded, with its package version."""
    distributions = {"tensorflow.lite": ("tensorflow-cpu", "tensorflow")}.get(runtime, (runtime,))
    for name in distributions:
        try:
            return f"{runtime} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return runtime


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


@dataclass
class Row:
    measure: str
    value: str
    ratio: str = ""  # the timing divided by the reference op measured in the same run
    target: str = ""


@dataclass
class Report:
    rows: list[Row]
    header: list[tuple[str, str]]  # (label, text) lines above the table
    notes: list[str] = field(default_factory=list)


def render_console(report: Report) -> str:
    """Aligned plain-text table for the terminal."""
    lines = [f"{label}: {text}" for label, text in report.header]
    titles = Row("measure", "value", "÷ ref", "target")
    table = [titles, *report.rows]
    widths = [max(len(getattr(r, f)) for r in table) for f in ("measure", "value", "ratio", "target")]
    lines.append("")
    for i, row in enumerate(table):
        cells = [row.measure, row.value, row.ratio, row.target]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", *report.notes]
    return "\n".join(lines)


def render_markdown(report: Report, when: datetime.datetime) -> str:
    """One dated ``BENCHMARKS.md`` section: context lines, the table, the notes."""
    lines = [f"## Speed, memory and latency ({when:%Y-%m-%d %H:%M} UTC)", ""]
    lines += [f"- {label}: {text}" for label, text in report.header]
    lines += ["", "| measure | value | ÷ ref | target |", "|---|---|---|---|"]
    lines += [f"| {r.measure} | {r.value} | {r.ratio} | {r.target} |" for r in report.rows]
    if report.notes:
        lines += ["", *report.notes]
    return "\n".join(lines) + "\n"


BENCHMARKS_HEADER = """# Benchmarks

Measured figures of the shipped encoder and the device pipeline. `make bench` (speed,
memory, size, latency) and `make eval` (accuracy) append a dated section each under
"Latest runs"; the newest is at the bottom. Each section names the machine and the exact command.
"""


def append_benchmarks(path: Path, section: str) -> None:
    """Append a section under the file's ``## Latest runs`` heading (creating the file and the heading if needed)."""
    benchmarks_file.append_section(path, section, BENCHMARKS_HEADER)


# -- formatting -----------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    """Milliseconds with the digits that mean something: 0.09 ms, 36.0 ms, 352 ms."""
    digits = 2 if abs(seconds) < 0.01 else 1 if abs(seconds) < 0.1 else 0
    return f"{1000 * seconds:.{digits}f} ms"


def pct(share: float) -> str:
    return f"{100 * share:.2f}%"


def times_ref(value: float, reference: float) -> str:
    """``value`` in units of the reference op, e.g. '23.4x'."""
    if not np.isfinite(value) or reference <= 0:
        return ""
    ratio = value / reference
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


# -- the run --------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Results:
    """Everything measured in one run, before formatting."""

    encoder: Encoder
    reference: Reference
    latency: dict[int, Stats]  # threads -> encoder latency
    shares: dict[tuple[str, int], Share]  # (stream kind, keyword count) -> CPU share
    words: dict[float, WordMatch]  # threshold offset -> end-of-word matches
    enroll: Stats
    memory: Memory
    keyword_counts: tuple[int, int]
    server: ServerBench = field(default_factory=ServerBench)
    server_limits: ServerLimits = field(default_factory=ServerLimits)
    load_at_start: str = ""
    seconds: float = 0.0
    detect: list[DetectMemory] = field(default_factory=list)


@dataclass
class Setup:
    """What every section shares: the model, the voices, the noise and two enrolled stores."""

    model: Path
    scratch: Path
    rng: np.random.Generator
    speaker: Speaker
    noise: NoiseBank
    takes: list[np.ndarray]  # the five enrollment takes of KEYWORD
    one: Spotter  # KEYWORD only
    ten: Spotter  # KEYWORD and nine others
    others: list[str]


def prepare(model: Path, scratch: Path) -> Setup:
    """Enroll KEYWORD alone (store1) and with nine other words (store10), from espeak-ng takes."""
    rng = np.random.default_rng(0)
    speaker, noise = Speaker(scratch), NoiseBank(rng)
    takes = [speaker.say(KEYWORD, v) for v in ENROLL_VOICES]
    settings = DetectorSettings(hop_seconds=HOP_SECONDS)
    one, ten = Spotter(scratch / "store1", model, settings), Spotter(scratch / "store10", model, settings)
    one.enroll(KEYWORD, takes)
    ten.enroll(KEYWORD, takes)
    others = enroll_keywords(ten, speaker, OTHER_KEYWORDS, 9)
    return Setup(model, scratch, rng, speaker, noise, takes, one, ten, others)


def share_section(s: Setup, encoder: Encoder, seconds: float) -> dict[tuple[str, int], Share]:
    """CPU share of the speech-heavy and the quiet stream, with 1 and with 10 keywords."""
    streams = {
        "speech": chunks(speech_stream(s.speaker, s.noise, seconds, s.rng)),
        "quiet": chunks(s.noise.quiet(seconds, -70.0)),
    }
    keyword_sets = [list(s.one.store.keywords.values()), list(s.ten.store.keywords.values())]
    shares = {}
    for kind, pieces in streams.items():
        front = frontend_share(encoder, pieces)
        for keywords in keyword_sets:
            shares[kind, len(keywords)] = pipeline_share(encoder, keywords, pieces, front)
    return shares


def word_section(s: Setup, encoder: Encoder, count: int) -> dict[float, WordMatch]:
    """End of word -> event over ``count`` takes in unseen voices, at the enrolled thresholds and 0.1 lower.

    The lowered run separates the detector's own delay from the calibration's: a strict
    threshold is only crossed when the window is best centred on the word, i.e. later.
    """
    takes = [s.speaker.say(KEYWORD, voice) for voice in unseen_voices(count)]
    audio, words = word_stream(takes, s.noise.room(3.0 * count + 5.0, -40.0), s.rng)
    keywords = list(s.one.store.keywords.values())
    matches = {}
    for offset in (0.0, -0.1):
        lowered = [replace(k, threshold=k.threshold + offset) for k in keywords]
        detector = StreamingDetector(encoder, lowered, DetectorSettings(HOP_SECONDS))
        events = [(t, d.time_s) for t, d in run_stream(detector, audio) if d.keyword == KEYWORD]
        matches[offset] = match_detections(words, events)
    return matches


def memory_section(s: Setup, profile: Profile) -> Memory:
    """Peak RSS of ``kws listen`` over a wav with two keyword takes in room noise."""
    wav = s.scratch / "listen.wav"
    audio, _ = word_stream(s.takes[:2], s.noise.room(profile.listen_seconds, -40.0), s.rng)
    write_wav(wav, audio[: int(profile.listen_seconds * RATE)], RATE)
    store = s.scratch / "store1"
    return listen_memory(s.model, store, wav, profile.listen_seconds, profile.listen_speed, s.scratch)


def server_section(s: Setup, profile: Profile) -> ServerBench:
    """The Wyoming server with the enrolled keyword, fed the keyword takes in room noise by 4 clients at once."""
    count = max(1, min(len(s.takes), int((profile.server_seconds - 3.5) // 4.0)))  # a take every ~4 s
    audio, _ = word_stream(s.takes[:count], s.noise.room(profile.server_seconds, -40.0), s.rng)
    return server_bench(s.model, s.scratch / "store1", audio, s.scratch)


def run(model: Path, profile: Profile) -> tuple[Results, Setup]:
    """Measure everything, section after section (progress on stderr)."""
    started, load = time.perf_counter(), load_average()
    reference_start = time_reference_op()
    encoder = Encoder(model)
    with tempfile.TemporaryDirectory(prefix="kws-bench-") as scratch:
        progress("enrolling 1 and 10 keywords from espeak-ng takes")
        s = prepare(model, Path(scratch))
        progress(f"encoder latency, {profile.latency_runs} runs at 1 and 2 threads")
        speech = speech_stream(s.speaker, s.noise, 2.0, s.rng)
        window = log_mel(speech, encoder.manifest.frontend)[-encoder.window_frames :]
        latency = {t: encoder_latency(model, t, window, profile.latency_runs) for t in (1, 2)}
        progress(f"pipeline CPU share over {profile.stream_seconds:.0f} s streams")
        shares = share_section(s, encoder, profile.stream_seconds)
        progress(f"end of word -> event over {profile.word_count} takes in unseen voices")
        words = word_section(s, encoder, profile.word_count)
        progress("enrollment time")
        enroll = enrollment_seconds(s.one, s.takes, profile.enroll_runs)
        progress(f"peak memory of kws listen over a {profile.listen_seconds:.0f} s wav at {profile.listen_speed:g}x")
        memory = memory_section(s, profile)
        progress(f"peak memory of kws detect over {', '.join(f'{t:.0f} s at {r} Hz' for t, r in profile.detect_files)}")
        detect = detect_memory_section(s, profile)
        progress(f"Wyoming server, {SERVER_CLIENTS} clients streaming ~{profile.server_seconds:.0f} s at real time")
        server = server_section(s, profile)
        progress(f"kws serve: an oversized and the largest chunk, then {IDLE_CONNECTIONS} idle connections")
        limits = server_limits_bench(model, s.scratch / "store1", s.scratch)
    reference = combine_reference(reference_start, time_reference_op())
    counts = (len(s.one.store.keywords), len(s.ten.store.keywords))
    results = Results(encoder, reference, latency, shares, words, enroll, memory, counts, server, load)
    results.server_limits = limits
    results.detect = detect
    results.seconds = time.perf_counter() - started
    return results, s


def report(results: Results, s: Setup, profile: Profile, command: str) -> Report:
    manifest = results.encoder.manifest
    header = [
        ("machine", machine_line()),
        ("load average at start", results.load_at_start),
        ("python", f"{platform.python_version()}, numpy {np.__version__}, {runtime_line(results.encoder.runtime)}"),
        ("model", f"{s.model} (sha256 {manifest.sha256[:12]}..., created {manifest.created or 'unknown'})"),
        ("keywords", f"1 = {KEYWORD!r}; 10 = it + {', '.join(repr(k) for k in s.others)}"),
        ("noise", s.noise.source),
        ("command", f"`{command}`"),
    ]
    rows = size_rows(results) + speed_rows(results) + share_rows(results) + word_rows(results) + memory_rows(results)
    rows += server_rows(results)
    rows += server_limit_rows(results)
    return Report(rows, header, notes(results, profile))


def size_rows(r: Results) -> list[Row]:
    manifest = r.encoder.manifest
    figures = manifest.figures
    size = figures.get("model_bytes") or r.encoder.model_path.stat().st_size
    shape = f"{manifest.window_seconds:.2f} s ({manifest.window_frames} frames) -> {manifest.embedding_size} dims"
    return [
        Row("model size", f"{int(size):,} bytes"),
        Row("MACs per window", f"{int(figures['macs_per_window']):,}" if "macs_per_window" in figures else "n/a"),
        Row("parameters", f"{int(figures['parameters']):,}" if "parameters" in figures else "n/a"),
        Row("window -> embedding", shape),
    ]


def speed_rows(r: Results) -> list[Row]:
    ref = r.reference
    rows = [Row("reference op (64^3 matmul)", f"{1e6 * ref.wall:.1f} us wall, {1e6 * ref.cpu:.1f} us CPU", "1x")]
    for threads, stats in r.latency.items():
        rows.append(
            Row(
                f"encoder latency, {threads} thread{'s' if threads > 1 else ''}",
                f"median {ms(stats.median)}, p95 {ms(stats.p95)} (n={stats.n})",
                f"{times_ref(stats.median, ref.wall)} / {times_ref(stats.p95, ref.wall)}",
            )
        )
    rows.append(
        Row(
            "enrollment, 5 takes",
            f"median {ms(r.enroll.median)} (n={r.enroll.n}, warm API call)",
            times_ref(r.enroll.median, ref.wall),
        )
    )
    return rows


def share_rows(r: Results) -> list[Row]:
    rows = []
    for kind in ("speech", "quiet"):
        front = r.shares[kind, r.keyword_counts[0]].frontend
        rows.append(Row(f"frontend alone, {kind} stream", f"{pct(front)} of a core", times_ref(front, r.reference.cpu)))
        for count in r.keyword_counts:
            share = r.shares[kind, count]
            rows.append(
                Row(
                    f"pipeline, {kind} stream, {count} keyword{'s' if count > 1 else ''}",
                    f"{pct(share.total)} of a core (frontend {pct(share.frontend)}, encoder {pct(share.encoder)}, "
                    f"rest {pct(share.rest)}; encoder on {share.encoder_runs}/{share.hops} hops)",
                    times_ref(share.total, r.reference.cpu),
                    f"<= {pct(CPU_SHARE_TARGET)}: {verdict(share.total, CPU_SHARE_TARGET)}",
                )
            )
    return rows


def word_rows(r: Results) -> list[Row]:
    rows = []
    for offset, match in r.words.items():
        delay, stamp = summarize(match.latencies), summarize(match.stamp_errors)
        rows.append(
            Row(
                "end of word -> event" + (f", thresholds {offset:+.1f}" if offset else ""),
                f"median {ms(delay.median)}, p95 {ms(delay.p95)}; {delay.n} detected, {match.misses} missed, "
                f"{match.false_alarms} false, {match.duplicates} repeated; time_s - word end: median "
                f"{ms(stamp.median)}",
                "",
                f"median <= {ms(LATENCY_TARGET_S)}: {verdict(delay.median, LATENCY_TARGET_S)}" if not offset else "",
            )
        )
    return rows


def memory_rows(r: Results) -> list[Row]:
    m = r.memory
    return [
        Row(
            f"peak RSS, {m.label}",
            f"{m.peak_mb:.1f} MB (RSS at stop {m.rss_mb:.1f} MB; python+numpy+runtime alone {m.floor_mb:.1f} MB; "
            f"{m.events} events; exit {m.exit_code})",
            "",
            f"<= {MEMORY_TARGET_MB:.0f} MB: {verdict(m.peak_mb, MEMORY_TARGET_MB)}",
        )
    ] + [
        Row(
            d.label,
            f"{d.peak_mb:.1f} MB ({d.file_mb:.0f} MB file; {d.events} events; {d.wall_s:.1f} s wall)",
            "",
            f"<= {DETECT_MEMORY_TARGET_MB:.0f} MB: {verdict(d.peak_mb, DETECT_MEMORY_TARGET_MB)}",
        )
        for d in r.detect
    ]


def server_rows(r: Results) -> list[Row]:
    v = r.server
    latency, memory = (
        f"Wyoming server added latency, {SERVER_CLIENTS} clients",
        f"Wyoming server peak RSS, {SERVER_CLIENTS} clients",
    )
    if v.skipped:
        return [Row(latency, f"skipped: {v.skipped}", "", "—"), Row(memory, f"skipped: {v.skipped}", "", "—")]
    return [
        Row(
            latency,
            f"chunk -> detection: median {ms(v.detection.median)}, p95 {ms(v.detection.p95)} (n={v.detection.n}); "
            f"audio-stop -> final event: median {ms(v.stop.median)}, p95 {ms(v.stop.p95)} (n={v.stop.n})",
            "",
            "—",
        ),
        Row(
            memory,
            f"{v.peak_mb:.1f} MB (after start, before audio {v.idle_mb:.1f} MB; {v.detections} detections "
            f"over {SERVER_CLIENTS} x {v.stream_seconds:.1f} s)",
            "",
            "—",
        ),
    ]


SERVER_MEMORY_TARGET_MB = 120.0  # peak RSS of `kws serve` with one client sending the largest chunk it accepts


def server_limit_rows(r: Results) -> list[Row]:
    v = r.server_limits
    chunk, flood = "kws serve peak RSS, largest accepted chunk", f"kws serve, {IDLE_CONNECTIONS} idle connections"
    if v.skipped:
        return [Row(chunk, f"skipped: {v.skipped}", "", "—"), Row(flood, f"skipped: {v.skipped}", "", "—")]
    return [
        Row(
            chunk,
            f"{v.chunk_peak_mb:.1f} MB (started {v.idle_mb:.1f} MB; a {OVERSIZED_CHUNK_BYTES >> 20} MiB chunk, then "
            f"256 KiB of 8-bit 4 kHz audio = 65 s at 16 kHz; got {v.chunk_events})",
            "",
            f"<= {SERVER_MEMORY_TARGET_MB:.0f} MB: {verdict(v.chunk_peak_mb, SERVER_MEMORY_TARGET_MB)}",
        ),
        Row(
            flood,
            f"RSS {v.flood_rss_mb:.1f} MB (peak {v.flood_peak_mb:.1f} MB), {v.flood_fds} open descriptors; "
            f"a real client's describe answered in {ms(v.served_s)}",
            "",
            "—",
        ),
    ]


def notes(r: Results, profile: Profile) -> list[str]:
    ref = r.reference
    return [
        f"÷ ref: the timing divided by the reference op's median (wall time for latencies, CPU time for shares); "
        f"the op took {1e6 * ref.wall_start:.1f} us at the start of the run, {1e6 * ref.wall_end:.1f} us at its end.",
        f"CPU share: process CPU time / audio seconds, {profile.stream_seconds:.0f} s per stream, hop "
        f"{HOP_SECONDS} s, {CHUNK_SECONDS} s chunks, encoder on 1 thread; speech = espeak-ng talk over room noise "
        f"at -40 dBFS, quiet = room tone at -70 dBFS. 'rest' = detector bookkeeping (gate, scoring, copies).",
        "End of word -> event: stream time, so machine load does not change it. Word end = last 10 ms frame "
        "within 30 dB of the take's peak; an event's time = the end of the 0.1 s chunk whose `process` call "
        "returned it; takes in voices the keyword was not enrolled from.",
        f"Wyoming server: `python -m device.wyoming_server` on loopback with the 1-keyword store; "
        f"{SERVER_CLIENTS} clients at once stream the same wav (keyword takes in room noise) in "
        f"{1000 * SERVER_CHUNK_SECONDS:.0f} ms chunks at real-time pace, so the delays are the processing the server "
        "adds: chunk -> detection = from sending the chunk whose timestamp the detection carries to receiving it; "
        "audio-stop -> final event = to `not-detected`, or to the connection closing after a detection (the server "
        "first runs a window of silence through the detector). Peak RSS = the server's VmHWM after all clients "
        "finished.",
        "kws detect: the real command (`python -m device.cli detect FILE --json`) on 16-bit mono wavs written to a "
        "temporary folder (two keyword takes in room noise, ~10 s, repeated: the encoder runs often); peak RSS = "
        "the command's ru_maxrss, reported by a small Python that runs it (so the bench's own memory is not counted).",
        f"Bench wall time: {r.seconds:.0f} s.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "firmware_models" / "encoder.tflite")
    parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute): smoke test, not figures")
    parser.add_argument("--write-benchmarks", action="store_true", help="append a dated section to BENCHMARKS.md")
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_BENCHMARKS, help="the file --write-benchmarks uses")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "trainer.bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        profile = QUICK if args.quick else FULL
        results, used = run(args.model, profile)
    except (ModelError, RuntimeError) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    table = report(results, used, profile, command)
    print(render_console(table))
    if args.write_benchmarks:
        append_benchmarks(args.benchmarks, render_markdown(table, datetime.datetime.now(datetime.timezone.utc)))
        print(f"\nappended to {args.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
