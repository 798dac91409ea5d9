"""Synthetic voices for evaluation: the 20 reserved words said by TTS speakers that training never used.

Why: the recorded sets each have a gap (FSDD is one 8 kHz channel and digits only; the Speech
Commands sample has about ten takes a word). A TTS set adds voices across every engine, each
saying every reserved word several times, so one-speaker enrollment against other voices is
measured on all twenty words at once.

Training's synthetic speakers are ``make data``'s: ``sample_speakers(catalog, 300, seed 0)`` (and,
when present, every speaker in ``data_cache/synth/manifest.jsonl``). This set draws its speakers
from another seed and keeps only those whose identity (engine, voice, variant, rate, pitch,
vocal-tract warp) is none of those; the engines' base voices are shared, there are only a few
dozen. The words are reserved, so no training set ever held them (``trainer.reserved``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from trainer.reserved import EVALUATION_KEYWORDS
from trainer.synth import (
    DEFAULT_FOREIGN_SHARE,
    DEFAULT_SPEAKERS,
    ENGINES,
    Speaker,
    Summary,
    assign,
    find_voices,
    render_plan,
    sample_speakers,
)

EVAL_SEED = 2026
SPEAKERS = 20
TAKES = 5  # one voice's takes make a 5-shot enrollment (later takes jitter rate and pitch)
TRAINING_SEED = 0  # make data's default seed


def unavailable() -> str | None:
    """Why the set cannot be made here (no TTS engine), or None."""
    if not any(shutil.which(tool) for tool in ("espeak-ng", "flite", "festival")):
        return "no TTS engine installed (scripts/install_tts.sh)"
    return None


def training_speaker_ids(catalog, synth_manifest: Path | None = None) -> set[str]:
    """Every synthetic speaker identity training used: ``make data``'s draw, plus its manifest when on disk."""
    ids = {s.id for s in sample_speakers(catalog, DEFAULT_SPEAKERS, TRAINING_SEED, DEFAULT_FOREIGN_SHARE)}
    if synth_manifest is not None and synth_manifest.is_file():
        with open(synth_manifest, encoding="utf-8") as rows:
            ids |= {json.loads(line)["speaker"] for line in rows if line.strip()}
    return ids


def evaluation_speakers(catalog, count: int, excluded: set[str]) -> list[Speaker]:
    """``count`` speakers from the evaluation seed whose identities training never used."""
    drawn = sample_speakers(catalog, 4 * count, EVAL_SEED, DEFAULT_FOREIGN_SHARE)
    speakers = [s for s in drawn if s.id not in excluded][:count]
    if len(speakers) < count:
        raise RuntimeError(f"only {len(speakers)} evaluation speakers differ from training's; need {count}")
    return speakers


def render(out_dir: Path, synth_manifest: Path | None = None, speakers: int = SPEAKERS, takes: int = TAKES) -> Summary:
    """Speak every reserved keyword ``takes`` times by each of ``speakers`` unused voices into ``out_dir`` (cached).

    Raises RuntimeError if a chosen speaker is among training's (it cannot be, by construction:
    the check is the promise written down).
    """
    catalog = find_voices(ENGINES)
    excluded = training_speaker_ids(catalog, synth_manifest)
    chosen = evaluation_speakers(catalog, speakers, excluded)
    leaked = {s.id for s in chosen} & excluded
    if leaked:
        raise RuntimeError(f"evaluation speakers used in training: {sorted(leaked)}")
    plan = assign(list(EVALUATION_KEYWORDS), chosen, per_word=len(chosen), takes=takes, seed=EVAL_SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = render_plan(out_dir, plan, EVAL_SEED)
    (out_dir / "speakers.json").write_text(
        json.dumps({"seed": EVAL_SEED, "speakers": [s.id for s in chosen], "training_speakers": len(excluded)}) + "\n"
    )
    if summary.failed:
        raise RuntimeError(f"{summary.failed} evaluation clips failed to render in {out_dir}")
    return summary
