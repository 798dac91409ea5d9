"""Streaming detection: audio chunks in, keyword events out.

chunks (any size, float or 16-bit PCM) -> incremental log-mel -> every ``hop_frames``
frames of stream time, the last ``window_frames`` frames -> one encoder run -> cosine
against every prototype of every keyword (one matrix product: an extra keyword costs a
dot product, not a model run) -> mean over the last few hops -> compared with each
keyword's threshold at its sensitivity (:mod:`device.sensitivity`). An energy gate skips
the encoder while the window holds nothing louder than the room's floor.

Why runs sit at fixed frame positions: the frontend is bit-identical however the audio
is chunked, so windows ending at multiples of ``hop_frames`` give the same scores, and so
the same events, for 160-sample chunks (the Wyoming server), 0.1 s chunks (``kws
detect``) or a whole file. An event is the utterance's peak: a keyword that passes its
threshold is held until its score falls back under it, or ``max_hold_seconds`` after it
first passed (so a long plateau still fires promptly), and fires with the highest score
it reached. When several keywords pass on one utterance only the one with the largest
margin over its threshold fires; all of them then sit out the refractory period.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from device.encoder import Encoder
from device.frontend import LogMelStream
from device.sensitivity import DEFAULT_SENSITIVITY, check_sensitivity, threshold_at
from device.store import Keyword

# Called once per encoder hop with (stream time at the window's end, smoothed score per keyword, thresholds).
HopListener = Callable[[float, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class Detection:
    keyword: str
    time_s: float  # end of the detected word, seconds since the stream started
    score: float  # the highest smoothed score over the utterance

    def to_dict(self) -> dict:
        return {"keyword": self.keyword, "time_s": round(self.time_s, 3), "score": round(self.score, 4)}


@dataclass(frozen=True)
class DetectorSettings:
    hop_seconds: float = 0.1  # how often the encoder runs
    smoothing_hops: int = 2  # scores are averaged over this many hops
    refractory_seconds: float = 1.5  # a keyword cannot fire again within this time
    gate_db: float | None = -62.0  # skip the encoder while every frame is quieter than this (dBFS-like); None: off
    # 0..1 for keywords without their own (`kws set NAME --sensitivity`): 0.5 = as calibrated, higher = more sensitive
    sensitivity: float = DEFAULT_SENSITIVITY
    sensitivity_override: float | None = None  # every keyword at this sensitivity (`--sensitivity` on one run)
    # Fire at most this long after the score first passed, even if still rising. 0.3 s: events a median 172 ms
    # (at most 282 ms) after the end of the word, 14 of 14 found (scripts/event_latency.py); 0.4 s: 272 ms.
    max_hold_seconds: float = 0.3
    best_only: bool = True  # several keywords passing on one utterance: only the largest margin fires

    def __post_init__(self) -> None:
        """Refuse values that would run but misbehave (``smoothing_hops = 0`` detects nothing, a
        negative hop silently runs the encoder every frame), naming the setting and its range."""
        check_sensitivity(self.sensitivity, "detector sensitivity")
        if self.sensitivity_override is not None:
            check_sensitivity(self.sensitivity_override, "--sensitivity")
        _check_number("hop_seconds", self.hop_seconds, 0.01, 1.0, "seconds between encoder runs")
        _check_number("refractory_seconds", self.refractory_seconds, 0.0, 60.0, "seconds")
        _check_number("max_hold_seconds", self.max_hold_seconds, 0.01, 5.0, "seconds")
        if self.gate_db is not None:
            _check_number("gate_db", self.gate_db, -120.0, 0.0, "dBFS")
        hops = self.smoothing_hops
        if type(hops) is not int or not 1 <= hops <= 50:
            raise ValueError(f"smoothing_hops is {hops!r}: a whole number of hops from 1 to 50 (default 2)")
        if type(self.best_only) is not bool:
            raise ValueError(f"best_only is {self.best_only!r}: true or false")

    def sensitivity_of(self, keyword: Keyword) -> float:
        """The run's override, else the keyword's stored sensitivity, else the configured default."""
        if self.sensitivity_override is not None:
            return self.sensitivity_override
        return keyword.sensitivity if keyword.sensitivity is not None else self.sensitivity

    def threshold_of(self, keyword: Keyword) -> float:
        return threshold_at(keyword.threshold, keyword.stats, self.sensitivity_of(keyword))


def _check_number(name: str, value: object, low: float, high: float, unit: str) -> None:
    default = next(f.default for f in fields(DetectorSettings) if f.name == name)
    if type(value) not in (int, float) or not low <= value <= high:  # NaN fails the range too
        raise ValueError(f"{name} is {value!r}: a number of {unit} from {low:g} to {high:g} (default {default:g})")


def as_samples(samples: object) -> np.ndarray:
    """Mono float32 samples from float32/float64 arrays, int16 arrays (/32768) or 16-bit little-endian PCM bytes.

    Why so strict: a wrong type used to pass silently (int16 read as floats 32768 times too
    loud, a stereo block as twice the samples) and simply never detected anything. The
    message names what was given (type, dtype, shape, byte count), never the data.
    """
    if isinstance(samples, (bytes, bytearray, memoryview)):
        data = memoryview(samples).cast("B") if isinstance(samples, memoryview) else samples
        if len(data) % 2:
            raise ValueError(
                f"PCM bytes must be 16-bit little-endian samples (an even byte count), got {len(data)} bytes"
            )
        return (np.frombuffer(data, dtype="<i2").astype(np.float32)) / np.float32(32768.0)
    if not isinstance(samples, np.ndarray):
        raise TypeError(
            f"audio must be a numpy array (float32/float64 or int16) or 16-bit PCM bytes, got {type(samples).__name__}"
        )
    if samples.ndim != 1:
        raise ValueError(
            f"audio must be mono, a 1-D array, got shape {samples.shape}; mix channels first (e.g. x.mean(axis=1))"
        )
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(32768.0)
    if samples.dtype in (np.float32, np.float64):
        return samples.astype(np.float32, copy=False)
    raise TypeError(f"audio must be float32, float64 or int16 samples, got dtype {samples.dtype}")


@dataclass
class _Pending:
    """A keyword that passed its threshold on the current utterance and has not fired yet."""

    peak: float  # highest smoothed score so far
    time_s: float  # end of the word, judged from the window at the peak
    margin: float  # peak minus the keyword's threshold
    first_hop: int  # the hop it first passed


class StreamingDetector:
    """Stateful detector for one audio stream; ``process`` accepts chunks of any size."""

    def __init__(
        self,
        encoder: Encoder,
        keywords: list[Keyword],
        settings: DetectorSettings | None = None,
        on_hop: HopListener | None = None,
    ) -> None:
        self.encoder = encoder
        self.settings = settings or DetectorSettings()
        self.on_hop = on_hop  # sees every hop's scores (``kws detect --scores``, ``kws listen --debug``)
        frontend = encoder.manifest.frontend
        self._frame_seconds = frontend.hop_samples / frontend.sample_rate
        self._hop_frames = max(1, round(self.settings.hop_seconds / self._frame_seconds))
        self._hold_hops = max(1, round(self.settings.max_hold_seconds / (self._hop_frames * self._frame_seconds)))
        # log-mel energy of a frame whose samples have this RMS (a Hann window keeps ~0.375 of the power)
        self._gate = None if self.settings.gate_db is None else self._mel_energy_for_db(self.settings.gate_db)
        self.keywords: list[Keyword] = []
        self._blocked_until = np.zeros(0)
        self._pending: dict[str, _Pending] = {}
        self.set_keywords(keywords)
        self.reset()

    def _mel_energy_for_db(self, db: float) -> float:
        c = self.encoder.manifest.frontend
        power_per_bin = (10 ** (db / 10)) * c.window_samples * 0.375
        return float(np.log(power_per_bin * (c.fft_size // 2) + c.log_floor))

    def set_keywords(self, keywords: list[Keyword]) -> None:
        """Replace the keywords (e.g. after the store changed) without losing stream state.

        Refractory state and an utterance still being held carry over by name, so a reload
        just after (or during) a detection cannot make the same utterance fire twice.
        """
        blocked = dict(zip([k.name for k in self.keywords], self._blocked_until, strict=True))
        self.keywords = list(keywords)
        rows, owners = [], []
        for index, keyword in enumerate(self.keywords):
            rows.append(keyword.prototype_matrix())
            owners += [index] * len(keyword.prototypes)
        dim = self.encoder.embedding_size
        self._prototypes = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
        self._owners = np.asarray(owners, dtype=np.int64)
        self.thresholds = np.array([self.settings.threshold_of(k) for k in self.keywords], dtype=np.float64)
        self._recent = deque(maxlen=self.settings.smoothing_hops)
        self._blocked_until = np.array([blocked.get(k.name, -np.inf) for k in self.keywords], dtype=float)
        names = {k.name for k in self.keywords}
        self._pending = {name: p for name, p in self._pending.items() if name in names}

    def reset(self) -> None:
        """Start a new stream: forget audio, scores, held utterances and refractory state."""
        self._frontend = LogMelStream(self.encoder.manifest.frontend)
        self._frames = np.zeros((0, self.encoder.manifest.frontend.num_mels), np.float32)
        self._frames_seen = 0
        self._hops = 0
        self._recent = deque(maxlen=self.settings.smoothing_hops)
        self._blocked_until = np.full(len(self.keywords), -np.inf)
        self._pending = {}
        self.encoder_runs = 0
        self.last_scores = np.zeros(len(self.keywords))

    @property
    def time_s(self) -> float:
        """Stream time at the end of the newest frame."""
        return self._frames_seen * self._frame_seconds

    def process(self, samples: np.ndarray | bytes | bytearray | memoryview) -> list[Detection]:
        """Feed mono samples at the model's rate (see :func:`as_samples`); return the detections they complete."""
        new = self._frontend.feed(as_samples(samples))
        if len(new) == 0:
            return []
        window, hop = self.encoder.window_frames, self._hop_frames
        combined = np.concatenate([self._frames, new])
        offset = self._frames_seen - len(self._frames)  # stream frame index of combined[0]
        total = self._frames_seen + len(new)
        detections = []
        # Windows end at stream frames that are multiples of the hop, wherever the chunks end.
        first = max(window, (self._frames_seen // hop + 1) * hop)
        for end in range(first, total + 1, hop):
            detections += self._evaluate(combined[end - window - offset : end - offset], end * self._frame_seconds)
        self._frames_seen = total
        self._frames = combined[-window:]
        return detections

    def _evaluate(self, window_frames: np.ndarray, now: float) -> list[Detection]:
        energy = np.log(np.sum(np.exp(window_frames.astype(np.float64)), axis=1))
        if len(self.keywords) == 0 or (self._gate is not None and energy.max() < self._gate):
            scores = np.zeros(len(self.keywords))
        else:
            embedding = self.encoder.embed_frames(window_frames)
            self.encoder_runs += 1
            per_prototype = self._prototypes @ embedding
            scores = np.full(len(self.keywords), -1.0)
            np.maximum.at(scores, self._owners, per_prototype)
        self._recent.append(scores)
        smoothed = np.mean(self._recent, axis=0)
        self.last_scores = smoothed
        self._hops += 1
        if self.on_hop is not None:
            self.on_hop(now, smoothed, self.thresholds)
        return self._decide(smoothed, energy, now)

    def _decide(self, smoothed: np.ndarray, energy: np.ndarray, now: float) -> list[Detection]:
        """Hold passing keywords until their utterance ends, then fire its peak (the best keyword's only)."""
        above = smoothed >= self.thresholds
        for index in np.nonzero(above & (now >= self._blocked_until))[0]:
            name, score = self.keywords[index].name, float(smoothed[index])
            held = self._pending.get(name)
            if held is None or score > held.peak:
                first = held.first_hop if held else self._hops
                word_end = self._word_end(energy, now)
                self._pending[name] = _Pending(score, word_end, score - self.thresholds[index], first)
        if not self._pending:
            return []
        index_of = {k.name: i for i, k in enumerate(self.keywords)}
        done = {
            name: not above[index_of[name]] or self._hops - held.first_hop >= self._hold_hops
            for name, held in self._pending.items()
        }
        if self.settings.best_only:
            # One utterance, one group: it ends when every member has ended or the first one's hold runs out.
            first = min(held.first_hop for held in self._pending.values())
            if not (all(done.values()) or self._hops - first >= self._hold_hops):
                return []
            group = list(self._pending)
            winners = [max(group, key=lambda name: self._pending[name].margin)]
        else:
            group = winners = [name for name, finished in done.items() if finished]
        detections = [Detection(name, self._pending[name].time_s, self._pending[name].peak) for name in winners]
        for name in group:
            self._blocked_until[index_of[name]] = now + self.settings.refractory_seconds
            del self._pending[name]
        return detections

    def _word_end(self, energy: np.ndarray, now: float) -> float:
        """Time of the last frame within 30 dB of the window's loudest and 10 dB above its quietest tenth.

        The floor term matters in a noisy room: with less than 30 dB between voice and noise,
        every noise frame is within 30 dB of the peak and the word would seem to end "now".
        """
        floor = float(np.percentile(energy, 10))
        level = min(energy.max(), max(energy.max() - np.log(10**3), floor + np.log(10.0)))
        active = np.nonzero(energy >= level)[0]
        frames_from_end = len(energy) - 1 - int(active[-1])
        return max(0.0, now - frames_from_end * self._frame_seconds)
