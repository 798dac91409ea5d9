"""Streaming detection: audio chunks in, keyword events out.

chunks (any size) -> incremental log-mel -> last ``window_frames`` frames, every hop
-> one encoder run -> cosine against every prototype of every keyword (one matrix
product: an extra keyword costs a dot product, not a model run) -> mean over the
last few hops -> an event when it reaches the keyword's threshold, then a
refractory period so one utterance fires once. An energy gate skips the encoder
while the window holds nothing louder than the room's floor.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from device.encoder import Encoder
from device.frontend import LogMelStream
from device.store import Keyword


@dataclass(frozen=True)
class Detection:
    keyword: str
    time_s: float  # end of the detected word, seconds since the stream started
    score: float

    def to_dict(self) -> dict:
        return {"keyword": self.keyword, "time_s": round(self.time_s, 3), "score": round(self.score, 4)}


@dataclass(frozen=True)
class DetectorSettings:
    hop_seconds: float = 0.1  # how often the encoder runs
    smoothing_hops: int = 2  # scores are averaged over this many hops
    refractory_seconds: float = 1.5  # a keyword cannot fire again within this time
    gate_db: float = -62.0  # skip the encoder while every frame is quieter than this (dBFS-like); None: off
    threshold_offset: float = 0.0  # added to every keyword's threshold (more negative: more sensitive)


class StreamingDetector:
    """Stateful detector for one audio stream; ``process`` accepts chunks of any size."""

    def __init__(self, encoder: Encoder, keywords: list[Keyword], settings: DetectorSettings | None = None) -> None:
        self.encoder = encoder
        self.settings = settings or DetectorSettings()
        frontend = encoder.manifest.frontend
        self._frame_seconds = frontend.hop_samples / frontend.sample_rate
        self._hop_frames = max(1, round(self.settings.hop_seconds / self._frame_seconds))
        # log-mel energy of a frame whose samples have this RMS (a Hann window keeps ~0.375 of the power)
        self._gate = None if self.settings.gate_db is None else self._mel_energy_for_db(self.settings.gate_db)
        self.keywords: list[Keyword] = []
        self._blocked_until = np.zeros(0)
        self.set_keywords(keywords)
        self.reset()

    def _mel_energy_for_db(self, db: float) -> float:
        c = self.encoder.manifest.frontend
        power_per_bin = (10 ** (db / 10)) * c.window_samples * 0.375
        return float(np.log(power_per_bin * (c.fft_size // 2) + c.log_floor))

    def set_keywords(self, keywords: list[Keyword]) -> None:
        """Replace the keywords (e.g. after the store changed) without losing stream state.

        Refractory state carries over by name, so a reload just after a detection
        cannot make the same utterance fire twice.
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
        self._thresholds = np.array([k.threshold for k in self.keywords]) + self.settings.threshold_offset
        self._recent = deque(maxlen=self.settings.smoothing_hops)
        self._blocked_until = np.array([blocked.get(k.name, -np.inf) for k in self.keywords], dtype=float)

    def reset(self) -> None:
        """Start a new stream: forget audio, scores and refractory state."""
        self._frontend = LogMelStream(self.encoder.manifest.frontend)
        self._frames = np.zeros((0, self.encoder.manifest.frontend.num_mels), np.float32)
        self._frames_seen = 0
        self._since_eval = 0
        self._recent = deque(maxlen=self.settings.smoothing_hops)
        self._blocked_until = np.full(len(self.keywords), -np.inf)
        self.encoder_runs = 0
        self.last_scores = np.zeros(len(self.keywords))

    @property
    def time_s(self) -> float:
        """Stream time at the end of the newest frame."""
        return self._frames_seen * self._frame_seconds

    def process(self, samples: np.ndarray) -> list[Detection]:
        """Feed mono float32 samples at the model's rate; return the detections they complete."""
        new = self._frontend.feed(samples)
        if len(new) == 0:
            return []
        window, hop = self.encoder.window_frames, self._hop_frames
        combined = np.concatenate([self._frames, new])
        start = len(self._frames)
        detections = []
        # About one encoder run per hop, each on a window ending at the newest frame received: a window
        # ending mid-chunk would ignore up to a chunk of audio already here (85 ms with 0.1 s chunks).
        # A chunk spanning several hops also gets runs a whole number of hops before its end.
        due = self._since_eval + len(new)
        runs = min(due // hop, (len(new) - 1) // hop + 1)
        for k in reversed(range(runs)):
            end = start + len(new) - k * hop
            if end >= window:
                now = (self._frames_seen + len(new) - k * hop) * self._frame_seconds
                detections += self._evaluate(combined[end - window : end], now)
        self._since_eval = min(due - runs * hop, hop - 1)  # keep the average rate at one run per hop
        self._frames_seen += len(new)
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
        detections = []
        for index in np.nonzero((smoothed >= self._thresholds) & (now >= self._blocked_until))[0]:
            self._blocked_until[index] = now + self.settings.refractory_seconds
            detections.append(Detection(self.keywords[index].name, self._word_end(energy, now), float(smoothed[index])))
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
