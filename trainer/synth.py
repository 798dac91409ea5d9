"""Synthetic speech for ``make data``: thousands of words spoken by hundreds of offline TTS "speakers".

Why: an encoder trained for few-shot enrollment must have heard many *words* from many
*voices*; recorded corpora give either many words or many speakers, rarely both. The
offline engines Debian ships (espeak-ng with its voices and variants, mbrola through
espeak-ng, flite, festival) are robotic, but combined with sampled rate, pitch and a
vocal-tract warp they give hundreds of distinct, perfectly labelled speakers for free.

Layout written under ``--out`` (what :func:`trainer.datasets.read_folder_per_word` reads)::

    toaster/espeak-enus-f3-r95-p55-w102_0.wav     16 kHz mono 16-bit PCM, silence trimmed
    hey_toaster/flite-slt-r110-p180-w96_0.wav      phrases: words joined by "_"
    manifest.jsonl                                  one row per clip (word, speaker, engine, params, path, duration)

A speaker id never contains ``_``: readers take everything before the last ``_`` as the speaker.

The evaluation keywords (Speech Commands' yes/no/.../nine) and their homophones are never
spoken: ``trainer.reserved`` is the single source of truth the
trainer also asserts with, so a keyword cannot leak into training through this generator.

Everything is deterministic from ``--seed`` (vocabulary, speakers, word-to-speaker
assignment), each wav is written atomically, and existing valid wavs are skipped, so an
interrupted run resumes where it stopped. Run ``python -m trainer.synth --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from device.audio import AudioError, pcm_to_float, resample, to_mono, write_wav
from trainer.reserved import is_reserved, tokens

SpeakerT = TypeVar("SpeakerT")
JobT = TypeVar("JobT")

log = logging.getLogger("trainer.synth")

SAMPLE_RATE = 16000
DICT_PATH = Path("/usr/share/dict/american-english")
MANIFEST_NAME = "manifest.jsonl"

# Defaults sized for a 2-core machine: ~54 clips/s measured there (espeak ~45, flite ~34,
# festival 20-50 clips/s per core), so 4000 words and phrases x 12 speakers each = 48k clips
# (~1.2 GB, ~10 h of audio) take about 15 min, and under 25 min on a slower 2-core box.
DEFAULT_WORDS = 4000
DEFAULT_SPEAKERS = 300
DEFAULT_SPEAKERS_PER_WORD = 12
DEFAULT_PHRASE_SHARE = 0.25
DEFAULT_FOREIGN_SHARE = 0.10
DEFAULTS = {"words": DEFAULT_WORDS, "speakers": DEFAULT_SPEAKERS, "per_word": DEFAULT_SPEAKERS_PER_WORD}
QUICK = {"words": 20, "speakers": 4, "per_word": 4}

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

_DICT_WORD = re.compile(r"[a-z]{3,12}")
_VOWEL = re.compile(r"[aeiouy]")
# Phrase openers: wake-word style. No two-letter opener ("hi"), because dataset readers
# strip a two-letter language prefix ("xx_") from folder names.
PHRASE_OPENERS = ("hey", "okay", "hello")


def load_dictionary(path: Path = DICT_PATH, exclude: Iterable[str] = ()) -> list[str]:
    """Lowercase alphabetic 3-12 letter words with a vowel from a word list, reserved words removed.

    Capitalised entries (names) and possessives drop out by the pattern; vowel-less
    entries ("hmm", "nth") are dropped because TTS engines spell them letter by letter.
    """
    if not path.is_file():
        raise FileNotFoundError(f"word list {path} not found: run scripts/install_tts.sh (Debian package wamerican)")
    excluded = {w.lower() for w in exclude}
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
        word = line.strip()
        if _DICT_WORD.fullmatch(word) and _VOWEL.search(word) and word not in excluded and not is_reserved(word):
            seen[word] = None
    return list(seen)


def build_vocabulary(
    size: int,
    seed: int = 0,
    phrase_share: float = DEFAULT_PHRASE_SHARE,
    words: Sequence[str] | None = None,
) -> list[str]:
    """``size`` distinct words and two-word phrases, deterministic from ``seed``.

    Items are drawn one after another from one seeded stream, so a smaller ``size`` is a
    prefix of a larger one (a bigger run reuses a smaller run's cache). Phrases are
    "<opener> <word>" or a random pair of short words; reserved words never appear.
    """
    pool = list(load_dictionary() if words is None else words)
    pool = [w for w in pool if not is_reserved(w)]
    if not pool:
        raise ValueError("empty vocabulary")
    rng = random.Random(f"vocab:{seed}")
    rng.shuffle(pool)
    short = [w for w in pool if len(w) <= 8] or pool
    singles = iter(pool)
    vocabulary: dict[str, None] = {}
    attempts = 0
    while len(vocabulary) < size and attempts < 20 * size + 100:
        attempts += 1
        if rng.random() < phrase_share:
            first = rng.choice(PHRASE_OPENERS) if rng.random() < 0.5 else rng.choice(short)
            item = f"{first} {rng.choice(short)}"
        else:
            item = next(singles, None)
            if item is None:
                continue
        if not is_reserved(item) and len(set(item.split())) == len(item.split()):
            vocabulary.setdefault(item, None)
    return list(vocabulary)


def folder_name(text: str) -> str:
    """Folder of a word or phrase: words joined by ``_`` (``"hey toaster"`` -> ``hey_toaster``)."""
    return "_".join(text.split())


# ---------------------------------------------------------------------------------------
# Voices available on this machine
# ---------------------------------------------------------------------------------------

# Latin-script espeak-ng languages that read English spelling with their own rules: a
# non-native accent. Non-Latin voices (ru, hi, el, ...) switch to the English voice, so
# they add nothing.
FOREIGN_ACCENTS = (
    "af", "de", "nl", "sv", "nb", "da", "es", "es-419", "it", "pt-br", "pl", "ro", "fi", "id", "cy", "hu",
)  # fmt: skip
# Variants that are not speech one would enroll a wake word with.
_SKIP_VARIANTS = {"fast"}
# Flite voices: awb_time only speaks clock times; kal is kal16 at 8 kHz.
_SKIP_FLITE = {"awb_time", "kal"}
# Native mean F0 (Hz) of voices whose pitch is set in Hz; None: the engine ignores the setting.
_NATIVE_F0 = {
    "flite:kal16": 101.0,
    "flite:kal": 101.0,
    "flite:awb": 140.0,
    "flite:slt": 167.0,
    "flite:rms": None,
    "festival:kal_diphone": 105.0,
    "festival:ked_diphone": 110.0,
}
# Engine shares of the speaker pool (renormalised over the engines found). espeak-ng has
# by far the most voices and variants; flite and festival sound more natural.
ENGINE_SHARES = {"espeak": 0.62, "mbrola": 0.10, "flite": 0.16, "festival": 0.12}
ENGINES = tuple(ENGINE_SHARES)


def _label(name: str) -> str:
    """Voice/variant name as a speaker-id field: lowercase letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower()) or "x"


