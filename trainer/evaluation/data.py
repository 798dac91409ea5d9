"""Evaluation data: where the shared sets live, which clips an evaluation uses, their audio.

Clips are decoded once into memory (float32, 16 kHz, untrimmed: every method trims in its
own way) and every method then works from the same arrays, so ours, the teacher and DTW
are compared on identical inputs. Nothing here imports TensorFlow: ``trainer.config``
does (through the model module), so the shared-root rule is repeated here.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.audio import resample
from trainer.datasets import Clip, read_dataset
from trainer.pipeline import load_audio
from trainer.reserved import is_reserved

REPO_ROOT = Path(__file__).resolve().parents[2]
NOISE_WORD = "<noise>"  # label of background-noise items; never an episode word


def shared_root() -> Path:
    """The shared data folder: ``$KWS_SHARED`` or ``../shared`` beside the checkout (as ``trainer.config``)."""
    return Path(os.environ.get("KWS_SHARED", REPO_ROOT.parent / "shared"))


def shared_data(name: str) -> Path:
    return shared_root() / "data" / name


def default_model_path() -> Path:
    return REPO_ROOT / "firmware_models" / "encoder.tflite"


def select_words(clips: Sequence[Clip], words: str) -> list[Clip]:
    """Filter by a word rule: ``reserved`` (never trained on), ``all``, or ``lang:XX`` (one language)."""
    if words == "all":
        return list(clips)
    if words == "reserved":
        return [c for c in clips if is_reserved(c.spoken_text)]
    if words.startswith("lang:"):
        lang = words.split(":", 1)[1]
        return [c for c in clips if c.lang == lang]
    raise ValueError(f"unknown word rule {words!r}: use reserved, all or lang:XX")


def read_clips(root: str | Path, words: str = "reserved") -> list[Clip]:
    """A dataset in any supported layout, filtered by ``words`` (see :func:`select_words`)."""
    clips = select_words(read_dataset(root), words)
    if not clips:
        raise ValueError(f"no clips in {root} match the word rule {words!r}")
    return clips


def _load(path: Path) -> np.ndarray:
    return load_audio(path)


def load_audios(paths: Sequence[Path], workers: int = 0, desc: str = "decoding") -> list[np.ndarray]:
    """Decode clips in parallel (fork pool; ``workers`` 0 = every core) with a progress bar."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 64:
        return [_load(p) for p in tqdm(paths, desc=desc, unit="clip", leave=False)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        it = pool.imap(_load, paths, chunksize=32)
        return list(tqdm(it, total=len(paths), desc=desc, unit="clip", leave=False))


def through_rate(samples: np.ndarray, rate: int, native_rate: int = 16000) -> np.ndarray:
    """``samples`` resampled to ``rate`` and back: what a recording made at ``rate`` sounds like to the device."""
    return resample(resample(samples, native_rate, rate), rate, native_rate)[: len(samples)]


def load_noise(folder: str | Path) -> list[np.ndarray]:
    """Every background recording under ``folder``, each scaled to unit RMS (levels are set by the caller)."""
    out = []
    for path in sorted(Path(folder).rglob("*.wav")):
        audio = load_audio(path).astype(np.float64)
        rms = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
        if rms > 0:
            out.append((audio / rms).astype(np.float32))
    if not out:
        raise FileNotFoundError(f"no background-noise wavs under {folder}")
    return out


def noise_windows(
    noise: Sequence[np.ndarray], count: int, seconds: float, rng: np.random.Generator, rate: int = 16000
) -> list[np.ndarray]:
    """Open-set "nothing was said" queries: noise crops at -70..-30 dBFS RMS (quiet room to loud appliance)."""
    size = int(seconds * rate)
    out = []
    for _ in range(count):
        source = noise[rng.integers(len(noise))]
        start = int(rng.integers(0, max(1, len(source) - size)))
        window = np.resize(source[start : start + size], size)
        out.append((window * 10.0 ** (rng.uniform(-70.0, -30.0) / 20.0)).astype(np.float32))
    return out


@dataclass
class ItemBank:
    """Everything one evaluation scores: clips (and noise windows), their labels and audio.

    Episodes are index arithmetic over this bank; embeddings and DTW features are computed
    once per item. ``kind`` is ``clip`` or ``noise``; noise items carry :data:`NOISE_WORD`.
    """

    name: str
    words: np.ndarray  # [N] str
    speakers: np.ndarray  # [N] str
    kinds: np.ndarray  # [N] str
    audio: list[np.ndarray]
    clips: list[Clip | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.audio)

    @property
    def clip_indices(self) -> np.ndarray:
        return np.nonzero(self.kinds == "clip")[0]

    @property
    def noise_indices(self) -> np.ndarray:
        return np.nonzero(self.kinds == "noise")[0]

    @classmethod
    def from_clips(
        cls,
        name: str,
        clips: Sequence[Clip],
        audio: Sequence[np.ndarray],
        noise: Sequence[np.ndarray] = (),
    ) -> ItemBank:
        words = [c.word for c in clips] + [NOISE_WORD] * len(noise)
        speakers = [c.speaker_key for c in clips] + [f"noise:{i}" for i in range(len(noise))]
        kinds = ["clip"] * len(clips) + ["noise"] * len(noise)
        return cls(
            name,
            np.array(words),
            np.array(speakers),
            np.array(kinds),
            list(audio) + list(noise),
            list(clips) + [None] * len(noise),
        )

    def summary(self) -> dict:
        clip = self.clip_indices
        return {
            "clips": int(len(clip)),
            "words": int(len(set(self.words[clip]))),
            "speakers": int(len(set(self.speakers[clip]))),
            "noise_windows": int(len(self.noise_indices)),
        }
