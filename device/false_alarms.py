"""Teaching a keyword "not this", and warning about keywords that sound alike.

``kws set NAME --not FILE...`` (or ``kws enroll NAME ... --not FILE...``) takes recordings
that wrongly fired (a TV phrase, a look-alike name) and makes them negatives of that
keyword. Each file is run through the detector exactly as a live stream would be (same
windows every hop, same energy gate, same smoothing) against the keyword's prototypes: a
false alarm comes from some window of it, so the file's score is its best smoothed hop,
and the embedding kept is that of its best window. The keyword's threshold then moves to
``NOT_MARGIN`` above the highest of them, never past ``TAKE_MARGIN`` under the takes' own
lowest leave-one-out score (so the word itself keeps firing), and never below the
calibrated threshold. A file that scores as high as the takes sounds like the keyword
itself; that is said loudly, since raising the threshold past it would lose the keyword.

Why a threshold and not negative prototypes: measured (``scripts/not_this_cost.py``: 4 espeak
keyword/look-alike pairs, one look-alike recording taught, then both phrases said by 4 other
voices), the calibrated threshold let 16/16 look-alike recordings fire; the raised threshold
3/16 and negative prototypes (a window closer to the taught embedding than to the prototype
scores nothing) 2/16, neither missing any of the 16 keyword recordings. That difference is
one recording; the threshold needs nothing from the detector, so every stream (listen, detect,
the Wyoming server) obeys it at once and the sensitivity dial keeps working along the
keyword's bank tail, while negative prototypes would change every detector's decision rule.

The user's own voice: the hardest negatives of a personal wake word are the same person
saying other things into the same microphone (on held-out personal recordings those fired
4 to 20 times more often per minute than other people's talk). ``kws enroll NAME TAKES...
--speech FILE`` takes about 10 s of the user's ordinary speech and makes it one more "not
this" of that keyword: scanned the same way (every hop, the detector's own windows), its
best hop joins the --not scores, so the threshold rises above the user's own other words,
with the same cap under the takes. What is kept of it is the whole recording (at most
``MAX_SPEECH_SECONDS``), not only the window around its best hop: after ``kws reembed`` another
window of it may be the strongest.

Look-alike keywords: when a new keyword's prototype is as close to another keyword's as the
lower of their two thresholds, an utterance of one is likely to pass the other's threshold
(measured on 10 espeak phrases: the prototype cosine is within ~0.05 above how an utterance
of one word by another voice scores against the other word's prototype), so enrollment
warns and names the other keyword.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from device.audio import stream_audio
from device.clips import SampleRing
from device.detector import DetectorSettings, StreamingDetector
from device.encoder import Encoder
from device.enroll import EnrollmentError, score
from device.sensitivity import negative_tail
from device.store import Keyword

log = logging.getLogger(__name__)

NOT_MARGIN = 0.03  # the threshold sits this far above the highest --not score
TAKE_MARGIN = 0.02  # ...but at least this far under the lowest leave-one-out take score
CLIP_BEFORE_SECONDS, CLIP_AFTER_SECONDS = 2.0, 0.5  # audio kept of a --not file around its best window
SPEECH_LABEL = "own speech"  # the --not label of a --speech recording starts with this
MIN_SPEECH_SECONDS = 5.0  # a --speech recording shorter than this says too little about the voice
MAX_SPEECH_SECONDS = 60.0  # ...and of a longer one only this much is scanned and kept
NOT_FILE_PREFIX = "not_"  # kept --not clips in a keyword's takes folder: not_00.wav, not_01.wav, ...


@dataclass(frozen=True)
class StrongestWindow:
    """Where a recording comes closest to a keyword, as the streaming detector sees it."""

    label: str
    score: float  # the highest smoothed score of any hop: what the detector compares with the threshold
    embedding: np.ndarray  # the embedding of the highest-scoring single window
    time_s: float  # stream time at the end of that window
    clip: np.ndarray  # the audio around it (CLIP_BEFORE_SECONDS before its end, CLIP_AFTER_SECONDS after)


class RecordingEncoder:
    """The encoder, remembering the last embedding it made (so a hop listener can see it)."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self.last: np.ndarray | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._encoder, name)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        self.last = self._encoder.embed_frames(frames)
        return self.last


def _pieces(audio: str | Path | np.ndarray, rate: int) -> Iterator[np.ndarray]:
    """The recording in 0.1 s chunks (read from a file block by block, so its length does not matter)."""
    chunk = rate // 10
    blocks = stream_audio(audio, rate) if isinstance(audio, (str, Path)) else [np.asarray(audio, np.float32)]
    for block in blocks:
        for start in range(0, len(block), chunk):
            yield block[start : start + chunk]
    yield np.zeros(rate, np.float32)  # a second of silence: a word at the very end completes its window