@dataclass(frozen=True)
class Voice:
    """One engine voice; ``name`` is what the engine's command line takes."""

    engine: str
    name: str
    label: str
    native_f0: float | None = None  # flite/festival: pitch is a target mean F0 in Hz; None = fixed
    accent: str = "native"  # "native" or "foreign" (non-English rules reading English)


@dataclass
class Catalog:
    """The voices found, per engine, plus espeak-ng's variants (applied to espeak voices)."""

    voices: dict[str, list[Voice]] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)

    def engines(self) -> list[str]:
        return [engine for engine in ENGINES if self.voices.get(engine)]

    def describe(self) -> str:
        lines = []
        for engine in self.engines():
            names = ", ".join(f"{v.name}{'*' if v.accent == 'foreign' else ''}" for v in self.voices[engine])
            lines.append(f"{engine} ({len(self.voices[engine])}): {names}")
        if self.variants:
            lines.append(f"espeak variants ({len(self.variants)}): {', '.join(self.variants)}")
        lines.append("(* = non-English voice reading English: accent)")
        return "\n".join(lines)


def _run_text(cmd: list[str], timeout: float = 20.0) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _espeak_voices() -> tuple[list[Voice], list[Voice]]:
    """espeak-ng voices: (English + foreign-accent voices, mbrola English voices with their data installed)."""
    if not shutil.which("espeak-ng"):
        return [], []
    english, mbrola = [], []
    for line in _run_text(["espeak-ng", "--voices=en"]).splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5:
            continue
        language, file = parts[1], parts[4]
        if file.startswith("mb/"):
            database = file[3:].removeprefix("mb-").removesuffix("-en")
            if shutil.which("mbrola") and _mbrola_data(database):
                mbrola.append(Voice("mbrola", file[3:], _label(file[3:])))
        elif language.startswith("en"):
            english.append(Voice("espeak", language, _label(language)))
    listed = {line.split()[1] for line in _run_text(["espeak-ng", "--voices"]).splitlines()[1:] if line.split()}
    foreign = [Voice("espeak", code, _label(code), accent="foreign") for code in FOREIGN_ACCENTS if code in listed]
    return _unique(english) + foreign, _unique(mbrola)


