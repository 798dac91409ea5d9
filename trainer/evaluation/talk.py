"""Real-talk streams: keywords said amid hours of people talking, the false alarms users actually meet.

The noise streams of :mod:`trainer.evaluation.streaming` hold isolated words in background
noise, and on them the shipped encoder looked fine while on real recordings nearly all of
its false alarms came from ordinary continuous talk. So this protocol's stream *is* talk:
every evaluation-part file of the real-speech corpus (``trainer.real_speech``: Mboshi and
eleven VoxLingua languages that neither training nor the negative bank ever heard), one after
another with short pauses, over a quiet room floor. The keywords' other takes are spliced in
between files; ``no_pause_share`` of them (a third) straight after the talk, its trailing
silence cut, because people do not always pause before a wake word and a detector that leans
on silence before the word must pay for it here. Some of each enrolling speaker's other words
are spliced in too (``own_voice_words``): the same voice and microphone saying something else
is the hardest negative a personal keyword meets. What enrollment's ``--speech`` buys against
them is measured on the same pass: each keyword is enrolled a second time from the same takes
with ``own_speech_seconds`` of its speaker's further other words (none of them in the stream)
as its ``speech``, and the trace is replayed at those thresholds (``with_own_speech``).

Enrollment, detector, replay and scoring are those of the noise streams (``Spotter.enroll``,
``StreamingDetector.process`` in 0.1 s chunks, the permissive pass replayed at every
threshold), so the two kinds of stream differ only in what surrounds the words. What this
module adds is what talk needs to be read: false alarms per hour with an exact Poisson upper
bound, each keyword's false-alarm rate at its as-enrolled threshold (a calibration that gives
one keyword 12/h and another 0/h wastes both), and where the false alarms came from
(corpus and language of the talk, or the speaker's own other words).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from device.noise import coloured_noise
from device.vad import speech_bounds
from trainer.augment import active_power
from trainer.evaluation.metrics import fa_per_hour, frr, poisson_upper
from trainer.evaluation.streaming import (
    CROSSFADE_SECONDS,
    RATE,
    Event,
    KeywordPlan,
    KeywordWindows,
    StreamItem,
    TestStream,
    Trace,
    background,
    count,
    replay,
    sweep,
    threshold_grid,
)
from trainer.real_speech import TalkFile

TALK_FA_TARGETS = (0.1, 0.5, 1.0, 2.0)  # false alarms per hour at which FRR is reported (the points)
TALK_WORD = "<talk>"  # the word of a talk event: never a keyword's word
OWN_VOICE = "own-voice"


@dataclass(frozen=True)
class TalkStreamConfig:
    """What the talk stream holds; the defaults are what ``make eval`` runs."""

    mode: str = "personal"  # targets by the enrolling speaker (what a user of a personal wake word is)
    keywords: int = 10
    enroll_takes: int = 3  # the fewest a user may give: the hardest case
    occurrences: int = 20  # target occurrences per keyword
    own_voice_words: int = 10  # per keyword: the enrolling speaker's other words, spliced in as negatives
    own_speech_seconds: float = 10.0  # per keyword: more of them, end to end, as enrollment's --speech
    talk_seconds: float = 0.0  # talk to use (0: every evaluation file)
    no_pause_share: float = 1 / 3  # targets spliced straight after talk (its trailing silence cut)
    pause_seconds: tuple[float, float] = (0.4, 2.0)  # before and after a paused word
    talk_gap_seconds: tuple[float, float] = (0.1, 0.6)  # between talk files (which hold their own pauses)
    talk_dbfs: float = -26.0  # active-speech RMS of the talk, +- talk_spread_db per file
    talk_spread_db: float = 6.0
    word_spread_db: float = 4.0  # a spliced word's active RMS: the neighbouring talk's +- this
    noise_dbfs: float = -55.0  # the room floor under everything
    tolerance_seconds: float = 1.0
    chunk_seconds: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class TalkPiece:
    """One talk file in the stream, decoded."""

    file: TalkFile
    audio: np.ndarray


def choose_talk(files: Sequence[TalkFile], seconds: float, rng: np.random.Generator) -> list[TalkFile]:
    """Every file (``seconds`` 0) or a seeded selection adding up to at least ``seconds``, in seeded order."""
    order = [files[i] for i in rng.permutation(len(files))]
    if seconds <= 0:
        return order
    chosen, total = [], 0.0
    for f in order:
        if total >= seconds:
            break
        chosen.append(f)
        total += f.seconds
    return chosen


def _at_active_dbfs(audio: np.ndarray, dbfs: float) -> np.ndarray:
    power = active_power(audio)
    gain = math.sqrt(10.0 ** (dbfs / 10.0) / power) if power > 0 else 0.0
    return (np.asarray(audio, np.float32) * np.float32(gain)).astype(np.float32)


def _word_segment(samples: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The word with 50 ms either side, and where its speech starts and ends inside that."""
    bounds = speech_bounds(samples, RATE) or (0, len(samples))
    margin = RATE // 20
    lo, hi = max(0, bounds[0] - margin), min(len(samples), bounds[1] + margin)
    return samples[lo:hi], bounds[0] - lo, bounds[1] - lo