def strongest_window(
    encoder: Encoder, keyword: Keyword, audio: str | Path | np.ndarray, label: str, settings: DetectorSettings
) -> StrongestWindow:
    """Stream ``audio`` (a path or samples at the model's rate) through a detector for ``keyword`` alone.

    Raises :class:`EnrollmentError` when no window of it is louder than the detector's energy
    gate: a silent file can never have fired.
    """
    rate = encoder.manifest.frontend.sample_rate
    recorder = RecordingEncoder(encoder)
    prototypes = keyword.prototype_matrix()
    ring = SampleRing(round((CLIP_BEFORE_SECONDS + CLIP_AFTER_SECONDS + 1.0) * rate))
    best = {"smoothed": -np.inf, "raw": -np.inf, "embedding": None, "time_s": 0.0, "clip": None}
    clip_due: list[int] = []  # the sample index the best window's clip ends at, until it is cut

    def on_hop(now: float, smoothed: np.ndarray, _thresholds: np.ndarray) -> None:
        best["smoothed"] = max(best["smoothed"], float(smoothed[0]))
        if recorder.last is not None:  # the gate let this window through: the encoder ran
            raw = float(np.max(prototypes @ recorder.last))
            if raw > best["raw"]:
                best.update(raw=raw, embedding=recorder.last, time_s=now)
                clip_due[:] = [round(now * rate) + round(CLIP_AFTER_SECONDS * rate)]
            recorder.last = None

    # This keyword alone, with the user's hop, smoothing and gate; its events are not used, only its scores.
    stream = StreamingDetector(recorder, [keyword], settings, on_hop)  # type: ignore[arg-type]
    for piece in _pieces(audio, rate):
        stream.process(piece)
        ring.feed(piece)
        if clip_due and ring.total >= clip_due[0]:
            end = clip_due.pop()
            best["clip"] = ring.span(end - round((CLIP_BEFORE_SECONDS + CLIP_AFTER_SECONDS) * rate), end)
    if best["embedding"] is None:
        raise EnrollmentError(f"{label}: nothing in it is louder than the detector's gate, so it cannot have fired")
    clip = best["clip"] if best["clip"] is not None else ring.span(0, ring.total)
    return StrongestWindow(label, best["smoothed"], np.asarray(best["embedding"]), best["time_s"], clip)


def is_own_speech(label: str) -> bool:
    """Whether a --not label is that of the user's own ordinary speech (``--speech``)."""
    return label.startswith(SPEECH_LABEL)


def own_speech_window(
    encoder: Encoder, keyword: Keyword, audio: str | Path | np.ndarray, label: str, settings: DetectorSettings
) -> StrongestWindow:
    """The user's ordinary speech (``--speech``) as a --not negative, keeping all of its audio (see the module).

    Raises :class:`EnrollmentError` when it is shorter than :data:`MIN_SPEECH_SECONDS` or
    nothing in it passes the detector's gate; of a longer recording the first
    :data:`MAX_SPEECH_SECONDS` are used.
    """
    rate = encoder.manifest.frontend.sample_rate
    samples = _first_seconds(audio, rate, MAX_SPEECH_SECONDS)
    if len(samples) < MIN_SPEECH_SECONDS * rate:
        raise EnrollmentError(
            f"--speech {label}: {len(samples) / rate:.1f} s; it needs at least {MIN_SPEECH_SECONDS:.0f} s of your "
            "ordinary speech (about 10 s of you talking about anything but the keyword)"
        )
    label = label if is_own_speech(label) else f"{SPEECH_LABEL}: {label}"
    window = strongest_window(encoder, keyword, samples, label, settings)
    return replace(window, clip=samples)


