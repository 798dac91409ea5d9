"""``kws-train``: meta-train an encoder and export it for the device.

Examples::

    kws-train train  --config configs/default.toml --run runs/default
    kws-train export --config configs/default.toml --run runs/default --out firmware_models/encoder.tflite
    kws-train all    --config configs/quick.toml   --run runs/quick   --out build/quick/encoder.tflite
    kws-train export --random-weights --run runs/default --out build/baselines/random/encoder.tflite
    kws-train bank   --config configs/default.toml --out firmware_models/encoder.tflite
    kws-train talk-bank --out firmware_models/encoder.tflite

``train`` resumes automatically from the run folder's checkpoint. ``export``
quantises the best validation weights to int8, checks them against the float
model and writes the ``.tflite`` and its manifest (and a model card next to it).
``bank`` rebuilds only the negative bank beside an exported model (what enrollment
calibrates thresholds against), leaving the model and its hash untouched; it and
``export`` end with the real-talk part, and ``talk-bank`` replaces only that part:
every window (0.1 s apart, the detector's hop) of the training part of
``shared/data/real_speech`` (``trainer.real_speech``; skipped with a warning where the
corpus is absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.config import START_MODEL, TrainConfig, load_config, names_exported_model
from trainer.datasets import Clip

if TYPE_CHECKING:  # importing the trainer pulls in TensorFlow; `--help` should not wait for it
    from collections.abc import Iterator

    import numpy as np

    from device.manifest import ModelManifest
    from trainer.train import TrainingData


def training_clip_id(clip: Clip) -> str:
    """A clip's id for the disjointness check: its path from its dataset folder's parent."""
    return "/".join(clip.path.parts[-4:])


def _prepare(config: TrainConfig) -> TrainingData:
    from trainer.train import prepare_data

    return prepare_data(config)


def _train(config: TrainConfig, run_dir: Path, data: TrainingData) -> None:
    from trainer.train import train, training_clock

    # a resumed run's minutes include the earlier processes' training, up to their last checkpoint
    earlier = training_clock(run_dir)
    started = time.monotonic()
    train(config, run_dir, data)
    timing = {"train_minutes": round((earlier + time.monotonic() - started) / 60, 1)}
    (run_dir / "timing.json").write_text(json.dumps(timing))


def _history(run_dir: Path) -> list[dict]:
    """The run's validation records (``history.jsonl``, one JSON object per line)."""
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def _training_cycles(run_dir: Path) -> list[dict]:
    """Steps and minutes of each training session behind ``run_dir``, its ``start_from`` runs first."""
    from trainer.config import resolve_path

    asked = json.loads((run_dir / "config.json").read_text())
    start = asked.get("start_from")
    if start and names_exported_model(start):  # an exported model: its manifest lists the sessions that made it
        cycles = _exported_cycles(run_dir / START_MODEL)
    else:
        cycles = _training_cycles(resolve_path(start)) if start else []
    history = _history(run_dir)
    cycle = {"run": run_dir.name, "steps": history[-1]["step"] if history else 0}
    if (run_dir / "timing.json").exists():
        cycle |= json.loads((run_dir / "timing.json").read_text())
    return [*cycles, cycle]


def _exported_cycles(model_path: Path) -> list[dict]:
    """The training sessions an exported model's manifest records (one, when it was made in one)."""
    from device.manifest import load_manifest

    training = load_manifest(model_path).training
    cycles = training.get("cycles")
    if cycles:
        return list(cycles)
    cycle = {"run": model_path.stem, "steps": training.get("steps", 0)}
    if "train_minutes" in training:
        cycle["train_minutes"] = training["train_minutes"]
    return [cycle]


def _exported_clip_ids(model_path: Path) -> list[str]:
    """The training clip ids an exported model's manifest lists (as the evaluation's leakage guard reads them)."""
    from device.manifest import load_manifest
    from trainer.evaluation.guard import training_clip_ids

    ids = training_clip_ids(load_manifest(model_path).training, model_path) or []
    return ["/".join(i) if isinstance(i, (list, tuple)) else str(i) for i in ids]