def _cut_trailing_silence(talk: np.ndarray) -> np.ndarray:
    """The talk up to its last speech (so a word spliced after it follows the talk with no pause)."""
    bounds = speech_bounds(talk, RATE)
    return talk[: bounds[1]] if bounds else talk


def build_talk_stream(
    talk: Sequence[TalkPiece], words: Sequence[StreamItem], config: TalkStreamConfig, rng: np.random.Generator
) -> TestStream:
    """Talk files end to end with pauses, ``words`` spliced between them (evenly spread, in the given order).

    Each talk file gets an event (word :data:`TALK_WORD`, source ``talk:<corpus>:<language>``)
    so that false alarms can be traced to what was said; a word after talk with no pause
    starts where the talk's last speech ends, crossfaded over 50 ms.
    """
    if not talk:
        raise ValueError("no talk to build the stream from")
    slots = np.sort(rng.choice(len(talk), size=len(words), replace=len(words) > len(talk)))
    after: dict[int, list[StreamItem]] = {}
    for slot, word in zip(slots, words, strict=True):
        after.setdefault(int(slot), []).append(word)
    fade = int(CROSSFADE_SECONDS * RATE)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    pieces: list[tuple[int, np.ndarray]] = []
    events: list[Event] = []
    position = int(rng.uniform(*config.pause_seconds) * RATE)
    for i, piece in enumerate(talk):
        level = config.talk_dbfs + rng.uniform(-config.talk_spread_db, config.talk_spread_db)
        audio = _at_active_dbfs(piece.audio, level)
        queued = after.get(i, [])
        no_pause = bool(queued) and rng.random() < config.no_pause_share
        if no_pause:
            audio = _cut_trailing_silence(audio)
        pieces.append((position, audio))
        events.append(
            Event(
                position / RATE, (position + len(audio)) / RATE, TALK_WORD, piece.file.file_id, piece.file.source, None
            )
        )
        position += len(audio)
        for j, word in enumerate(queued):
            if not (no_pause and j == 0):
                position += int(rng.uniform(*config.pause_seconds) * RATE)
            else:
                position -= fade  # overlap the crossfade with the talk's last sound
            segment, speech_start, speech_end = _word_segment(np.asarray(word.audio, np.float32))
            segment = _at_active_dbfs(segment, level + rng.uniform(-config.word_spread_db, config.word_spread_db))
            segment[:fade] *= ramp[: len(segment[:fade])]
            pieces.append((position, segment))
            events.append(
                Event(
                    (position + speech_start) / RATE,
                    (position + speech_end) / RATE,
                    word.word,
                    word.speaker,
                    f"{word.source} (no pause)" if no_pause and j == 0 else word.source,
                    word.keyword,
                )
            )
            position += len(segment)
        position += int(rng.uniform(*(config.pause_seconds if queued else config.talk_gap_seconds)) * RATE)
    audio = _room_floor(position, rng, config.noise_dbfs)
    for start, piece in pieces:
        audio[start : start + len(piece)] += piece
    return TestStream(np.clip(audio, -1.0, 1.0), events)


