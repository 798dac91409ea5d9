"""The negative bank shipped beside each model: embeddings of windows that are *not* a keyword.

Enrollment calibrates a keyword's threshold against it (see ``device.enroll``),
so it must look like what the detector hears between wake words: continuous
real speech (read sentences), runs of other words, and room noise, cut into
windows exactly as the streaming detector cuts them and embedded by the int8
model itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.encoder import Encoder
from device.frontend import log_mel
from trainer.augment import coloured_noise
from trainer.pipeline import load_audio
from trainer.sentences import sentence_files, split_by_speaker

log = logging.getLogger(__name__)


def _windows(audio: np.ndarray, encoder: Encoder, hop_seconds: float, rng: np.random.Generator) -> list[np.ndarray]:
    frames = log_mel(audio + rng.normal(0, 1e-4, len(audio)).astype(np.float32), encoder.manifest.frontend)
    hop = max(1, int(round(hop_seconds * 100)))
    return [frames[s : s + encoder.window_frames] for s in range(0, len(frames) - encoder.window_frames + 1, hop)]


def speech_runs(
    folders: Sequence[Path], clips: Sequence[Path], seed: int, bank_fraction: float = 0.0
) -> Iterator[np.ndarray]:
    """Continuous speech: every audio file under ``folders`` (shuffled), else runs of 6 random ``clips``.

    With ``bank_fraction`` > 0 only the bank's share of speakers (``trainer.sentences.split_by_speaker``)
    is used: the rest may be training data.
    """
    rng = np.random.default_rng(seed)
    _, files = split_by_speaker(sentence_files(folders), bank_fraction)
    if files:
        for i in rng.permutation(len(files)):
            yield load_audio(files[i])
        return
    if not clips:
        return
    for _ in range(10 * len(clips)):
        yield np.concatenate([load_audio(clips[i]) for i in rng.choice(len(clips), 6)])


def build_negative_bank(
    encoder: Encoder,
    speech: Iterable[np.ndarray],
    noise: Sequence[np.ndarray],
    count: int,
    seed: int,
) -> np.ndarray:
    """``count`` embeddings (float16): speech windows every 0.3 s (85 %), noise windows (the rest)."""
    rng = np.random.default_rng(seed)
    windows: list[np.ndarray] = []
    speech_target = int(count * 0.85)
    with tqdm(total=speech_target, desc="negative bank: speech windows") as progress:
        for audio in speech:
            if len(windows) >= speech_target:
                break
            new = _windows(audio, encoder, 0.3, rng)
            windows += new
            progress.update(len(new))
    samples = encoder.window_samples
    noise_sources = list(noise) or [coloured_noise(samples * 10, rng, e) * 0.01 for e in (0.0, 1.0, 2.0)]
    while len(windows) < count:
        source = noise_sources[rng.integers(len(noise_sources))]
        start = rng.integers(0, max(1, len(source) - samples))
        gain = 10 ** rng.uniform(-2.5, 0.5)
        windows += _windows(np.resize(source[start : start + samples], samples) * gain, encoder, 1.0, rng)
    picks = rng.choice(len(windows), count, replace=False)
    bank = np.stack([encoder.embed_frames(windows[i]) for i in tqdm(picks, desc="negative bank: embed")])
    return bank.astype(np.float16)
