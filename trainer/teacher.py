"""Google's speech embedding as a distillation teacher (training time only, never shipped).

Fed as its README in ``../shared/models/speech_embedding`` says (openWakeWord's
``AudioFeatures``): 16 kHz audio as float32 int16-scale values -> ``melspectrogram``
-> ``x / 10 + 2`` -> windows of 76 frames every 8 frames -> ``embedding_model`` ->
96-dim vectors, mean-pooled over a 1.5 s window with the word centred. Digital
silence is dithered (about 3 int16 steps) because exact zeros push its mel values
far outside anything it was trained on.

Targets are cached on disk, keyed by clip path and the preprocessing version, so
each clip is embedded once however many runs use it.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.vad import trim_silence
from trainer.config import shared_root

log = logging.getLogger(__name__)

TEACHER_WINDOW_SECONDS = 1.5
CACHE_VERSION = "v1-centred1.5s-dither3"


def teacher_dir() -> Path:
    return shared_root() / "models" / "speech_embedding"


class SpeechEmbeddingTeacher:
    """The two ONNX parts of the teacher on onnxruntime, one thread."""

    def __init__(self, folder: Path | None = None) -> None:
        import onnxruntime as ort

        folder = folder or teacher_dir()
        if not (folder / "embedding_model.onnx").is_file():
            raise FileNotFoundError(f"teacher model not found in {folder}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._mel = ort.InferenceSession(str(folder / "melspectrogram.onnx"), options, providers=providers)
        self._embed = ort.InferenceSession(str(folder / "embedding_model.onnx"), options, providers=providers)

    def window_embeddings(self, samples: np.ndarray) -> np.ndarray:
        """``[windows, 96]`` for float audio in [-1, 1] at 16 kHz (at least 0.775 s)."""
        scaled = (np.asarray(samples, np.float32) * 32767.0)[None]
        mel = self._mel.run(None, {"input": scaled})[0].squeeze() / 10.0 + 2.0  # [frames, 32]
        starts = range(0, len(mel) - 76 + 1, 8)
        windows = np.stack([mel[s : s + 76] for s in starts])[..., None].astype(np.float32)
        return self._embed.run(None, {"input_1": windows})[0].reshape(len(windows), 96)

    def embed_utterance(self, samples: np.ndarray) -> np.ndarray:
        """Mean 96-dim vector of one trimmed word centred in a dithered 1.5 s window."""
        size = int(TEACHER_WINDOW_SECONDS * 16000)
        speech = trim_silence(np.asarray(samples, np.float32))
        window = np.random.default_rng(0).normal(0.0, 3.0 / 32767.0, size).astype(np.float32)
        if len(speech) >= size:
            start = (len(speech) - size) // 2
            window += speech[start : start + size]
        else:
            offset = (size - len(speech)) // 2
            window[offset : offset + len(speech)] += speech
        return self.window_embeddings(window).mean(axis=0)


def _cache_key(path: Path) -> str:
    return hashlib.sha1(f"{CACHE_VERSION}|{path.resolve()}".encode()).hexdigest()


_WORKER_TEACHER: SpeechEmbeddingTeacher | None = None


def _embed_in_worker(job: tuple[np.ndarray, Path]) -> None:
    global _WORKER_TEACHER
    _WORKER_TEACHER = _WORKER_TEACHER or SpeechEmbeddingTeacher()
    audio, cached = job
    temporary = cached.with_suffix(".tmp.npy")
    np.save(temporary, _WORKER_TEACHER.embed_utterance(audio.astype(np.float32) / 32768.0))
    os.replace(temporary, cached)


def teacher_targets(
    bank: Sequence[np.ndarray], paths: Sequence[Path], cache_dir: Path, workers: int | None = None
) -> np.ndarray:
    """Teacher vectors ``[clips, 96]`` for int16 clips, computed once per clip (in parallel) and cached on disk."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = [cache_dir / f"{_cache_key(p)}.npy" for p in paths]
    missing = [i for i, c in enumerate(cached) if not c.is_file()]
    if missing:
        log.info("teacher: embedding %d clips (%d cached)", len(missing), len(paths) - len(missing))
        jobs = ((bank[i], cached[i]) for i in missing)
        with multiprocessing.get_context("fork").Pool(workers or os.cpu_count() or 1) as pool:
            for _ in tqdm(
                pool.imap_unordered(_embed_in_worker, jobs, chunksize=16),
                total=len(missing),
                desc="teacher targets",
                unit="clip",
            ):
                pass
    return np.stack([np.load(c) for c in cached]).astype(np.float32)
