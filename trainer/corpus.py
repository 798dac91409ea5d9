"""The training corpus: every configured source, minus what must never be trained on.

Excluded, always: the reserved evaluation words (and their homophones and
translations, see ``trainer.reserved``), every word of a held-out
language, and every speaker who also speaks a reserved word in the same dataset
(so cross-speaker evaluation figures are on unseen voices too). The remaining
words are split word-disjointly into training and validation. An English word keeps one
class whatever the source (``en_open`` from a recorded dataset is the TTS word ``open``), so
that recordings and synthetic takes of a word pull towards the same point.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from trainer.config import DataConfig, resolve_path
from trainer.datasets import Clip, read_dataset
from trainer.reserved import is_reserved

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    train: list[Clip]
    validation: list[Clip]
    held_out: list[Clip]  # held-out-language clips: evaluation only
    skipped_sources: list[str]


def _usable(clips: list[Clip], held_out_languages: list[str]) -> tuple[list[Clip], list[Clip]]:
    reserved_speakers = {c.speaker_key for c in clips if is_reserved(c.spoken_text)}
    kept, held_out = [], []
    for clip in clips:
        if is_reserved(clip.spoken_text) or clip.speaker_key in reserved_speakers:
            continue
        (held_out if clip.lang in held_out_languages else kept).append(clip)
    return [_english_label(c) for c in kept], held_out


def _english_label(clip: Clip) -> Clip:
    return replace(clip, word=clip.word[3:]) if clip.lang == "en" and clip.word.startswith("en_") else clip


def build_corpus(config: DataConfig, seed: int) -> Corpus:
    """Read the sources (a missing one is skipped with one line), filter, and split by word."""
    clips, held_out, skipped = [], [], []
    for source in config.sources:
        folder = resolve_path(source)
        if not folder.is_dir():
            log.warning("training source %s is absent: skipped", folder)
            skipped.append(str(folder))
            continue
        kept, out = _usable(read_dataset(folder), config.held_out_languages)
        log.info("source %s: %d clips kept, %d held out (language)", folder, len(kept), len(out))
        clips += kept
        held_out += out
    counts = Counter(c.word for c in clips)
    clips = [c for c in clips if counts[c.word] >= config.min_clips_per_word]
    rng = np.random.default_rng(seed)
    if config.max_clips and len(clips) > config.max_clips:
        clips = [clips[i] for i in sorted(rng.choice(len(clips), config.max_clips, replace=False))]
    words = sorted({c.word for c in clips})
    validation_words = set(rng.choice(words, max(1, int(len(words) * config.validation_word_fraction)), False))
    train = [c for c in clips if c.word not in validation_words]
    validation = [c for c in clips if c.word in validation_words]
    assert not any(is_reserved(c.spoken_text) for c in train), "a reserved word reached the training set"
    return Corpus(train, validation, held_out, skipped)
