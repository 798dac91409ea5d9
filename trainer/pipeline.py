"""From clips to episode tensors, left to right: audio -> augmentation -> log-mel -> episodes.

Audio is decoded once into memory (trimmed with the device's own trimming).
Episodes are then built on the fly in worker processes: every window is
augmented afresh, so no two epochs see the same input, and episode ``i`` of a
run with seed ``s`` is always the same (its random generator is seeded by
``(s, i)``, whatever worker builds it), which makes runs repeatable and resumable.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.audio import read_wav, resample
from device.frontend import FrontendConfig, log_mel
from device.noise import coloured_noise
from device.vad import trim_silence
from device.windowing import centre_in_window
from trainer.augment import Augmenter
from trainer.datasets import Clip
from trainer.episodes import Episode, EpisodeConfig, EpisodeSampler

log = logging.getLogger(__name__)


def load_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """Any clip as mono float32 at ``rate``: wav with the device's reader, other codecs with soundfile."""
    path = Path(path)
    if path.suffix.lower() == ".wav":
        return read_wav(path, rate)
    import soundfile

    data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(data.mean(axis=1), file_rate, rate)


def _load_trimmed(path: Path) -> np.ndarray:
    audio = trim_silence(load_audio(path))
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def load_bank(clips: Sequence[Clip], workers: int | None = None, desc: str = "decoding clips") -> list[np.ndarray]:
    """Decode and trim every clip (int16 to halve memory), in parallel, with a progress bar."""
    workers = workers or os.cpu_count() or 1
    paths = [c.path for c in clips]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(_load_trimmed, paths, chunksize=64), total=len(paths), desc=desc, unit="clip"))


class EpisodeMaker:
    """Turns sampled episodes into feature tensors ``[episode.size, window_frames, num_mels]``."""

    def __init__(
        self,
        bank: Sequence[np.ndarray],
        labels: Sequence[str],
        episode_config: EpisodeConfig,
        augmenter: Augmenter | None,
        noise_bank: Sequence[np.ndarray],
        window_frames: int,
        frontend: FrontendConfig,
        seed: int,
        focus_words: Collection[str] = (),
        focus_fraction: float = 0.0,
        sentences: Sequence[np.ndarray] = (),
    ) -> None:
        if episode_config.sentence_queries and not sentences:
            raise ValueError("episodes ask for sentence windows, but none were given")
        self.bank = bank
        self.sentences = sentences
        self.sampler = EpisodeSampler(labels, episode_config, focus_words, focus_fraction)
        self.words = sorted(set(labels))
        lookup = {word: i for i, word in enumerate(self.words)}
        self.word_ids = np.array([lookup[word] for word in labels], dtype=np.int32)
        self.config = episode_config
        self.augmenter = augmenter
        self.noise_bank = noise_bank
        self.frontend = frontend
        self.window_frames = window_frames
        self.window_samples = frontend.samples_for_frames(window_frames)
        self.seed = seed

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def episode(self, index: int) -> tuple[Episode, np.random.Generator]:
        rng = self.rng(index)
        return self.sampler.sample(rng), rng

    def features(self, index: int) -> np.ndarray:
        """Episode ``index``'s windows in the order the loss expects (see ``losses.episode_loss``)."""
        return self.features_and_labels(index)[0]

    def features_and_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Windows and their indices: into the bank, ``len(bank) + j`` for sentence window ``j``, -1 for noise."""
        episode, rng = self.episode(index)
        order = np.concatenate([episode.support.reshape(-1), episode.query.reshape(-1), episode.unknown])
        windows = [self._speech_window(self.bank[i], rng) for i in order]
        sentence_picks = rng.integers(0, max(1, len(self.sentences)), self.config.sentence_queries)
        windows += [self._speech_window(self.sentences[j], rng) for j in sentence_picks]
        windows += [self._noise_window(rng) for _ in range(self.config.noise_queries)]
        labels = np.concatenate([order, len(self.bank) + sentence_picks, np.full(self.config.noise_queries, -1)])
        labels = labels.astype(np.int32)
        return np.stack([self._to_features(w, rng) for w in windows]), labels

    def _speech_window(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        speech = clip.astype(np.float32) / 32768.0
        if self.augmenter is None:
            return centre_in_window(speech, self.window_samples)
        return self.augmenter(speech, self.window_samples, rng)

    def _noise_window(self, rng: np.random.Generator) -> np.ndarray:
        """Background noise, coloured noise or near-silence: what the detector hears most of the time."""
        kind = rng.random()
        if kind < 0.5 and self.noise_bank:
            noise = self.noise_bank[rng.integers(len(self.noise_bank))]
            start = rng.integers(0, max(1, len(noise) - self.window_samples))
            window = np.resize(noise[start : start + self.window_samples], self.window_samples)
        elif kind < 0.85:
            window = coloured_noise(self.window_samples, rng)
        else:
            window = rng.normal(0.0, 1.0, self.window_samples)
        level = 10.0 ** rng.uniform(-4.5, -1.0)  # -90 to -20 dBFS RMS
        rms = float(np.sqrt(np.mean(np.square(window)))) + 1e-12
        return (window * (level / rms)).astype(np.float32)

    def _to_features(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        features = log_mel(window, self.frontend)
        if self.augmenter is not None:
            features = self.augmenter.augment_features(features, rng)
        return features.astype(np.float32)


_WORKER_MAKER: EpisodeMaker | None = None


def _worker_features(index: int) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_MAKER is not None
    return _WORKER_MAKER.features_and_labels(index)


def stream_episodes(maker: EpisodeMaker, start: int, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Episodes ``start, start+1, ...`` in order, built by ``workers`` forked processes."""
    global _WORKER_MAKER
    _WORKER_MAKER = maker  # inherited by the forked workers, not pickled per task
    if workers <= 0:
        index = start
        while True:
            yield maker.features_and_labels(index)
            index += 1
    depth = 2 * workers  # bounded read-ahead: Pool.imap would queue an endless range eagerly
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending = deque(pool.apply_async(_worker_features, (i,)) for i in range(start, start + depth))
        index = start + depth
        while True:
            features = pending.popleft().get()
            pending.append(pool.apply_async(_worker_features, (index,)))
            index += 1
            yield features
