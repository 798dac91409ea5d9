"""The negative bank shipped beside each model: embeddings of windows that are *not* a keyword.

Enrollment calibrates a keyword's threshold against it (see ``device.enroll``),
so it must look like what the detector hears between wake words: continuous
real speech (read sentences), other words said on their own with pauses around
them, and room noise, cut into windows exactly as the streaming detector cuts
them and embedded by the int8 model itself.

The isolated words matter most. A wake word's false alarms come from other whole
words that sound like it, and a window holding one word in silence scores far
closer to a keyword's prototype than any stretch of running speech does, so the
threshold is set from the bank's closest windows (``device.enroll``) and the bank
needs thousands of them: TTS words only, so that no recording the evaluation
plays can be among them.

Real continuous talk comes last (``kws-train talk-bank``): every window of the
training part of ``shared/data/real_speech`` (``trainer.real_speech``), since on
hours of real talk nearly every false alarm came from some stretch of ordinary
speech that the TTS words and read sentences did not cover.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.encoder import Encoder
from device.frontend import log_mel
from device.manifest import ModelManifest, load_manifest, manifest_path_for, sha256_of
from device.noise import coloured_noise
from trainer.pipeline import load_audio
from trainer.real_speech import TalkFile, assert_talk_disjoint
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


def word_runs(
    clips: Sequence[Path], noise: Sequence[np.ndarray], seed: int, words_per_run: int = 8
) -> Iterator[np.ndarray]:
    """Runs of isolated words as a room hears them: each clip alone, 0.5-1.5 s pauses, room noise under it all.

    Speech at -30 to -18 dBFS and noise at -50 to -38 dBFS (RMS): about the stream a
    device hears between wake words, quiet enough that each word stands alone in its window.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    for start in range(0, len(order), words_per_run):
        parts = []
        for i in order[start : start + words_per_run]:
            pause = np.zeros(int(rng.uniform(0.5, 1.5) * 16000), np.float32)
            parts += [pause, _at_dbfs(load_audio(clips[i]), rng, -30, -18)]
        run = np.concatenate([*parts, np.zeros(16000, np.float32)])
        if noise:
            source = noise[rng.integers(len(noise))]
            offset = rng.integers(0, max(1, len(source) - len(run)))
            run = run + _at_dbfs(np.resize(source[offset : offset + len(run)], len(run)), rng, -50, -38)
        yield run.astype(np.float32)


def _at_dbfs(audio: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) + 1e-9
    return (audio * (10 ** (rng.uniform(low, high) / 20) / rms)).astype(np.float32)


def build_negative_bank(
    encoder: Encoder,
    speech: Iterable[np.ndarray],
    noise: Sequence[np.ndarray],
    count: int,
    seed: int,
    words: Iterable[np.ndarray] = (),
) -> np.ndarray:
    """Embeddings (float16): ``count`` windows of speech every 0.3 s (85 %) and noise (the rest), then
    every window, 0.2 s apart, of the isolated-word runs ``words``."""
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
    bank = [encoder.embed_frames(windows[i]) for i in tqdm(picks, desc="negative bank: embed")]
    # word windows are embedded run by run: ~26,000 windows of frames need not sit in memory at once
    for run in tqdm(words, desc="negative bank: isolated-word runs", unit="run"):
        bank += [encoder.embed_frames(w) for w in _windows(run, encoder, 0.2, rng)]
    return np.stack(bank).astype(np.float16)


def talk_windows(encoder: Encoder, files: Sequence[TalkFile], hop_seconds: float, seed: int) -> np.ndarray:
    """Embeddings (float16) of every window of real continuous talk, ``hop_seconds`` apart.

    Why every window at the detector's own hop: a false alarm on talk is one window that
    happens to land near a prototype, and a coarser hop would miss the very windows that
    calibration needs to see. Only training-part files may come here (the guard runs).
    """
    assert_talk_disjoint([f.file_id for f in files])
    rng = np.random.default_rng(seed)
    bank: list[np.ndarray] = []
    for talk in tqdm(files, desc="negative bank: real talk", unit="file"):
        bank += [encoder.embed_frames(w) for w in _windows(load_audio(talk.path), encoder, hop_seconds, rng)]
    return np.stack(bank).astype(np.float16)


def with_talk(bank: np.ndarray, summary: dict, talk: np.ndarray, file_ids: Sequence[str]) -> tuple[np.ndarray, dict]:
    """The bank with its talk part (the last ``summary['talk_windows']`` rows) replaced by ``talk``."""
    kept = bank[: len(bank) - int(summary.get("talk_windows", 0))]
    summary = {**summary, "windows": len(kept) + len(talk), "talk_windows": len(talk), "talk_files": list(file_ids)}
    return np.concatenate([kept, talk.astype(np.float16)]), summary


def bank_summary(bank: np.ndarray, sentence_and_noise_windows: int) -> dict:
    """What the bank holds, for the manifest and the model card."""
    return {"windows": len(bank), "isolated_word_windows": len(bank) - sentence_and_noise_windows}


def replace_negative_bank(model_path: Path, bank: np.ndarray, summary: dict) -> ModelManifest:
    """Swap the negative bank beside an exported model (a new calibration, same weights), manifest last.

    The model file and its hash stay as they are, so keywords already enrolled with it
    stay valid; only enrollments from now on calibrate against the new bank.
    """
    manifest = load_manifest(model_path)
    bank_path = model_path.with_suffix(".negatives.npy")
    staged = bank_path.with_name(bank_path.name + ".tmp.npy")
    np.save(staged, bank.astype(np.float16))
    manifest.negatives_file = bank_path.name
    manifest.negatives_sha256 = sha256_of(staged)
    manifest.training["negative_bank"] = summary
    staged.replace(bank_path)
    manifest_path = manifest_path_for(model_path)
    manifest_path.with_suffix(".json.tmp").write_text(manifest.to_json())
    manifest_path.with_suffix(".json.tmp").replace(manifest_path)
    return manifest