def _first_seconds(audio: str | Path | np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """At most ``seconds`` of a recording (a path is read block by block and no further)."""
    limit = round(seconds * rate)
    if not isinstance(audio, (str, Path)):
        return np.asarray(audio, np.float32)[:limit]
    blocks, total = [], 0
    for block in stream_audio(audio, rate):
        blocks.append(block[: limit - total])
        total += len(blocks[-1])
        if total >= limit:
            log.info("--speech %s: only its first %.0f s are used", audio, seconds)
            break
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def apply_negatives(keyword: Keyword, windows: list[StrongestWindow], negatives: np.ndarray | None) -> Keyword:
    """The keyword with ``windows`` as its --not negatives and its threshold raised above them (see the module).

    ``windows`` is the whole list (earlier --not files included): the threshold is always
    worked out from the calibrated one, so teaching the same file twice changes nothing.
    Warnings (a file that sounds like the keyword, a raise capped by the takes) are logged
    and kept in ``stats["not_warning"]``.
    """
    stats = dict(keyword.stats)
    calibrated = float(stats.get("calibrated_threshold", keyword.threshold))
    stats.pop("not_warning", None)
    if not windows:
        return replace(keyword, stats=stats)
    loo = stats.get("take_scores_loo") or []
    take_low = float(min(loo)) if loo else 1.0
    cap = take_low - TAKE_MARGIN
    highest = max(windows, key=lambda w: w.score)
    wanted = highest.score + NOT_MARGIN
    threshold = max(calibrated, min(wanted, cap))
    warning = ""
    if highest.score >= take_low - TAKE_MARGIN and is_own_speech(highest.label):
        warning = (
            f"{highest.label} scores {highest.score:.3f}, as high as the takes of {keyword.name!r} "
            f"(lowest {take_low:.3f}): does it hold the keyword itself? The threshold is not raised past the takes "
            f"(it is {threshold:.3f}); record your speech again without the keyword"
        )
    elif highest.score >= take_low - TAKE_MARGIN:
        warning = (
            f"{highest.label} scores {highest.score:.3f}, as high as the takes of {keyword.name!r} "
            f"(lowest {take_low:.3f}): it sounds like the keyword itself. The threshold is not raised past the takes "
            f"(it is {threshold:.3f}); if that file really is something else, choose a more distinct phrase"
        )
    elif wanted > cap:
        warning = (
            f"{highest.label} scores {highest.score:.3f}: the threshold of {keyword.name!r} stops at {threshold:.3f}, "
            f"just under its takes (lowest {take_low:.3f}), so it may still fire on it now and then"
        )
    if warning:
        log.warning("%s", warning)
        stats["not_warning"] = warning
    threshold = round(threshold, 4)
    stats |= {
        "calibrated_threshold": round(calibrated, 4),
        "not_labels": [w.label for w in windows],
        "not_scores": [round(w.score, 4) for w in windows],
        "not_embeddings": [[round(float(x), 5) for x in w.embedding] for w in windows],
    }
    if negatives is not None and len(negatives):  # the sensitivity dial maps from the new threshold
        stats |= negative_tail(score(keyword.prototype_matrix(), negatives), threshold)
    return replace(keyword, threshold=threshold, stats=stats)


def stored_windows(keyword: Keyword) -> list[StrongestWindow]:
    """The --not negatives a keyword already has (no audio: what its record keeps)."""
    stats = keyword.stats
    return [
        StrongestWindow(label, float(value), np.asarray(vector, np.float32), 0.0, np.zeros(0, np.float32))
        for label, value, vector in zip(
            stats.get("not_labels", []), stats.get("not_scores", []), stats.get("not_embeddings", []), strict=True
        )
    ]


def kept_not_files(folder: Path | None) -> list[Path]:
    """The kept --not clips of a takes folder, in the order they were taught."""
    return sorted(folder.glob(f"{NOT_FILE_PREFIX}*.wav")) if folder and folder.is_dir() else []


def sounds_like(keyword: Keyword, others: Iterable[Keyword]) -> list[tuple[str, float, str]]:
    """Other keywords (same encoder) whose prototypes are as close as the lower threshold: (name, cosine, message).

    Also warns (as ``("", score, message)``) when the negative bank's closest window scores as
    high as the keyword's own lowest take: the word sounds like ordinary words the model knows.
    """
    mine = keyword.prototype_matrix()
    found = []
    for other in others:
        if other.name == keyword.name or other.encoder_sha256 != keyword.encoder_sha256:
            continue
        cosine = float(np.max(mine @ other.prototype_matrix().T))
        if cosine >= min(keyword.threshold, other.threshold):
            message = (
                f"{keyword.name!r} sounds like {other.name!r} ({cosine:.2f}, over the threshold "
                f"{min(keyword.threshold, other.threshold):.2f}): saying one may fire the other; "
                "choose a more distinct phrase"
            )
            found.append((other.name, cosine, message))
    found.sort(key=lambda item: -item[1])
    tail, loo = keyword.stats.get("negative_tail"), keyword.stats.get("take_scores_loo")
    if tail and loo and float(tail[0][1]) >= float(min(loo)):
        found.append(
            (
                "",
                float(tail[0][1]),
                f"{keyword.name!r} sounds like other words: the closest window of the model's bank of other "
                f"words scores {float(tail[0][1]):.2f}, as high as your takes ({float(min(loo)):.2f}); "
                "choose a more distinct phrase",
            )
        )
    return found


def save_not_clips(folder: Path, windows: list[StrongestWindow], rate: int) -> list[Path]:
    """Write the audio of the --not windows that have it into a keyword's new takes folder, in order."""
    from device.audio import write_wav

    paths = []
    for window in (w for w in windows if len(w.clip)):
        path = folder / f"{NOT_FILE_PREFIX}{len(paths):02d}.wav"
        write_wav(path, window.clip, rate)
        paths.append(path)
    return paths
