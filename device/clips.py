"""Audio around events: a bounded ring of recent samples, and ``kws listen --save`` (clips of hits and near misses).

Why keep clips: a false alarm or a miss is only fixable when the user can hear it.
``--save DIR`` keeps, for every detection and every near miss (a keyword whose score came
within ``margin`` of its threshold without passing), the audio from ``before_seconds``
(2 s) ahead of the event to ``after_seconds`` (0.5 s) after it, as a wav (written
atomically by :func:`device.audio.write_wav`) with a sidecar JSON saying what happened.
The user listens, then teaches the keyword "not this" (``kws set NAME --not CLIP.wav``)
or adds a missed take (``kws enroll NAME CLIP.wav --add``).

Memory is bounded by the ring (a few seconds of samples, whatever the stream's length),
and the folder by ``max_clips``: beyond it the oldest clips this saver wrote are deleted,
with a log line saying so; files it did not write are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.audio import write_wav

log = logging.getLogger("kws.clips")

CLIP_PREFIX = "kws-"
DEFAULT_MARGIN = 0.05  # a hop within this of the threshold (and under it) is a near miss
DEFAULT_MAX_CLIPS = 200  # ~2.5 s clips at 16 kHz 16-bit: ~80 KB each, ~16 MB in all


class SampleRing:
    """The last ``capacity`` samples of a stream, addressed by their index since the stream started."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a sample ring needs a positive capacity, got {capacity}")
        self._buffer = np.zeros(capacity, np.float32)
        self.total = 0  # samples fed since the start (or the last reset)

    def reset(self) -> None:
        self.total = 0

    def feed(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32)[-len(self._buffer) :]
        capacity = len(self._buffer)
        start = self.total % capacity
        first = min(len(samples), capacity - start)
        self._buffer[start : start + first] = samples[:first]
        self._buffer[: len(samples) - first] = samples[first:]
        self.total += len(samples)  # the samples cut off above were older than the ring holds anyway

    def span(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)`` of the stream, clipped to what was fed and is still held."""
        start, end = max(start, self.total - len(self._buffer), 0), min(end, self.total)
        if end <= start:
            return np.zeros(0, np.float32)
        capacity = len(self._buffer)
        indices = np.arange(start, end) % capacity
        return self._buffer[indices].copy()


def check_save_options(folder: str | Path, margin: float, max_clips: int) -> None:
    """ValueError naming the ``kws listen`` option that cannot work (checked before the microphone opens)."""
    if not (np.isfinite(margin) and 0 < margin < 1):
        raise ValueError(f"--save-margin must be a number between 0 and 1 (a cosine), got {margin}")
    if max_clips < 1:
        raise ValueError(f"--save-max must be at least 1, got {max_clips}")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(f"--save {folder} is a file, not a folder")


def _slug(text: str) -> str:
    """A keyword name as a file-name part: letters and digits of any script kept, the rest '_'."""
    return re.sub(r"[^\w]+", "_", text, flags=re.UNICODE).strip("_") or "keyword"


@dataclass
class _Pending:
    kind: str  # "detection" or "near-miss"
    keyword: str
    score: float
    threshold: float
    time_s: float  # stream time of the event (a detection: the end of the word)
    timestamp: float  # wall clock when it happened
    end_sample: int  # stream sample index the clip ends at (the event plus after_seconds)


@dataclass
class _NearMiss:
    peak: float
    threshold: float
    time_s: float


class ClipSaver:
    """Writes the audio of detections and near misses to a folder; fed the same samples as the detector."""

    def __init__(
        self,
        folder: str | Path,
        rate: int,
        margin: float = DEFAULT_MARGIN,
        max_clips: int = DEFAULT_MAX_CLIPS,
        before_seconds: float = 2.0,
        after_seconds: float = 0.5,
        refractory_seconds: float = 1.5,
    ) -> None:
        check_save_options(folder, margin, max_clips)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rate, self.margin, self.max_clips = rate, margin, max_clips
        self.before = round(before_seconds * rate)
        self.after = round(after_seconds * rate)
        self.refractory_seconds = refractory_seconds
        # Room for the clip plus a block of the microphone still being fed when the clip is due.
        self.ring = SampleRing(self.before + self.after + 2 * rate)
        self._pending: list[_Pending] = []
        self._near: dict[str, _NearMiss] = {}  # a near miss in progress per keyword: its peak so far
        self._quiet_until: dict[str, float] = {}  # no near miss for a keyword so soon after its last clip
        self.saved: list[Path] = []  # the wavs written, oldest first (for tests and the cap)
        self.time_offset = 0.0  # added to stream times in names and sidecars (the listener's time before a reconnect)
        self._deleted = 0

    # -- what the listener calls ---------------------------------------------------------------------

    def feed(self, samples: np.ndarray) -> None:
        """The samples the detector was just given (same rate, same order): write the clips now complete."""
        self.ring.feed(samples)
        while self._pending and self._pending[0].end_sample <= self.ring.total:
            self._write(self._pending.pop(0))

    def detection(self, keyword: str, score: float, threshold: float, time_s: float) -> None:
        """A detection at stream time ``time_s``: its clip is written once ``after_seconds`` more have arrived."""
        self._near.pop(keyword, None)  # the near miss in progress turned into this detection
        self._queue("detection", keyword, score, threshold, time_s)

    def hop(self, time_s: float, names: list[str], scores: np.ndarray, thresholds: np.ndarray) -> None:
        """One detector hop: follow near misses (score in ``[threshold - margin, threshold)``), one clip each."""
        for name, score, threshold in zip(names, scores, thresholds, strict=True):
            score, threshold = float(score), float(threshold)
            near = self._near.get(name)
            if score >= threshold:  # passing: the detector decides; a detection will be reported
                self._near.pop(name, None)
            elif score >= threshold - self.margin and time_s >= self._quiet_until.get(name, -np.inf):
                if near is None or score > near.peak:
                    self._near[name] = _NearMiss(score, threshold, time_s)
            elif near is not None:  # fell back below the margin: the near miss is over, save its peak
                del self._near[name]
                self._queue("near-miss", name, near.peak, near.threshold, near.time_s)

    def reset(self, time_offset: float) -> None:
        """The stream restarts (a reconnect) at ``time_offset``: write what is pending, forget the rest."""
        self.flush()
        self.time_offset = time_offset
        self.ring.reset()
        self._near.clear()
        self._quiet_until.clear()

    def flush(self) -> None:
        """Write every pending clip now (stopping): the clip ends where the audio does."""
        for name, near in list(self._near.items()):
            self._queue("near-miss", name, near.peak, near.threshold, near.time_s)
        self._near.clear()
        while self._pending:
            self._write(self._pending.pop(0))

    # -- writing -------------------------------------------------------------------------------------

    def _queue(self, kind: str, keyword: str, score: float, threshold: float, time_s: float) -> None:
        self._quiet_until[keyword] = time_s + self.refractory_seconds
        end = round(time_s * self.rate) + self.after
        self._pending.append(_Pending(kind, keyword, score, threshold, time_s, time.time(), end))
        self._pending.sort(key=lambda p: p.end_sample)

    def _write(self, event: _Pending) -> None:
        start = event.end_sample - self.after - self.before
        audio = self.ring.span(start, event.end_sample)
        if len(audio) == 0:
            log.warning("--save: no audio left for the %s of %r at %.2f s", event.kind, event.keyword, event.time_s)
            return
        clock = time.strftime("%Y%m%d-%H%M%S", time.localtime(event.timestamp))
        millis = int(event.timestamp * 1000) % 1000
        time_s = self.time_offset + event.time_s
        stem = (
            f"{CLIP_PREFIX}{clock}.{millis:03d}-{_slug(event.keyword)}-{event.kind}"
            f"-score{event.score:.3f}-thr{event.threshold:.3f}-t{time_s:.2f}"
        )
        wav = self.folder / f"{stem}.wav"
        try:
            write_wav(wav, audio, self.rate)
            self._write_json(
                wav.with_suffix(".json"),
                {
                    "kind": event.kind,
                    "keyword": event.keyword,
                    "score": round(event.score, 4),
                    "threshold": round(event.threshold, 4),
                    "time_s": round(time_s, 3),
                    "timestamp": round(event.timestamp, 3),
                    "wav": wav.name,
                    "sample_rate": self.rate,
                    # where the event sits in the clip: a detection's word ends here
                    "event_offset_s": round((event.end_sample - self.after - max(start, 0)) / self.rate, 3),
                    "clip_seconds": round(len(audio) / self.rate, 3),
                },
            )
        except OSError as error:  # a full or read-only disk must not stop the daemon
            log.error("--save: could not write %s: %s", wav, error)
            return
        self.saved.append(wav)
        log.info("--save: kept the %s of %r (score %.3f) as %s", event.kind, event.keyword, event.score, wav)
        self._enforce_cap()

    @staticmethod
    def _write_json(path: Path, record: dict) -> None:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(record, handle, ensure_ascii=False, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _enforce_cap(self) -> None:
        """Keep at most ``max_clips`` of this saver's clips in the folder: the oldest go, said in the log."""
        clips = sorted(self.folder.glob(f"{CLIP_PREFIX}*.wav"))  # names start with the time: oldest first
        excess = clips[: max(0, len(clips) - self.max_clips)]
        for wav in excess:
            wav.unlink(missing_ok=True)
            wav.with_suffix(".json").unlink(missing_ok=True)
            if wav in self.saved:
                self.saved.remove(wav)
        if excess:
            self._deleted += len(excess)
            log.warning(
                "--save: %s holds the newest %d clips (--save-max): deleted the oldest, %s (%d deleted so far)",
                self.folder,
                self.max_clips,
                excess[0].name,
                self._deleted,
            )