def _mbrola_data(database: str) -> bool:
    roots = [Path("/usr/share/mbrola"), Path("/usr/local/share/mbrola")]
    return any((root / database / database).is_file() or (root / database).is_file() for root in roots)


def _espeak_variants() -> list[str]:
    if not shutil.which("espeak-ng"):
        return []
    names = []
    for line in _run_text(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        match = re.search(r"!v/(.+?)\s*(\(|$)", line)
        if match and match.group(1) not in _SKIP_VARIANTS:
            names.append(match.group(1))
    return sorted(set(names), key=str.lower)


def _flite_voices() -> list[Voice]:
    if not shutil.which("flite"):
        return []
    text = _run_text(["flite", "-lv"])
    names = text.split(":", 1)[1].split() if ":" in text else []
    return [
        Voice("flite", name, _label(name), _NATIVE_F0.get(f"flite:{name}", 120.0))
        for name in names
        if name not in _SKIP_FLITE
    ]


def _festival_voices() -> list[Voice]:
    """English festival voices: the voice folders under festival's ``english`` and ``us`` language dirs."""
    if not shutil.which("text2wave") or not shutil.which("festival"):
        return []
    voices = []
    for lang in ("english", "us", "uk"):
        for folder in sorted(Path("/usr/share/festival/voices", lang).glob("*/")):
            name = folder.name
            native = None if "hts" in name else _NATIVE_F0.get(f"festival:{name}", 110.0)
            short = name.removeprefix("cmu_us_").replace("_arctic", "").replace("_diphone", "")
            voices.append(Voice("festival", name, _label(short), native))
    return voices


def _unique(voices: list[Voice]) -> list[Voice]:
    return list({v.label: v for v in voices}.values())


def find_voices(engines: Iterable[str] | None = None, probe: bool = True) -> Catalog:
    """Every offline English-capable voice installed, optionally keeping only those that speak.

    Probing synthesises one short phrase per voice: a voice whose data is missing or whose
    engine errors is logged and dropped instead of failing thousands of clips later.
    """
    wanted = set(engines or ENGINES)
    espeak, mbrola = _espeak_voices()
    found = {"espeak": espeak, "mbrola": mbrola, "flite": _flite_voices(), "festival": _festival_voices()}
    catalog = Catalog({e: v for e, v in found.items() if e in wanted and v}, _espeak_variants())
    if probe:
        for engine, voices in catalog.voices.items():
            catalog.voices[engine] = [v for v in voices if _probe(v)]
    catalog.voices = {e: v for e, v in catalog.voices.items() if v}
    return catalog


def _probe(voice: Voice) -> bool:
    speaker = Speaker(voice.engine, voice.name, voice.label, None, 100, None, 100)
    with tempfile.TemporaryDirectory(prefix="synth-probe-") as tmp:
        raw = Path(tmp) / "probe.wav"
        error = synthesize(speaker, [("hello there", 100, None, raw)])[0]
        if error is None:
            try:
                postprocess(raw, 100)
            except AudioError as problem:
                error = str(problem)
    if error:
        log.warning("voice %s:%s does not work, skipped: %s", voice.engine, voice.name, error)
    return error is None


# ---------------------------------------------------------------------------------------
# Speakers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: engine, voice, variant and prosody, fixed for all its clips.

    ``rate`` is speed in percent of the engine's normal; ``pitch`` is espeak's 0-99 pitch or a
    target mean F0 in Hz (flite, festival diphones), None where the voice fixes it;
    ``warp`` (percent) scales every frequency, pitch and formants together (vocal-tract size).
    """

    engine: str
    voice: str
    voice_label: str
    variant: str | None
    rate: int
    pitch: int | None
    warp: int

    @property
    def id(self) -> str:
        """``engine-voice[-variant]-r<rate>[-p<pitch>]-w<warp>``: no underscores, unique per parameter set."""
        fields_ = [self.engine, self.voice_label]
        if self.variant:
            fields_.append(_label(self.variant))
        fields_.append(f"r{self.rate}")
        if self.pitch is not None:
            fields_.append(f"p{self.pitch}")
        fields_.append(f"w{self.warp}")
        return "-".join(fields_)

    def params(self) -> dict[str, object]:
        return {"variant": self.variant, "rate": self.rate, "pitch": self.pitch, "warp": self.warp}


def _sample_speaker(rng: random.Random, catalog: Catalog, foreign_share: float) -> Speaker:
    engines = catalog.engines()
    engine = rng.choices(engines, weights=[ENGINE_SHARES[e] for e in engines])[0]
    voices = catalog.voices[engine]
    if engine in ("espeak", "mbrola"):
        foreign = [v for v in voices if v.accent == "foreign"]
        native = [v for v in voices if v.accent == "native"] or foreign
        voice = rng.choice(foreign if foreign and rng.random() < foreign_share else native)
        variant = None
        if engine == "espeak" and catalog.variants and rng.random() > 0.1:
            variant = rng.choice(catalog.variants)
        return Speaker(
            engine, voice.name, voice.label, variant, rng.randrange(75, 131, 5), rng.randrange(20, 86, 5),
            rng.randrange(94, 107, 2),
        )  # fmt: skip
    voice = rng.choice(voices)
    pitch = None
    if voice.native_f0:
        pitch = int(round(voice.native_f0 * rng.uniform(0.8, 1.35) / 5) * 5)
    return Speaker(engine, voice.name, voice.label, None, rng.randrange(75, 131, 5), pitch, rng.randrange(88, 113, 2))


def sample_speakers(
    catalog: Catalog, count: int, seed: int = 0, foreign_share: float = DEFAULT_FOREIGN_SHARE
) -> list[Speaker]:
    """``count`` distinct speakers, speaker i drawn from its own seeded stream.

    Per-index streams make the list prefix-stable: ``--speakers 4`` is the first four of
    ``--speakers 300``, so cached clips stay valid when the pool grows.
    """
    if not catalog.engines():
        raise RuntimeError("no TTS voice found: run scripts/install_tts.sh (espeak-ng, flite, festival)")
    return distinct_speakers(count, f"speaker:{seed}", lambda rng: _sample_speaker(rng, catalog, foreign_share))


def distinct_speakers(count: int, stream: str, draw: Callable[[random.Random], SpeakerT]) -> list[SpeakerT]:
    """Up to ``count`` speakers with distinct ``id``s; speaker i comes from its own stream ``{stream}:{i}``.

    Per-index streams make the list prefix-stable (a larger pool starts with the smaller one, so
    cached clips stay valid); an index whose 200 draws all collide is skipped.
    """
    speakers: dict[str, SpeakerT] = {}
    for index in range(count):
        rng = random.Random(f"{stream}:{index}")
        for _ in range(200):
            speaker = draw(rng)
            if speaker.id not in speakers:
                speakers[speaker.id] = speaker
                break
    return list(speakers.values())


# ---------------------------------------------------------------------------------------
# Plan: which speaker says which word
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    """One clip to render: ``text`` by ``speaker``, take ``take`` (later takes jitter rate/pitch)."""

    text: str
    speaker: Speaker
    take: int = 0

    @property
    def relpath(self) -> str:
        return f"{folder_name(self.text)}/{self.speaker.id}_{self.take}.wav"

    def prosody(self) -> tuple[int, int | None]:
        """(rate, pitch) for this take: the speaker's own for take 0, a small seeded jitter after."""
        if self.take == 0:
            return self.speaker.rate, self.speaker.pitch
        rng = random.Random(f"take:{self.speaker.id}:{self.text}:{self.take}")
        rate = int(round(self.speaker.rate * rng.uniform(0.93, 1.07)))
        pitch = self.speaker.pitch
        if pitch is not None and self.speaker.engine in ("espeak", "mbrola"):
            pitch = min(99, max(0, pitch + rng.randint(-5, 5)))  # espeak's 0-99 scale
        elif pitch is not None:
            pitch += rng.randint(-max(3, pitch // 20), max(3, pitch // 20))  # Hz, about +-5 %
        return rate, pitch


def assign(
    vocabulary: Sequence[str], speakers: Sequence[Speaker], per_word: int, takes: int = 1, seed: int = 0
) -> list[ClipJob]:
    """Give each word ``per_word`` distinct speakers, balanced so every speaker gets a similar load.

    Speakers are dealt from a seeded shuffled deck, reshuffled when it runs out, so no
    speaker says every word (the encoder must not learn voice = word) and each word is
    heard from ``per_word`` voices (enough for support and query shots).
    """
    per_word = min(per_word, len(speakers))
    rng = random.Random(f"assign:{seed}")
    deck: list[Speaker] = []
    jobs = []
    for text in vocabulary:
        chosen: list[Speaker] = []
        while len(chosen) < per_word:
            if not deck:
                deck = list(speakers)
                rng.shuffle(deck)
            speaker = deck.pop()
            if speaker in chosen:
                deck.insert(0, speaker)
                if all(s in chosen for s in deck):
                    deck = []
                continue
            chosen.append(speaker)
        jobs.extend(ClipJob(text, speaker, take) for speaker in chosen for take in range(takes))
    return jobs


# ---------------------------------------------------------------------------------------
# Engines: text -> raw wav at the engine's own rate
# ---------------------------------------------------------------------------------------

# (text, rate percent, pitch, raw output path)
SynthItem = tuple[str, int, int | None, Path]


def _espeak_command(speaker: Speaker, text: str, rate: int, pitch: int | None, out: Path) -> list[str]:
    voice = speaker.voice + (f"+{speaker.variant}" if speaker.variant else "")
    command = ["espeak-ng", "-v", voice, "-s", str(round(175 * rate / 100)), "-w", str(out)]
    if pitch is not None:
        command += ["-p", str(pitch)]
    return [*command, text]


def _flite_command(speaker: Speaker, text: str, rate: int, pitch: int | None, out: Path) -> list[str]:
    command = ["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={100 / rate:.3f}"]
    if pitch is not None:
        command += ["--setf", f"int_f0_target_mean={pitch}", "--setf", f"int_f0_target_stddev={pitch * 0.15:.1f}"]
    return [*command, "-t", text, "-o", str(out)]


def _run_one(command: list[str], out: Path) -> str | None:
    """Run one synthesis command; the error text, or None when it wrote ``out``."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{command[0]}: {error}"
    if done.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
        return f"{command[0]} exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:] or 'no audio'}"
    return None


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival_script(speaker: Speaker, items: Sequence[SynthItem]) -> str:
    """One festival batch: load the voice once, then set prosody and save each utterance.

    Festival takes ~0.3 s to start and load a voice, ten times the cost of an utterance,
    so a chunk of clips goes through one process.
    """
    hts = "hts" in speaker.voice
    lines = [f"(voice_{speaker.voice})", "(set! synth-base-hts hts_engine_params)" if hts else ""]
    for text, rate, pitch, out in items:
        if hts:
            lines.append(f'(set! hts_engine_params (append synth-base-hts \'(("-r" {rate / 100:.3f}))))')
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {100 / rate:.3f})")
        if pitch is not None:
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {pitch}) (target_f0_std {pitch * 0.14:.1f}) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
        lines.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) {_scheme_string(str(out))} 'riff)"
        )
    return "\n".join(lines) + "\n"


def _festival_batch(speaker: Speaker, items: Sequence[SynthItem]) -> list[str | None]:
    script = items[0][3].parent / f"batch-{os.getpid()}.scm"
    script.write_text(_festival_script(speaker, items), encoding="utf-8")
    try:
        done = subprocess.run(
            ["festival", "-b", str(script)], capture_output=True, text=True, timeout=60 + 5 * len(items), check=False
        )
        detail = (done.stderr or done.stdout).strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as error:
        detail = str(error)
    errors: list[str | None] = []
    for *_, out in items:
        ok = out.is_file() and out.stat().st_size > 44
        errors.append(None if ok else f"festival: {detail or 'no audio'}")
    return errors


def synthesize(speaker: Speaker, items: Sequence[SynthItem]) -> list[str | None]:
    """Synthesise each (text, rate, pitch, path) item with ``speaker``'s voice; per item an error or None.

    A festival batch that fails part-way is retried clip by clip, so one utterance festival
    chokes on costs that clip only.
    """
    if speaker.engine in ("espeak", "mbrola"):
        return [_run_one(_espeak_command(speaker, t, r, p, o), o) for t, r, p, o in items]
    if speaker.engine == "flite":
        return [_run_one(_flite_command(speaker, t, r, p, o), o) for t, r, p, o in items]
    if speaker.engine == "festival":
        errors = _festival_batch(speaker, items)
        if len(items) > 1 and any(errors):
            errors = [
                e if e is None else _festival_batch(speaker, [item])[0] for e, item in zip(errors, items, strict=True)
            ]
        return errors
    return [f"unknown engine {speaker.engine}"] * len(items)


# ---------------------------------------------------------------------------------------
# Post-processing: raw wav -> trimmed 16 kHz mono
# ---------------------------------------------------------------------------------------


def _read_raw(path: Path) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as handle:
            rate, width, channels = handle.getframerate(), handle.getsampwidth(), handle.getnchannels()
            data = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise AudioError(f"{path.name}: unreadable engine output ({error})") from error
    return to_mono(pcm_to_float(data, width, channels)), rate


def trim_silence(
    samples: np.ndarray, rate: int = SAMPLE_RATE, keep_ms: float = 50.0, floor_db: float = -40.0
) -> np.ndarray:
    """Cut leading/trailing silence (10 ms frames quieter than ``floor_db`` below the loudest), keeping ``keep_ms``.

    Engines pad clips with up to half a second of silence; placement in the training window
    is the augmenter's job, so clips are stored tight but with a natural onset/offset.
    """
    frame = rate // 100
    count = len(samples) // frame
    if count == 0:
        return samples
    energy = np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1))
    loud = np.flatnonzero(energy > max(energy.max() * 10 ** (floor_db / 20), 1e-4))
    if len(loud) == 0:
        return samples[:0]
    keep = int(rate * keep_ms / 1000)
    start = max(0, loud[0] * frame - keep)
    stop = min(len(samples), (loud[-1] + 1) * frame + keep)
    return samples[start:stop]


def postprocess(raw: Path, warp: int) -> np.ndarray:
    """Engine output -> warped, 16 kHz, trimmed float audio; raises AudioError for silence or garbage.

    The warp pretends the clip was recorded at ``rate * warp / 100`` (a multiple of 100 Hz,
    keeping the polyphase table small), scaling pitch, formants and tempo together.
    """
    samples, rate = _read_raw(raw)
    source_rate = int(round(rate * warp / 100 / 100)) * 100
    audio = trim_silence(resample(samples, source_rate, SAMPLE_RATE))
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if len(audio) < SAMPLE_RATE // 10 or peak < 1e-3:
        raise AudioError(f"{raw.name}: engine produced silence or a blip ({len(audio) / SAMPLE_RATE:.2f} s)")
    if peak > 0.99:  # the warp's filter can overshoot a full-scale engine output
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


def write_atomic(path: Path, samples: np.ndarray) -> None:
    """Write a 16 kHz wav via a temp file + rename, so a killed run never leaves a half-written clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    try:
        write_wav(temp, samples, SAMPLE_RATE)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def wav_duration(path: Path) -> float | None:
    """Duration in seconds of a complete 16 kHz mono 16-bit wav, or None if it is missing or not one."""
    try:
        with wave.open(str(path), "rb") as handle:
            ok = (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (SAMPLE_RATE, 1, 2)
            frames = handle.getnframes()
        if ok and frames > 0 and path.stat().st_size >= 44 + 2 * frames:
            return frames / SAMPLE_RATE
    except (wave.Error, EOFError, OSError):
        pass
    return None


def render_chunk(out_dir: Path, jobs: Sequence[ClipJob]) -> list[tuple[str, str | None]]:
    """Render clips of ONE speaker (worker entry point): ``(relpath, error or None)`` per clip."""
    results: list[tuple[str, str | None]] = []
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        items = [(job.text, *job.prosody(), Path(tmp) / f"{index}.wav") for index, job in enumerate(jobs)]
        errors = synthesize(jobs[0].speaker, items)
        for job, item, error in zip(jobs, items, errors, strict=True):
            if error is None:
                try:
                    write_atomic(out_dir / job.relpath, postprocess(item[3], job.speaker.warp))
                except AudioError as problem:
                    error = str(problem)
            results.append((job.relpath, None if error is None else f"{job.speaker.id} {job.text!r}: {error}"))
    return results


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a run produced; ``clips`` counts every valid clip on disk for the plan, cached or new."""

    clips: int = 0
    new: int = 0
    cached: int = 0
    failed: int = 0
    words: int = 0
    speakers: int = 0
    engines: dict[str, int] = field(default_factory=dict)
    audio_hours: float = 0.0
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.new / self.seconds if self.seconds else 0.0
        engines = ", ".join(f"{e} {n}" for e, n in sorted(self.engines.items()))
        return (
            f"{self.clips} clips ({self.new} new, {self.cached} cached, {self.failed} failed), "
            f"{self.words} words/phrases, {self.speakers} speakers, {self.audio_hours:.2f} h of audio; "
            f"clips per engine: {engines}; {self.seconds:.0f} s ({rate:.1f} new clips/s)"
        )


def chunk_by_speaker(jobs: Sequence[JobT], size: int, stream: str) -> list[list[JobT]]:
    """Group clips by speaker (a voice or blend is set up once per chunk), chunk order shuffled for even progress."""
    by_speaker: dict[str, list[JobT]] = {}
    for job in jobs:
        by_speaker.setdefault(job.speaker.id, []).append(job)
    chunks = [group[i : i + size] for group in by_speaker.values() for i in range(0, len(group), size)]
    random.Random(stream).shuffle(chunks)
    return chunks


def run_chunks(
    out_dir: Path,
    chunks: Sequence[Sequence[JobT]],
    render: Callable[[Path, Sequence[JobT]], list[tuple[str, str | None]]],
    jobs: int,
    desc: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> tuple[int, int]:
    """Render ``chunks`` on ``jobs`` processes with a progress bar; returns (written, failed).

    Shared by every generator (TTS engines, Kokoro): ``render`` writes one chunk's clips and
    returns ``(path, error or None)`` per clip; ``initializer`` sets up each worker (or this
    process when ``jobs`` is 1).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    written = failed = 0
    interval = 0.1 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not thousands
    bar = tqdm(
        total=sum(len(c) for c in chunks),
        unit="clip",
        desc=desc,
        smoothing=0.05,
        mininterval=interval,
        maxinterval=max(10.0, interval),
    )
    with bar, logging_redirect_tqdm():

        def collect(results: list[tuple[str, str | None]]) -> None:
            nonlocal written, failed
            for _, error in results:
                if error is None:
                    written += 1
                else:
                    failed += 1
                    log.warning("skipped %s", error)
            bar.update(len(results))

        if jobs <= 1:
            if initializer is not None:
                initializer(*initargs)
            for chunk in chunks:
                collect(render(out_dir, chunk))
        else:
            pool = ProcessPoolExecutor(max_workers=jobs, initializer=initializer, initargs=initargs)
            try:
                futures = [pool.submit(render, out_dir, chunk) for chunk in chunks]
                for future in as_completed(futures):
                    collect(future.result())
            finally:  # on Ctrl-C, drop queued chunks instead of finishing them
                pool.shutdown(wait=True, cancel_futures=True)
    return written, failed


def _manifest_row(job: ClipJob, duration: float) -> dict[str, object]:
    return {
        "word": job.text,
        "label": folder_name(job.text),
        "speaker": job.speaker.id,
        "engine": job.speaker.engine,
        "voice": job.speaker.voice,
        "params": job.speaker.params(),
        "take": job.take,
        "path": job.relpath,
        "duration": round(duration, 3),
    }


def write_manifest(out_dir: Path, rows: Iterable[dict[str, object]]) -> Path:
    """``manifest.jsonl``: one JSON object per clip on disk, written atomically."""
    path = out_dir / MANIFEST_NAME
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(temp, path)
    return path


def prune(out_dir: Path, keep: set[str]) -> int:
    """Delete wavs under ``out_dir`` that the current plan does not contain (e.g. after a seed change)."""
    removed = 0
    for path in out_dir.glob("*/*.wav"):
        if path.relative_to(out_dir).as_posix() not in keep:
            path.unlink()
            removed += 1
    return removed


def generate(
    out_dir: str | Path,
    vocabulary: Sequence[str] | int = DEFAULT_WORDS,
    speakers: Sequence[Speaker] | int = DEFAULT_SPEAKERS,
    per_word: int = DEFAULT_SPEAKERS_PER_WORD,
    takes: int = 1,
    seed: int = 0,
    jobs: int | None = None,
    engines: Iterable[str] | None = None,
    phrase_share: float = DEFAULT_PHRASE_SHARE,
    foreign_share: float = DEFAULT_FOREIGN_SHARE,
    chunk_size: int = 24,
    remove_stale: bool = False,
) -> Summary:
    """Render (or resume) the synthetic set into ``out_dir`` and write its manifest.

    ``vocabulary``/``speakers`` are either counts (drawn from the seed) or explicit lists.
    Reserved words are refused here too, whatever list is passed in.
    """
    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(vocabulary, int):
        vocabulary = build_vocabulary(vocabulary, seed, phrase_share)
    reserved = [text for text in vocabulary if is_reserved(text)]
    if reserved:
        log.warning("not speaking %d reserved words/phrases: %s", len(reserved), ", ".join(reserved[:10]))
    vocabulary = [" ".join(tokens(text)) for text in vocabulary if not is_reserved(text) and tokens(text)]
    if isinstance(speakers, int):
        speakers = sample_speakers(find_voices(engines), speakers, seed, foreign_share)
    plan = assign(vocabulary, speakers, per_word, takes, seed)
    if remove_stale:
        log.info("removed %d wavs not in the plan", prune(out_dir, {job.relpath for job in plan}))
    return render_plan(out_dir, plan, seed, jobs, chunk_size, start)


def render_plan(
    out_dir: Path, plan: Sequence[ClipJob], seed: int = 0, jobs: int | None = None, chunk_size: int = 24, start=None
) -> Summary:
    """Render the clips of ``plan`` not yet on disk (resumable), then write the manifest of all of them.

    It speaks whatever it is given: :func:`generate`, the training path, refuses reserved words
    before it gets here; the evaluation's synthetic set (``trainer.evaluation.synth_set``) asks for them.
    """
    start = time.monotonic() if start is None else start
    pending = [job for job in plan if wav_duration(out_dir / job.relpath) is None]
    summary = Summary(cached=len(plan) - len(pending))
    if pending:
        chunks = chunk_by_speaker(pending, chunk_size, f"chunks:{seed}")
        summary.new, summary.failed = run_chunks(out_dir, chunks, render_chunk, jobs or os.cpu_count() or 1, "synth")
    return finish_run(out_dir, plan, _manifest_row, summary, start)


def finish_run(out_dir: Path, plan: Sequence, manifest_row: Callable, summary: Summary, start: float) -> Summary:
    """Write the manifest of every planned clip now on disk and fill ``summary``'s totals from it.

    Shared by this generator and the Kokoro one: both plan jobs with a ``relpath`` and describe a
    finished clip with ``manifest_row(job, duration)`` (a dict with word, speaker, engine, duration).
    """
    rows = []
    for job in plan:
        duration = wav_duration(out_dir / job.relpath)
        if duration is not None:
            rows.append(manifest_row(job, duration))
    write_manifest(out_dir, rows)
    summary.clips = len(rows)
    summary.words = len({row["word"] for row in rows})
    summary.speakers = len({row["speaker"] for row in rows})
    summary.engines = dict(Counter(str(row["engine"]) for row in rows))
    summary.audio_hours = sum(float(row["duration"]) for row in rows) / 3600
    summary.seconds = time.monotonic() - start
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.synth",
        description=(
            "Generate synthetic keyword-training speech with every offline TTS voice installed "
            "(espeak-ng + variants, mbrola, flite, festival): one folder per word or phrase, "
            "<speaker>_<take>.wav at 16 kHz mono, plus manifest.jsonl. Resumable: rerun to continue. "
            "The evaluation keywords (yes, no, ..., nine) and their homophones are never spoken."
        ),
        epilog="Install engines: scripts/install_tts.sh. Example: python -m trainer.synth --out data_cache/synth",
    )
    quick = "--quick: {words} words x {speakers} speakers".format(**QUICK)
    parser.add_argument("--out", type=Path, help="output folder (required unless --list-voices)")
    parser.add_argument("--words", type=int, help=f"words + phrases to speak (default {DEFAULT_WORDS}; {quick})")
    parser.add_argument("--speakers", type=int, help=f"synthetic speakers (default {DEFAULT_SPEAKERS})")
    parser.add_argument(
        "--per-word", type=int, help=f"speakers saying each word (default {DEFAULT_SPEAKERS_PER_WORD}; --quick: 4)"
    )
    parser.add_argument("--takes", type=int, default=1, help="takes per speaker and word; later takes jitter prosody")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores, %(default)s here)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of vocabulary, speakers, assignment (default 0)")
    parser.add_argument(
        "--phrase-share",
        type=float,
        default=DEFAULT_PHRASE_SHARE,
        help="share of two-word phrases (default %(default)s)",
    )
    parser.add_argument(
        "--foreign-share", type=float, default=DEFAULT_FOREIGN_SHARE,
        help="share of espeak speakers using a non-English voice, i.e. accented English (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines (default %(default)s)")
    parser.add_argument("--vocab", type=Path, help="file with one word or phrase per line, instead of the dictionary")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test set that renders in seconds")
    parser.add_argument("--prune", action="store_true", help="delete wavs in --out that are not in this run's plan")
    parser.add_argument("--list-voices", action="store_true", help="print the voices found and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m trainer.synth``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")
    if args.list_voices:
        print(find_voices(engines).describe())
        return 0
    if args.out is None:
        raise SystemExit("--out is required (see --help)")
    preset = QUICK if args.quick else DEFAULTS
    if args.vocab:
        lines = args.vocab.read_text(encoding="utf-8").splitlines()
        vocabulary = [line.strip() for line in lines if line.strip()][: args.words or None]
    else:
        vocabulary = build_vocabulary(args.words or preset["words"], args.seed, args.phrase_share)

    catalog = find_voices(engines)
    log.info("voices:\n%s", catalog.describe())
    speakers = sample_speakers(catalog, args.speakers or preset["speakers"], args.seed, args.foreign_share)
    per_word = args.per_word or preset["per_word"]
    log.info("%d words/phrases x %d of %d speakers -> %s", len(vocabulary), per_word, len(speakers), args.out)
    summary = generate(
        args.out, vocabulary, speakers, per_word, args.takes, args.seed, args.jobs, remove_stale=args.prune
    )
    print(f"synth: {summary}")
    print(f"synth: manifest {args.out / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
