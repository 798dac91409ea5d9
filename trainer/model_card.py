"""A human-readable model card written next to every exported encoder."""

from __future__ import annotations

import json
from pathlib import Path

from device.manifest import ModelManifest


def _sentences_row(sentences: dict | None) -> str:
    if not sentences:
        return "none"
    return (
        f"{sentences['windows']} windows of unlabelled read speech from {sentences['files']} files by "
        f"{sentences['speakers']} speakers, as open-set queries and teacher targets; "
        f"{sentences['bank_only_speakers']} more speakers kept out of training for the negative bank"
    )


def _bank_row(manifest: ModelManifest) -> str:
    bank = manifest.training.get("negative_bank")
    if not bank:
        return f"`{manifest.negatives_file}`" if manifest.negatives_file else "none"
    talk = int(bank.get("talk_windows", 0))
    talk_part = (
        f", {talk} windows (every 0.1 s) of real talk from {len(bank.get('talk_files', []))} files of the training "
        "part of `real_speech` (`kws-train talk-bank`)"
        if talk
        else ""
    )
    return (
        f"`{manifest.negatives_file}`: {bank['windows']} windows, {bank['isolated_word_windows']} of them TTS words "
        f"said alone in room noise{talk_part} (enrollment sets each threshold just under the closest ten)"
    )


def _sessions_clause(cycles: list[dict]) -> str:
    return f", in {len(cycles)} training sessions (`start_from`; see the training row)" if len(cycles) > 1 else ""


def _cycles_text(cycles: list[dict]) -> str:
    """How a run made of several training sessions (``start_from``) split its episodes and minutes."""
    if len(cycles) < 2:
        return ""
    parts = [f"{c['steps']} episodes / {c.get('train_minutes', '?')} min (`{c['run']}`)" for c in cycles]
    return f"; {len(cycles)} sessions, each a warm-up and cosine decay: " + ", then ".join(parts)


def write_model_card(model_path: Path, manifest: ModelManifest) -> Path:
    """Write ``README.md`` beside the model from its manifest (all figures are measured ones)."""
    f, t = manifest.figures, manifest.training
    card = f"""# Encoder `{manifest.model_file}`

Made by `make export` on {manifest.created}{_sessions_clause(t.get("cycles", []))}. sha256 `{manifest.sha256}`.

| what | value |
| --- | --- |
| architecture | depthwise-separable CNN, {json.dumps(t.get("encoder", {}).get("blocks"))} blocks, \
L2-normalised {manifest.embedding_size}-dim embedding |
| input | {manifest.window_frames} log-mel frames x {manifest.frontend.num_mels} mels \
({manifest.window_seconds:.3f} s), int8 (scale {manifest.input.scale:.5f}, zero point {manifest.input.zero_point}) |
| size | {f.get("model_bytes")} bytes int8 TFLite, {f.get("parameters")} parameters |
| compute | {f.get("macs_per_window")} multiply-accumulates per window |
| training | {t.get("steps")} episodes ({json.dumps(t.get("episodes"))}), {t.get("train_minutes", "?")} min, \
seed {t.get("seed")}{_cycles_text(t.get("cycles", []))} |
| recipe | loss weights {json.dumps(t.get("recipe", {}).get("loss_weights"))}; \
{100 * t.get("recipe", {}).get("real_word_fraction", 0):.0f}% of episode words drawn from recorded words |
| read sentences | {_sentences_row(t.get("sentences"))} |
| negative bank | {_bank_row(manifest)} |
| held-out languages | {", ".join(t.get("held_out_languages", []))} |
| validation (held-out words) | float {f.get("float_validation_accuracy")}, int8 {f.get("int8_validation_accuracy")} \
few-shot accuracy; int8/float mean cosine {f.get("int8_mean_cosine")} |

Training data (clips / words / speakers per source):

```json
{json.dumps(t.get("corpus", {}), indent=2)}
```

Reserved evaluation words (`yes no up down left right on off stop go`, `zero`..`nine`, their homophones and
translations) were excluded from training, and so were the speakers who say them in the same dataset.
Few-shot accuracy on those unseen words is measured by `make eval` and written to `BENCHMARKS.md`.
"""
    path = model_path.parent / "README.md"
    path.write_text(card)
    return path