def _room_floor(samples: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
    """A steady pink floor (a quiet room with a fan), so pauses are not digital silence.

    Crossfaded stretches of four 30 s pink clips (``streaming.background``): one FFT over
    hours of samples would need gigabytes.
    """
    clips = [coloured_noise(30 * RATE, rng, exponent=1.0) for _ in range(4)]
    return background(clips, samples, rng, dbfs)


def _other_words(words: np.ndarray, speakers: np.ndarray, plan: KeywordPlan, used: set[int]) -> list[int]:
    """Indices of the keyword's speaker's takes of other words that nothing has used yet."""
    return [i for i in range(len(words)) if speakers[i] == plan.speaker and words[i] != plan.word and i not in used]


def own_voice_items(
    words: np.ndarray, speakers: np.ndarray, audio: Sequence[np.ndarray], plans: Sequence[KeywordPlan],
    used: set[int], per_keyword: int, rng: np.random.Generator,
) -> list[StreamItem]:  # fmt: skip
    """Each enrolling speaker's takes of words that are not their keyword (and were not used), as negatives."""
    items = []
    for plan in plans:
        pool = _other_words(words, speakers, plan, used)
        for i in rng.choice(pool, size=min(per_keyword, len(pool)), replace=False):
            items.append(StreamItem(audio[i], str(words[i]), str(speakers[i]), OWN_VOICE))
            used.add(int(i))
    return items


def own_speech_recordings(
    words: np.ndarray, speakers: np.ndarray, audio: Sequence[np.ndarray], plans: Sequence[KeywordPlan],
    used: set[int], seconds: float, rng: np.random.Generator,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per keyword: ``seconds`` of its speaker's other words that nothing else uses, with short pauses between:
    what a user gives ``kws enroll --speech`` (their voice and microphone, not the keyword).

    A keyword whose speaker has too little left gets none (and keeps its plain threshold).
    """
    found = {}
    for plan in plans:
        pool = _other_words(words, speakers, plan, used)
        pieces, total = [], 0
        for i in rng.permutation(pool):
            if total >= seconds * RATE:
                break
            segment = _word_segment(np.asarray(audio[i], np.float32))[0]
            pause = np.zeros(int(rng.uniform(0.15, 0.5) * RATE), np.float32)
            pieces += [segment, pause]
            total += len(segment) + len(pause)
            used.add(int(i))
        if total >= seconds * RATE:
            found[plan.name] = np.concatenate(pieces)
    return found


def fa_sources(detections: np.ndarray, windows: KeywordWindows, events: Sequence[Event]) -> Counter:
    """Where one keyword's false alarms fell: what the latest talk or word begun before each was
    (within 1.5 s of its end: the window and the hold put a detection up to that late), else ``pause``."""
    spared = ~(_inside_any(detections, windows.targets) | _inside_any(detections, windows.ignore))
    ordered = sorted(events, key=lambda e: e.start)
    starts = np.array([e.start for e in ordered])
    sources: Counter = Counter()
    for t in detections[spared]:
        k = int(np.searchsorted(starts, t, side="right")) - 1
        sources[_source(ordered[k]) if k >= 0 and t <= ordered[k].end + 1.5 else "pause"] += 1
    return sources


def _source(event: Event) -> str:
    """The report's name for what a false alarm came in: talk by corpus and language, or which kind of word."""
    if event.word == TALK_WORD or event.source == OWN_VOICE:
        return event.source
    return "another keyword's take"


def _inside_any(times: np.ndarray, windows: np.ndarray) -> np.ndarray:
    if len(windows) == 0 or len(times) == 0:
        return np.zeros(len(times), bool)
    return np.array([bool(np.any((windows[:, 0] <= t) & (t <= windows[:, 1]))) for t in times])


def _sub_trace(trace: Trace, k: int) -> Trace:
    return replace(trace, scores=trace.scores[:, [k]], names=[trace.names[k]], thresholds=trace.thresholds[[k]])


def enrolled_rows(
    trace: Trace, windows: Sequence[KeywordWindows], events: Sequence[Event], refractory: float
) -> dict[str, dict]:
    """Per keyword: hits and false alarms at its threshold in ``trace`` (with the Poisson bound and their sources)."""
    rows = {}
    for k, (name, w) in enumerate(zip(trace.names, windows, strict=True)):
        fired = replay(trace.times, trace.scores[:, k], trace.thresholds[k], refractory)
        hits, total, false = count(fired, w)
        hours = w.negative_seconds / 3600.0
        rows[name] = {
            "threshold": round(float(trace.thresholds[k]), 4),
            "hits": hits,
            "occurrences": total,
            "frr": frr(total - hits, total),
            "false_alarms": false,
            "negative_hours": round(hours, 3),
            "fa_per_hour": fa_per_hour(false, w.negative_seconds),
            "fa_per_hour_upper95": poisson_upper(false) / hours if hours > 0 else float("nan"),
            "fa_sources": dict(fa_sources(fired, w, events).most_common()),
        }
    return rows


def keyword_rows(
    trace: Trace, windows: Sequence[KeywordWindows], events: Sequence[Event], refractory: float
) -> dict[str, dict]:
    """:func:`enrolled_rows` at the as-enrolled thresholds, and each keyword's own FRR at each of
    :data:`TALK_FA_TARGETS` (its threshold swept alone)."""
    rows = enrolled_rows(trace, windows, events, refractory)
    for k, (name, w) in enumerate(zip(trace.names, windows, strict=True)):
        own = _sub_trace(trace, k)
        rows[name]["frr_at_fa"] = sweep(own, [w], threshold_grid(own, [w]), refractory, fa_targets=TALK_FA_TARGETS)[
            "frr_at_fa"
        ]
    return rows


def spread(rows: dict[str, dict]) -> dict:
    """How evenly the as-enrolled thresholds share false alarms across keywords."""
    rates = np.array([r["fa_per_hour"] for r in rows.values()], float)
    return {
        "min": float(rates.min()),
        "median": float(np.median(rates)),
        "max": float(rates.max()),
        "worst": max(rows, key=lambda n: rows[n]["fa_per_hour"]),
        "above_1_per_hour": int(np.sum(rates > 1.0)),
        "above_0_5_per_hour": int(np.sum(rates > 0.5)),
    }


def operating_point(rows: dict[str, dict], windows: Sequence[KeywordWindows]) -> dict:
    """The keywords' rows pooled: FRR, false alarms per keyword-hour with the Poisson bound, spread and sources."""
    false = sum(r["false_alarms"] for r in rows.values())
    hours = sum(w.negative_seconds for w in windows) / 3600.0
    occurrences = sum(r["occurrences"] for r in rows.values())
    hits = sum(r["hits"] for r in rows.values())
    sources: Counter = Counter()
    for r in rows.values():
        sources.update(r["fa_sources"])
    return {
        "frr": frr(occurrences - hits, occurrences),
        "false_alarms": false,
        "keyword_hours": hours,
        "fa_per_hour": fa_per_hour(false, hours * 3600.0),
        "fa_per_hour_upper95": poisson_upper(false) / hours if hours > 0 else float("nan"),
        "spread": spread(rows),
        "fa_sources": dict(sources.most_common()),
    }


def with_thresholds(
    trace: Trace, thresholds: dict[str, float], windows: Sequence[KeywordWindows], events: Sequence[Event],
    refractory: float,
) -> dict:  # fmt: skip
    """The operating point with some keywords' thresholds replaced (the rest as enrolled), from the same pass."""
    moved = np.array([thresholds.get(n, float(t)) for n, t in zip(trace.names, trace.thresholds, strict=True)])
    rows = enrolled_rows(replace(trace, thresholds=moved), windows, events, refractory)
    point = operating_point(rows, windows)
    point["per_keyword"] = {
        name: {k: r[k] for k in ("threshold", "frr", "false_alarms", "fa_per_hour", "fa_sources")}
        for name, r in rows.items()
    }
    point["keywords_moved"] = sorted(set(thresholds) & set(trace.names))
    return point


def summarise_talk(
    trace: Trace,
    windows: Sequence[KeywordWindows],
    stream: TestStream,
    config: TalkStreamConfig,
    refractory: float,
) -> dict:
    """Everything the report and the DET plot need from one pass over the talk stream."""
    global_sweep = sweep(trace, windows, threshold_grid(trace, windows), refractory, fa_targets=TALK_FA_TARGETS)
    offsets = np.round(np.arange(-0.6, 0.4001, 0.01), 4)
    offset_sweep = sweep(trace, windows, offsets, refractory, per_keyword_base=True, fa_targets=TALK_FA_TARGETS)
    rows = keyword_rows(trace, windows, stream.events, refractory)
    point = operating_point(rows, windows)
    talk_events = [e for e in stream.events if e.word == TALK_WORD]
    languages = Counter(e.source for e in talk_events)
    per_language_hours = Counter()
    for e in talk_events:
        per_language_hours[e.source] += (e.end - e.start) / 3600.0
    return {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "stream_hours": stream.seconds / 3600.0,
        "talk_hours": sum(per_language_hours.values()),
        "talk_files": len(talk_events),
        "talk_sources": {s: {"files": languages[s], "hours": round(h, 3)} for s, h in per_language_hours.items()},
        "keywords": trace.names,
        "target_occurrences": sum(r["occurrences"] for r in rows.values()),
        "no_pause_occurrences": sum(1 for e in stream.events if e.keyword and e.source.endswith("(no pause)")),
        "own_voice_words": sum(1 for e in stream.events if e.source.startswith(OWN_VOICE)),
        "negative_hours_per_keyword": point["keyword_hours"] / max(1, len(windows)),
        "encoder_runs": trace.encoder_runs,
        "processing_seconds": round(trace.seconds, 1),
        "realtime_factor": round(trace.seconds / stream.seconds, 4),
        "global": global_sweep,
        "calibrated": offset_sweep,
        "as_enrolled": point,
        "calibrated_at_offset_0": {"frr": point["frr"], "fa_per_hour": point["fa_per_hour"]},
        "per_keyword": rows,
    }