def _sentence_summary(config: TrainConfig, windows: int) -> dict:
    """How much unlabelled real speech trained the model, and how many speakers were kept for the bank."""
    from trainer.config import resolve_path
    from trainer.sentences import sentence_files, split_by_speaker

    training, bank = split_by_speaker(sentence_files([resolve_path(p) for p in config.data.sentences]),
                                      config.data.bank_speaker_fraction)  # fmt: skip
    return {
        "windows": windows,
        "files": len(training),
        "speakers": len({f.parent for f in training}),
        "bank_only_speakers": len({f.parent for f in bank} - {f.parent for f in training}),
    }


def _check_run_for_export(run_dir: Path, random_weights: bool) -> None:
    """Refuse, before minutes of decoding, to export from a run folder that lacks what export reads.

    Even the random-weights baseline needs its run: the input normalisation and the corpus summary
    come from training's data, so the baseline sees features scaled as the trained encoder does.
    """
    needed = ["normalisation.npz", "corpus.json"] + ([] if random_weights else ["best.weights.npz"])
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(
            f"kws-train export: {run_dir} has no {', '.join(missing)}: export needs a training run there "
            f"(make data, then `kws-train train --run {run_dir}` or make export)"
        )


def _export(config: TrainConfig, run_dir: Path, out: Path, data: TrainingData, random_weights: bool = False) -> None:
    import numpy as np

    from trainer.export import export
    from trainer.model import build_encoder
    from trainer.model_card import write_model_card
    from trainer.train import load_weights, representative_windows

    normalisation = np.load(run_dir / "normalisation.npz")
    model = build_encoder(config.encoder, normalisation["mean"], normalisation["std"])
    if not random_weights:  # random weights: the evaluation's baseline, the architecture untrained
        load_weights(model, run_dir / "best.weights.npz")
    cycles = [] if random_weights else _training_cycles(run_dir)
    history = _history(run_dir) if cycles else []
    summary = {
        "corpus": json.loads((run_dir / "corpus.json").read_text()),
        "held_out_languages": config.data.held_out_languages,
        "steps": sum(c["steps"] for c in cycles),
        "best_validation_accuracy": max((h["validation_accuracy"] for h in history), default=None),
        "recipe": {
            "loss_weights": {
                "prototypical": config.prototypical_weight,
                "classification": config.classification_weight,
                "distillation": config.distillation_weight,
                "relational_distillation": config.relational_distillation_weight,
            },
            "real_word_fraction": config.real_word_fraction,
        },
    }
    if any("train_minutes" in c for c in cycles):
        summary["train_minutes"] = round(sum(c.get("train_minutes", 0.0) for c in cycles), 1)
    if len(cycles) > 1:
        summary["cycles"] = cycles
    if data.train_maker.sentences:
        summary["sentences"] = _sentence_summary(config, len(data.train_maker.sentences))
    representative = representative_windows(data, config.representative_windows, config.seed)
    noise = data.train_maker.noise_bank
    speech, words = _bank_sources(config, data.corpus.train, noise)
    # Real recordings that trained the model, for the evaluation's disjointness check (synthetic voices
    # are identified by the generator's seed and speaker ids in the corpus summary instead).
    clip_ids = [training_clip_id(c) for c in data.corpus.train if c.source not in config.synthetic_sources]
    if not random_weights and (run_dir / START_MODEL).is_file():  # and every clip that trained the start model
        clip_ids = list(dict.fromkeys([*_exported_clip_ids(run_dir / START_MODEL), *clip_ids]))
    manifest = export(
        model,
        config,
        representative,
        data.validation_features,
        out,
        summary,
        speech,
        noise,
        clip_ids,
        name="random-weights baseline" if random_weights else "encoder",
        enforce_parity=config.parity_gate and not random_weights,
        negative_words=words,
    )
    if not random_weights:
        manifest = _add_talk(out)
    write_model_card(out, manifest)
    logging.info("exported %s (%d bytes): %s", out, manifest.figures["model_bytes"], manifest.figures)


