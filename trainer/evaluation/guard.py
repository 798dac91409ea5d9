"""Refuse evaluations that would measure memory instead of few-shot learning.

A figure on "unseen words" is only honest when no evaluation clip was trained on and every
evaluation word is really outside the training vocabulary. Two checks, both raising
:class:`LeakageError` with the offending clips or words named:

- :func:`assert_disjoint`: no evaluation clip is among the training clip ids. An id is a
  clip path relative to its dataset root (``fsdd/recordings/3_theo_7.wav``,
  ``yes/0a7c2a8d_nohash_0.wav``: it matches any evaluation clip whose path *ends* with it) or
  a ``(source, speaker, word)`` triple (matches every take of that word by that speaker).
- :func:`assert_unseen_words`: when an evaluation claims unseen words, every word must be a
  reserved one (``trainer.reserved``) or belong to a language the model held out.

Where the ids come from: the model manifest's ``training`` section, as ``clip_ids`` (a list)
or ``clip_ids_file`` (a file beside the model: JSON list or one id per line, optionally
verified by ``clip_ids_sha256``). A manifest without them gets the word check only, and
the report says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from trainer.datasets import Clip
from trainer.reserved import is_reserved

log = logging.getLogger(__name__)

TripleId = tuple[str, str, str]
_SHOW = 10  # offenders named in the message


class LeakageError(RuntimeError):
    """Evaluation data overlaps training data (or claims unseen words that are not)."""


def _path_suffixes(path: Path | str) -> set[str]:
    parts = PurePosixPath(Path(path).as_posix()).parts
    return {"/".join(parts[i:]) for i in range(len(parts))}


def _normalise(ids: Iterable[str | Sequence[str]]) -> tuple[set[str], set[TripleId]]:
    paths: set[str] = set()
    triples: set[TripleId] = set()
    for item in ids:
        if isinstance(item, str):
            paths.add(PurePosixPath(item.replace("\\", "/").lstrip("./")).as_posix())
        elif len(item) == 3:
            triples.add((str(item[0]), str(item[1]), str(item[2])))
        else:
            raise ValueError(f"training clip id {item!r} is neither a path nor (source, speaker, word)")
    return paths, triples


def assert_disjoint(eval_clips: Sequence[Clip], training_clip_ids: Iterable[str | Sequence[str]]) -> None:
    """Raise :class:`LeakageError` naming every evaluation clip that training used (by path or by speaker+word)."""
    paths, triples = _normalise(training_clip_ids)
    leaked = []
    for clip in eval_clips:
        if _path_suffixes(clip.path) & paths or (clip.source, clip.speaker, clip.word) in triples:
            leaked.append(clip)
    if leaked:
        names = ", ".join(str(c.path) for c in leaked[:_SHOW])
        more = f" and {len(leaked) - _SHOW} more" if len(leaked) > _SHOW else ""
        raise LeakageError(f"{len(leaked)} evaluation clips were used in training: {names}{more}")


def assert_unseen_words(eval_clips: Sequence[Clip], held_out_languages: Iterable[str] = ()) -> None:
    """Raise :class:`LeakageError` if a word is neither reserved nor of a held-out language."""
    held = set(held_out_languages)
    bad = sorted({c.word for c in eval_clips if not is_reserved(c.spoken_text) and c.lang not in held})
    if bad:
        shown = ", ".join(bad[:_SHOW]) + (f" and {len(bad) - _SHOW} more" if len(bad) > _SHOW else "")
        raise LeakageError(
            f"evaluation claims unseen words but {len(bad)} are not reserved (trainer.reserved) "
            f"nor of a held-out language {sorted(held)}: {shown}"
        )


def training_clip_ids(training: dict, model_path: Path) -> list | None:
    """The training clip ids a manifest's ``training`` section records, or None when it records none."""
    if "clip_ids" in training:
        return list(training["clip_ids"])
    name = training.get("clip_ids_file")
    if not name:
        return None
    path = Path(model_path).parent / name
    data = path.read_bytes()
    expected = training.get("clip_ids_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise LeakageError(f"{path} does not match the manifest's clip_ids_sha256; cannot trust the disjointness check")
    text = data.decode()
    if text.lstrip().startswith("["):
        return [tuple(x) if isinstance(x, list) else x for x in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def check(eval_clips: Sequence[Clip], training: dict, model_path: Path, claims_unseen_words: bool = True) -> dict:
    """Both checks for one evaluation set; returns what was checked, for the report."""
    ids = training_clip_ids(training, model_path)
    if ids is None:
        log.warning("model manifest lists no training clip ids: only the reserved-word check is possible")
    else:
        assert_disjoint(eval_clips, ids)
    if claims_unseen_words:
        assert_unseen_words(eval_clips, training.get("held_out_languages", ()))
    return {
        "clips": len(eval_clips),
        "clip_ids_checked": ids is not None,
        "training_clip_ids": 0 if ids is None else len(ids),
        "unseen_words_checked": claims_unseen_words,
    }
