"""Pluggable utterance embedders: ``embed(samples float32 16 kHz) -> unit vector``.

An embedder is described by an :class:`EmbedderSpec` (a kind and a path), not passed as
an object, so worker processes can each build their own interpreter or ONNX session
(neither survives a fork reliably). Every clip is embedded once; episodes then only index
the resulting matrix, which is why hundreds of episodes cost milliseconds.

- ``encoder``: any exported ``.tflite`` with its manifest, run exactly as enrollment runs it
  (``device.encoder.Encoder.embed_utterance``: trimmed, centred in the window, dithered).
  Random-weight or classification-trained baselines exported the same way plug in here.
- ``teacher``: Google's speech embedding (ONNX, training/evaluation time only, never on the
  device), fed as its README says: trimmed, centred in a 1.5 s window padded with faint
  noise, int16-scaled float32 -> mel (x/10 + 2) -> 76-frame windows every 8 frames ->
  96-dim vectors, mean-pooled and normalised.
- ``peer``: EfficientWord-Net's ResNet-50 (``path`` is its venv), run by ``trainer.evaluation.peer``
  in worker processes of that venv with the package's own preprocessing; batched, not forked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.vad import trim_silence
from device.windowing import centre_in_window
from trainer.evaluation.forked import fork_imap, shared

Embed = Callable[[np.ndarray], np.ndarray]

TEACHER_WINDOW_SECONDS = 1.5
TEACHER_MEL_WINDOW = 76  # frames per embedding window
TEACHER_MEL_STEP = 8  # frames between windows (80 ms)


@dataclass(frozen=True)
class EmbedderSpec:
    """What to build: ``kind`` is ``encoder`` (a .tflite path), ``teacher`` (the ONNX folder) or ``peer`` (a venv)."""

    kind: str
    path: Path
    label: str  # name in tables, e.g. "ours", "teacher", "random-init"

    def build(self) -> Embed:
        if self.kind == "encoder":
            return EncoderEmbedder(self.path)
        if self.kind == "teacher":
            return TeacherEmbedder(self.path)
        if self.kind == "peer":
            from trainer.evaluation.peer import PeerEmbedder

            return PeerEmbedder(self.path)
        raise ValueError(f"unknown embedder kind {self.kind!r}")


class EncoderEmbedder:
    """The device encoder as enrollment uses it (one thread, int8 TFLite)."""

    def __init__(self, model_path: str | Path) -> None:
        from device.encoder import Encoder

        self.encoder = Encoder(model_path, num_threads=1)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return self.encoder.embed_utterance(samples)


class TeacherEmbedder:
    """Google speech embedding via onnxruntime, one thread per process."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        folder = Path(folder)
        providers = ["CPUExecutionProvider"]
        self.mel = ort.InferenceSession(str(folder / "melspectrogram.onnx"), options, providers=providers)
        self.embedding = ort.InferenceSession(str(folder / "embedding_model.onnx"), options, providers=providers)
        self._mel_input = self.mel.get_inputs()[0].name
        self._embedding_input = self.embedding.get_inputs()[0].name

    def windows(self, samples: np.ndarray, rate: int = 16000) -> np.ndarray:
        """``[n, 96]`` window embeddings of the centred, dithered 1.5 s around the word."""
        audio = centre_in_window(trim_silence(samples, rate), int(TEACHER_WINDOW_SECONDS * rate))
        pcm = (audio * 32767.0).astype(np.float32)[None]
        mel = np.squeeze(self.mel.run(None, {self._mel_input: pcm})[0]) / 10.0 + 2.0  # [frames, 32]
        starts = range(0, len(mel) - TEACHER_MEL_WINDOW + 1, TEACHER_MEL_STEP)
        batch = np.stack([mel[s : s + TEACHER_MEL_WINDOW] for s in starts])[..., None].astype(np.float32)
        return self.embedding.run(None, {self._embedding_input: batch})[0].reshape(len(batch), -1)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        pooled = self.windows(samples).mean(axis=0)
        return (pooled / (np.linalg.norm(pooled) + 1e-12)).astype(np.float32)


_WORKER_EMBED: Embed | None = None  # built in each worker: interpreters and sessions do not survive a fork


def _init_worker(spec: EmbedderSpec) -> None:
    global _WORKER_EMBED
    _WORKER_EMBED = spec.build()


def _embed_index(index: int) -> np.ndarray:
    assert _WORKER_EMBED is not None
    return _WORKER_EMBED(shared()[index])


def embed_all(spec: EmbedderSpec, audio: Sequence[np.ndarray], workers: int = 0, desc: str = "") -> np.ndarray:
    """``[N, dim]`` unit embeddings of every item, in parallel worker processes (0 = every core)."""
    workers = workers or os.cpu_count() or 1
    desc = desc or f"embedding ({spec.label})"
    if spec.kind == "peer":  # its own venv's processes, many clips per call
        from trainer.evaluation.peer import embed_clips

        return embed_clips(spec.path, audio, workers, desc)
    if workers == 1 or len(audio) < 100:
        embed = spec.build()
        rows = [embed(a) for a in tqdm(audio, desc=desc, unit="clip", leave=False)]
    else:
        it = fork_imap(_embed_index, range(len(audio)), audio, workers, _init_worker, (spec,), chunksize=16)
        rows = list(tqdm(it, total=len(audio), desc=desc, unit="clip", leave=False))
    return np.stack(rows).astype(np.float32)
