"""Windows of unlabelled real speech (read sentences) for training: open-set queries and teacher targets.

Between wake words the detector hears mostly continuous speech: word fragments,
two words straddling a window, voices it never met. Words cut from a word corpus
never show it that. Read sentences do, and they need no labels to be useful twice:
as "none of these" queries in every episode (their windows must land near no
prototype), and as inputs for distillation (the teacher's embedding of each window
is a target, cached on disk like every other teacher target). Windows are cut once,
at a fixed hop, so each one has exactly one cached teacher vector.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trainer.pipeline import load_audio

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".opus", ".flac")
# A window is kept when its RMS is within this many dB of the loudest window of its file:
# pauses between sentences and leading silence teach the open-set loss nothing noise windows do not.
_QUIET_WINDOW_DB = -20.0


def sentence_files(folders: Sequence[Path]) -> list[Path]:
    """Every audio file under ``folders``, sorted (a missing folder is skipped with one line)."""
    files: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            log.warning("sentence folder %s is absent: skipped", folder)
            continue
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    return files


def is_bank_speaker(path: Path, fraction: float) -> bool:
    """Whether the file's speaker (its folder) belongs to the negative bank rather than to training.

    The bank calibrates thresholds, so it must sound like speech the model has never been
    pushed away from; a stable hash of the folder name splits speakers the same way in the
    trainer and in the exporter, on every machine, with no list to keep in sync.
    """
    digest = hashlib.sha1(path.parent.name.encode()).digest()
    return int.from_bytes(digest[:4], "big") < fraction * 2**32


def split_by_speaker(files: Sequence[Path], bank_fraction: float) -> tuple[list[Path], list[Path]]:
    """``(training files, bank files)``; with ``bank_fraction`` <= 0 every file serves both."""
    if bank_fraction <= 0:
        return list(files), list(files)
    training: list[Path] = []
    bank: list[Path] = []
    for f in files:
        (bank if is_bank_speaker(f, bank_fraction) else training).append(f)
    return training, bank


def cut_windows(audio: np.ndarray, window_samples: int, hop_samples: int) -> list[tuple[int, np.ndarray]]:
    """``(start, int16 window)`` every ``hop_samples``, minus windows far quieter than the file's loudest."""
    starts = range(0, len(audio) - window_samples + 1, hop_samples)
    windows = [(s, audio[s : s + window_samples]) for s in starts]
    if not windows:
        return []
    levels = np.array([np.sqrt(np.mean(np.square(w, dtype=np.float64))) + 1e-9 for _, w in windows])
    keep = 20.0 * np.log10(levels / levels.max()) >= _QUIET_WINDOW_DB
    return [
        (s, np.clip(np.round(w * 32767.0), -32768, 32767).astype(np.int16))
        for (s, w), k in zip(windows, keep, strict=True)
        if k
    ]


def _file_windows(path: Path, window_samples: int, hop_samples: int) -> list[tuple[Path, np.ndarray]]:
    return [
        (Path(f"{path}#{start}"), window)
        for start, window in cut_windows(load_audio(path), window_samples, hop_samples)
    ]


def load_sentence_windows(
    folders: Sequence[Path],
    window_samples: int,
    bank_fraction: float = 0.0,
    hop_seconds: float = 0.6,
    workers: int | None = None,
) -> tuple[list[np.ndarray], list[Path]]:
    """Kept windows (int16) of every sentence file whose speaker is not a bank speaker, and their keys
    (``file#start``, for the teacher cache)."""
    files, _ = split_by_speaker(sentence_files(folders), bank_fraction)
    if not files:
        return [], []
    cut = partial(_file_windows, window_samples=window_samples, hop_samples=int(hop_seconds * 16000))
    windows: list[np.ndarray] = []
    keys: list[Path] = []
    with multiprocessing.get_context("fork").Pool(workers or os.cpu_count() or 1) as pool:
        for pairs in tqdm(pool.imap(cut, files, chunksize=16), total=len(files), desc="cutting sentences", unit="file"):
            keys += [key for key, _ in pairs]
            windows += [window for _, window in pairs]
    log.info("%d sentence windows of %.2f s from %d files", len(windows), window_samples / 16000, len(files))
    return windows, keys