def _bank_sources(config: TrainConfig, train: list[Clip], noise: list[np.ndarray]) -> tuple[Iterator, Iterator]:
    """The negative bank's speech runs and isolated-word runs (TTS clips only: never a recording the evaluation
    plays)."""
    import numpy as np

    from trainer.config import resolve_path
    from trainer.negatives import speech_runs, word_runs

    folders = [resolve_path(p) for p in config.data.negatives]
    speech = speech_runs(folders, [c.path for c in train], config.seed, config.data.bank_speaker_fraction)
    synthetic = [c.path for c in train if c.source in config.synthetic_sources]
    if not synthetic:
        logging.warning("no TTS clips among the training data: the negative bank has no isolated words")
    rng = np.random.default_rng(config.seed)
    picks = rng.choice(len(synthetic), min(len(synthetic), config.negative_bank_words), replace=False)
    return speech, word_runs([synthetic[i] for i in sorted(picks)], noise, config.seed)


def _rebuild_bank(config: TrainConfig, model_path: Path) -> None:
    from device.encoder import Encoder
    from trainer.augment import load_noise_bank
    from trainer.config import resolve_path
    from trainer.corpus import build_corpus
    from trainer.negatives import bank_summary, build_negative_bank, replace_negative_bank

    encoder = Encoder(model_path)
    corpus = build_corpus(config.data, config.seed)
    noise = load_noise_bank([resolve_path(p) for p in config.data.noise])
    speech, words = _bank_sources(config, corpus.train, noise)
    bank = build_negative_bank(encoder, speech, noise, config.negative_bank_size, config.seed, words)
    summary = bank_summary(bank, config.negative_bank_size)
    replace_negative_bank(model_path, bank, summary)
    _add_talk(model_path)
    logging.info("negative bank of %s: %s", model_path, summary)


TALK_HOP_SECONDS = 0.1  # the detector's hop: calibration sees every window the detector would


def _add_talk(model_path: Path, talk_root: Path | None = None) -> ModelManifest:
    """Replace the real-talk part of the bank beside ``model_path`` with the talk corpus's training part."""
    import numpy as np

    from device.encoder import Encoder
    from device.enroll import load_negatives
    from device.manifest import load_manifest
    from trainer.evaluation.data import shared_data
    from trainer.negatives import replace_negative_bank, talk_windows, with_talk
    from trainer.real_speech import talk_files

    root = talk_root or shared_data("real_speech")
    if not (root / "manifest.csv").is_file():
        logging.warning("no real-talk corpus at %s: the negative bank keeps no talk windows", root)
        return load_manifest(model_path)
    encoder = Encoder(model_path)
    files = talk_files(root, "train")
    talk = talk_windows(encoder, files, TALK_HOP_SECONDS, seed=0)
    bank = load_negatives(encoder)
    summary = dict(encoder.manifest.training.get("negative_bank", {"windows": len(bank)}))
    bank, summary = with_talk(bank, summary, talk, [f.file_id for f in files])
    logging.info("negative bank: %d real-talk windows from %d files (%.1f min)", len(talk), len(files),
                 sum(f.seconds for f in files) / 60)  # fmt: skip
    return replace_negative_bank(model_path, np.asarray(bank), summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["train", "export", "all", "bank", "talk-bank"], help="what to do")
    parser.add_argument("--config", type=Path, default=Path("configs/default.toml"), help="training config (TOML)")
    parser.add_argument("--run", type=Path, default=Path("runs/default"), help="run folder (checkpoints, logs)")
    parser.add_argument("--out", type=Path, default=Path("firmware_models/encoder.tflite"), help="exported model")
    parser.add_argument(
        "--random-weights", action="store_true", help="export: the untrained architecture (an evaluation baseline)"
    )
    args = parser.parse_args(argv)
    args.run.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.run / "train.log")],
    )
    config = load_config(args.config)
    if args.command == "bank":
        _rebuild_bank(config, args.out)
        return 0
    if args.command == "talk-bank":
        _add_talk(args.out)
        return 0
    if args.command == "export":
        _check_run_for_export(args.run, args.random_weights)
    data = _prepare(config)  # once: `all` trains and exports from the same decoded clips
    if args.command in ("train", "all"):
        _train(config, args.run, data)
    if args.command in ("export", "all"):
        _export(config, args.run, args.out, data, args.random_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
