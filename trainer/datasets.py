"""Readers for the dataset layouts users already have, all returning :class:`Clip` lists.

Supported layouts (detected automatically by :func:`read_dataset`):

- Speech Commands: ``word/<speaker>_nohash_<n>.wav``, ``_background_noise_/`` skipped;
- Multilingual Spoken Words: ``<lang>/clips/<word>/*.opus|wav`` (speaker unknown: one per clip);
- this project's ``multilingual_words``: ``<dataset>/<lang>_<word>/<speaker>_<n>.wav`` + ``manifest.csv``;
- Free Spoken Digit Dataset: ``<digit>_<speaker>_<take>.wav``;
- plain one folder per word: ``word/*.wav`` (speaker = file name up to its last ``_``),
  which is also what the synthetic generator writes.

Speaker identity is kept wherever the layout gives it, because speaker-disjoint
splits are what make a few-shot figure honest.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".opus", ".flac", ".ogg")
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Clip:
    """One utterance of one word (or phrase) by one speaker."""

    path: Path
    word: str  # class label, e.g. "marvin", "en_close", "hey_toaster"
    speaker: str  # unique within `source`
    source: str  # dataset name, e.g. "fsdd", "speech_commands", "synth"
    lang: str = "en"

    @property
    def speaker_key(self) -> str:
        """Speaker id unique across datasets."""
        return f"{self.source}:{self.speaker}"

    @property
    def spoken_text(self) -> str:
        """The words actually spoken, without a language prefix (for the reserved-word check)."""
        return spoken_text(self.word)


def spoken_text(label: str) -> str:
    """A class label's spoken words: ``en_close`` -> ``close``, ``hey_toaster`` -> ``hey toaster``."""
    if re.match(r"^[a-z]{2}_", label):
        label = label[3:]
    return label.replace("_", " ")


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _speaker_from_name(stem: str) -> str:
    if "_nohash_" in stem:
        return stem.split("_nohash_")[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def read_folder_per_word(root: Path, source: str, lang: str = "en") -> list[Clip]:
    """``root/word/*.wav``; covers Speech Commands and the synthetic generator's output."""
    clips = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for path in _audio_files(folder):
            clips.append(Clip(path, folder.name, _speaker_from_name(path.stem), source, lang))
    return clips


def read_fsdd(root: Path) -> list[Clip]:
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{take}.wav`` (in ``root`` or ``root/recordings``)."""
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    clips = []
    for path in _audio_files(folder):
        match = _FSDD_NAME.match(path.stem)
        if match:
            clips.append(Clip(path, _DIGIT_WORDS[int(match.group(1))], match.group(2), "fsdd"))
    return clips


def read_multilingual_words(root: Path) -> list[Clip]:
    """``<dataset>/<lang>_<word>/<speaker>_<n>.wav`` described by each dataset's ``manifest.csv``."""
    clips = []
    for manifest in sorted(root.glob("*/manifest.csv")):
        dataset = manifest.parent
        with open(manifest, newline="") as handle:
            for row in csv.DictReader(handle):
                word = row["word"]
                clips.append(Clip(dataset / row["file"], word, row["speaker"], dataset.name, word.split("_", 1)[0]))
    return clips


def read_mswc(root: Path) -> list[Clip]:
    """Multilingual Spoken Words: ``<lang>/clips/<word>/*.opus``; each clip counted as its own speaker."""
    clips = []
    for clips_dir in sorted(root.glob("*/clips")):
        lang = clips_dir.parent.name
        for folder in sorted(p for p in clips_dir.iterdir() if p.is_dir()):
            for path in _audio_files(folder):
                clips.append(Clip(path, f"{lang}_{folder.name}", path.stem, "mswc", lang))
    return clips


def detect_layout(root: Path) -> str:
    """Name of the layout of ``root``: fsdd, multilingual_words, mswc or folder_per_word."""
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    if any(_FSDD_NAME.match(p.stem) for p in folder.glob("*.wav")):
        return "fsdd"
    if any(root.glob("*/manifest.csv")):
        return "multilingual_words"
    if any(root.glob("*/clips/*/")):
        return "mswc"
    return "folder_per_word"


def read_dataset(root: str | Path, source: str | None = None) -> list[Clip]:
    """Read any supported layout; ``source`` names the dataset (default: the folder name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    layout = detect_layout(root)
    if layout == "fsdd":
        return read_fsdd(root)
    if layout == "multilingual_words":
        return read_multilingual_words(root)
    if layout == "mswc":
        return read_mswc(root)
    return read_folder_per_word(root, source or root.name)


def summarize(clips: Iterable[Clip]) -> dict:
    """Counts for manifests and logs: clips, words, speakers per source."""
    by_source: dict[str, dict] = {}
    for clip in clips:
        entry = by_source.setdefault(clip.source, {"clips": 0, "words": set(), "speakers": set()})
        entry["clips"] += 1
        entry["words"].add(clip.word)
        entry["speakers"].add(clip.speaker)
    return {
        name: {"clips": e["clips"], "words": len(e["words"]), "speakers": len(e["speakers"])}
        for name, e in sorted(by_source.items())
    }
