"""The real continuous-speech corpus (``shared/data/real_speech``), split once for training and evaluation.

False alarms on ordinary talk are the detector's main failure, so talk is both what we
measure on and what calibration and training learn from. The two must never meet: a
false-alarm rate measured on talk that shaped the bank or the encoder is a rate on memory.
The split is by language, fixed here and nowhere else:

- **evaluation**: all of Mboshi (read speech, its licence allows evaluation only) and the
  VoxLingua107 languages ``EVAL_LANGUAGES`` (4.46 h + 0.75 h);
- **training** (bank, calibration, meta-training): the VoxLingua107 languages
  ``TRAIN_LANGUAGES`` (1.3 h).

So every evaluation language is one the trained parts never heard, which is what a user
talking Japanese or Mboshi next to the board is. :func:`assert_talk_disjoint` is the guard
every consumer of training talk runs, like the reserved-word guard for keywords.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

TRAIN_LANGUAGES = frozenset({"ar", "en", "es", "fr", "it", "nl"})
EVAL_LANGUAGES = frozenset({"de", "el", "hr", "hu", "ja", "mk", "pl", "pt", "ru", "tr", "zh", "mdw"})
EVAL_ONLY_CORPORA = frozenset({"mboshi"})  # never trained on, whatever its language


class TalkLeakageError(RuntimeError):
    """Evaluation talk reached training (or a corpus meant for evaluation only did)."""


@dataclass(frozen=True)
class TalkFile:
    """One recording of the corpus; ``file_id`` is its path relative to the corpus root."""

    path: Path
    file_id: str
    corpus: str  # first folder: voxlingua107_dev, mboshi
    language: str
    seconds: float

    @property
    def part(self) -> str:
        """``train`` or ``eval``: where the split puts this file."""
        if self.corpus in EVAL_ONLY_CORPORA or self.language in EVAL_LANGUAGES:
            return "eval"
        if self.language in TRAIN_LANGUAGES:
            return "train"
        raise ValueError(f"{self.file_id}: language {self.language!r} is in neither part of the talk split")

    @property
    def source(self) -> str:
        """Label for reports of where false alarms come from: ``talk:<corpus>:<language>``."""
        return f"talk:{self.corpus}:{self.language}"


def read_manifest(root: Path) -> list[TalkFile]:
    """Every file the corpus manifest lists (``csv`` module: the licence column holds commas)."""
    manifest = Path(root) / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: the real-speech corpus is not at {root}")
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        TalkFile(
            path=Path(root) / row["file"],
            file_id=PurePosixPath(row["file"]).as_posix(),
            corpus=PurePosixPath(row["file"]).parts[0],
            language=row["language"],
            seconds=float(row["seconds"]),
        )
        for row in rows
    ]


def talk_files(root: Path, part: str) -> list[TalkFile]:
    """The files of one part (``train`` or ``eval``), in manifest order."""
    if part not in ("train", "eval"):
        raise ValueError(f"part must be 'train' or 'eval', not {part!r}")
    return [f for f in read_manifest(root) if f.part == part]


def assert_talk_disjoint(training_ids: Iterable[str], root: Path | None = None) -> None:
    """Raise :class:`TalkLeakageError` if any id used in training is evaluation talk.

    An id is a corpus-relative path (``voxlingua107_dev/ja/x.opus``) or ends with one; ids of
    other data (no corpus folder in them) pass. With ``root`` the manifest decides each
    file's part; without it, the folder and language in the path do.
    """
    by_id = {f.file_id: f for f in read_manifest(root)} if root is not None else {}
    leaked = []
    for raw in training_ids:
        parts = PurePosixPath(str(raw).replace("\\", "/")).parts
        for start in range(len(parts)):
            file_id = "/".join(parts[start:])
            if file_id in by_id:
                if by_id[file_id].part == "eval":
                    leaked.append(raw)
                break
            corpus = parts[start]
            if corpus in EVAL_ONLY_CORPORA or (
                corpus == "voxlingua107_dev" and len(parts) > start + 1 and parts[start + 1] in EVAL_LANGUAGES
            ):
                leaked.append(raw)
                break
    if leaked:
        shown = ", ".join(map(str, leaked[:10])) + (f" and {len(leaked) - 10} more" if len(leaked) > 10 else "")
        raise TalkLeakageError(f"{len(leaked)} evaluation talk files were used for training: {shown}")
