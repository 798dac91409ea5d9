"""Episodic meta-training of the encoder, with checkpoints, resume and validation.

A run lives in one folder: ``config.json`` (what was asked), ``checkpoint.npz``
(latest state, written atomically), ``best.weights.npz`` (best validation),
``history.jsonl`` (one line per validation) and ``train.log``. Re-running the same
command resumes where it stopped. It runs under a ``tf.distribute`` strategy
(one episode per replica), so the same command uses several GPUs when present.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from device.frontend import FrontendConfig, log_mel
from device.manifest import load_manifest, manifest_path_for
from trainer.augment import Augmenter, load_noise_bank
from trainer.config import START_MODEL, TrainConfig, names_exported_model, resolve_path
from trainer.corpus import Corpus, build_corpus
from trainer.datasets import summarize
from trainer.episodes import EpisodeConfig
from trainer.losses import additive_margin_loss, distillation_loss, episode_loss, relational_distillation_loss
from trainer.model import build_encoder
from trainer.pipeline import EpisodeMaker, load_bank, stream_episodes
from trainer.sentences import load_sentence_windows
from trainer.teacher import teacher_dir, teacher_targets
from trainer.warm_start import ExportedWeights, read_exported_weights, rebuild_encoder

log = logging.getLogger(__name__)


class LossHead(keras.layers.Layer):
    """Training-only parameters: cosine scale, rejection threshold, and one weight vector per training word."""

    def __init__(self, num_words: int, embedding_size: int, teacher_size: int = 96) -> None:
        super().__init__()
        self.num_words, self.embedding_size, self.teacher_size = num_words, embedding_size, teacher_size

    def build(self, input_shape=None) -> None:
        self.log_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(np.log(10.0)))
        self.threshold = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.5))
        self.word_weights = self.add_weight(shape=(self.num_words, self.embedding_size), initializer="glorot_normal")
        self.projection = self.add_weight(shape=(self.embedding_size, self.teacher_size), initializer="glorot_normal")

    def call(self, inputs):
        return inputs


@dataclass
class TrainingData:
    corpus: Corpus
    train_maker: EpisodeMaker
    validation_features: np.ndarray  # [episodes, size, frames, mels]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    teacher_targets: np.ndarray | None  # [training clips + sentence windows, 96] centred unit vectors, or None


def learning_rate_at(step: int, elapsed_seconds: float, config: TrainConfig, budget_seconds: float) -> float:
    """Linear warm-up, then cosine decay by whichever runs out first: the steps or the time budget.

    A run stopped by its time budget therefore still ends annealed, instead of at a
    high learning rate part-way down a schedule planned for more steps.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if budget_seconds > 0:
        progress = max(progress, elapsed_seconds / budget_seconds)
    floor = 0.02 * config.learning_rate
    return floor + (config.learning_rate - floor) * 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress)))


def strategy_for_this_machine() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def prepare_data(config: TrainConfig) -> TrainingData:
    """Read, filter, decode and split the corpus; build the fixed validation episodes."""
    frontend = config.frontend
    corpus = build_corpus(config.data, config.seed)
    log.info("training clips: %s", summarize(corpus.train))
    log.info("validation clips (held-out words): %s", summarize(corpus.validation))
    noise = load_noise_bank([resolve_path(p) for p in config.data.noise])
    train_bank = load_bank(corpus.train, desc="decoding training clips")
    validation_bank = load_bank(corpus.validation, desc="decoding validation clips")
    common = dict(noise_bank=noise, window_frames=config.encoder.window_frames, frontend=frontend)
    augmenter = Augmenter.from_dict(config.augment, noise, frontend)
    sentences, sentence_keys = _sentence_windows(config, frontend)
    episodes = config.episodes if sentences else replace(config.episodes, sentence_queries=0)
    train_maker = EpisodeMaker(
        train_bank,
        [c.word for c in corpus.train],
        episodes,
        augmenter,
        seed=config.seed,
        focus_words=_recorded_words(config, corpus),
        focus_fraction=config.real_word_fraction,
        sentences=sentences,
        **common,
    )
    validation_maker = EpisodeMaker(
        validation_bank,
        [c.word for c in corpus.validation],
        config.validation_episodes,
        None,
        seed=config.seed + 1,
        **common,
    )
    validation = np.stack([validation_maker.features(i) for i in range(config.num_validation_episodes)])
    sample = np.concatenate([train_maker.features(i) for i in range(4)]).reshape(-1, frontend.num_mels)
    mean, std = sample.mean(axis=0), sample.std(axis=0) + 1e-3
    targets = _teacher_targets(config, [*train_bank, *sentences], [*(c.path for c in corpus.train), *sentence_keys])
    return TrainingData(corpus, train_maker, validation, mean, std, targets)


def _sentence_windows(config: TrainConfig, frontend: FrontendConfig) -> tuple[list[np.ndarray], list[Path]]:
    """Windows of the configured unlabelled sentences, or none (with one line saying why)."""
    if not config.episodes.sentence_queries:
        return [], []
    folders = [resolve_path(p) for p in config.data.sentences]
    negatives = [resolve_path(p) for p in config.data.negatives]
    shared = [str(f) for f in folders if any(f.is_relative_to(n) or n.is_relative_to(f) for n in negatives)]
    if shared and config.data.bank_speaker_fraction <= 0:
        log.warning("%s is both training data and the negative bank's speech: the bank will score low and "
                    "thresholds calibrated on it will be too permissive", sorted(shared))  # fmt: skip
    samples = frontend.samples_for_frames(config.encoder.window_frames)
    windows, keys = load_sentence_windows(folders, samples, config.data.bank_speaker_fraction)
    if not windows:
        log.warning("no sentence audio in %s: episodes go without sentence windows", [str(f) for f in folders])
    return windows, keys


def _recorded_words(config: TrainConfig, corpus: Corpus) -> set[str]:
    """Training words with enough clips recorded by people (not TTS) to fill an episode's way alone."""
    counts = Counter(c.word for c in corpus.train if c.source not in config.synthetic_sources)
    words = {w for w, n in counts.items() if n >= config.episodes.clips_per_word}
    log.info("%d training words recorded by people; %.0f%% of episode ways drawn from them", len(words),
             100 * config.real_word_fraction if words else 0)  # fmt: skip
    return words


def _teacher_targets(config: TrainConfig, bank: list[np.ndarray], keys: list[Path]) -> np.ndarray | None:
    """Centred, normalised teacher vectors for every training clip and sentence window (centring helps).

    TTS clips get targets too: the teacher's geometry on any speech is what the student should copy,
    and the bulk of the inputs it can be shown are synthetic.
    """
    if config.distillation_weight <= 0 and config.relational_distillation_weight <= 0:
        return None
    if not (teacher_dir() / "embedding_model.onnx").is_file():
        log.warning("distillation off: teacher model not found in %s", teacher_dir())
        return None
    targets = teacher_targets(bank, keys, resolve_path("data_cache/teacher"))
    targets -= targets.mean(axis=0)
    log.info("distillation targets for all %d training clips and sentence windows", len(bank))
    return (targets / (np.linalg.norm(targets, axis=1, keepdims=True) + 1e-9)).astype(np.float32)


def validation_accuracy(model: keras.Model, features: np.ndarray, config: EpisodeConfig) -> tuple[float, float]:
    """Mean closed-set and open-set accuracy of the fixed validation episodes (cosine, no learned scalars)."""
    closed, opened = [], []
    for episode in features:
        embeddings = tf.constant(model(episode, training=False))
        _, accuracy, open_accuracy = episode_loss(
            embeddings, config.ways, config.shots, config.queries, tf.constant(10.0), tf.constant(0.5)
        )
        closed.append(float(accuracy))
        opened.append(float(open_accuracy))
    return float(np.mean(closed)), float(np.mean(opened))


def _atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _weights_dict(variables) -> dict:
    return {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}


def _assign(variables, arrays) -> None:
    for i, variable in enumerate(variables):
        variable.assign(arrays[f"v{i:04d}"])


def load_weights(model: keras.Model, path: Path) -> None:
    with np.load(path) as arrays:
        _assign(model.weights, arrays)


def _saved_part(saved, prefix: str) -> dict:
    """One part of a checkpoint (``m_`` encoder, ``h_`` loss head, ``o_`` optimizer), keyed as ``_assign`` expects."""
    return {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}


def training_clock(run_dir: Path) -> float:
    """Seconds of training the run's checkpoint has recorded (0 without one).

    A resumed process continues this clock, so the time budget, the learning-rate schedule and the
    reported minutes count every process that trained the run, not only the last one.
    """
    checkpoint = run_dir / "checkpoint.npz"
    if not checkpoint.is_file():
        return 0.0
    with np.load(checkpoint) as saved:
        return float(saved["elapsed_seconds"]) if "elapsed_seconds" in saved else 0.0


def start_weights(model: keras.Model, head: LossHead, previous_run: Path) -> None:
    """Start a new cosine cycle from a finished run's latest encoder and loss head (a warm restart).

    The optimizer starts fresh: the new cycle warms up and decays its own learning rate. The head
    carries over only when it has one row per word as now (the same corpus); otherwise it starts anew.
    """
    checkpoint = previous_run / "checkpoint.npz"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"start_from: {checkpoint} does not exist; train that run first")
    with np.load(checkpoint) as saved:
        _assign(model.weights, _saved_part(saved, "m_"))
        head_arrays = _saved_part(saved, "h_")
        if [a.shape for a in head_arrays.values()] == [tuple(w.shape) for w in head.weights]:
            _assign(head.weights, head_arrays)
        else:
            log.warning("start_from: %s has a different word list; the loss head starts anew", previous_run)
        log.info("starting a new cycle from %s (its step %d)", checkpoint, int(saved["step"]))


def starts_from_export(config: TrainConfig, run_dir: Path) -> Path | None:
    """The run's copy of the exported ``.tflite`` that ``start_from`` names, or None (it names a run folder).

    The model, its manifest and its training-clip list are copied into the run folder when the run
    starts, so an export of this run over the same path (``firmware_models/``) cannot change what it
    started from: its history, its clip list and, on resume, its input normalisation. Its loss head
    starts anew and its encoder is rebuilt in float (``trainer.warm_start``).
    """
    if not names_exported_model(config.start_from):
        return None
    snapshot = run_dir / START_MODEL
    if not snapshot.is_file():
        source = resolve_path(config.start_from)
        if not source.is_file():
            raise FileNotFoundError(f"start_from: {source} does not exist")
        manifest = load_manifest(source)  # refuses a model that does not match its manifest
        clip_ids = manifest.training.get("clip_ids_file")
        if clip_ids:
            shutil.copyfile(source.parent / clip_ids, run_dir / clip_ids)
        shutil.copyfile(manifest_path_for(source), manifest_path_for(snapshot))
        shutil.copyfile(source, snapshot)
        log.info("start_from: copied %s (sha256 %s) to %s", source, manifest.sha256[:12], snapshot)
    return snapshot


def input_normalisation(
    config: TrainConfig, data: TrainingData, exported: ExportedWeights | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and standard deviation the encoder's input is normalised with.

    An exported start's weights expect its own normalisation: kept, and exported with it. When this
    run changes the frontend (another mel range, say), the old statistics describe other bins, so the
    new features' own statistics put them on the scale the first layer was trained on.
    """
    if exported is None:
        return data.feature_mean, data.feature_std
    before = load_manifest(exported.path).frontend
    if before == config.frontend:
        return exported.mean, exported.std
    changed = {
        k: (v, getattr(config.frontend, k)) for k, v in before.to_dict().items() if getattr(config.frontend, k) != v
    }
    log.info("start_from: the frontend changes (%s): input normalisation from this run's features", changed)
    return data.feature_mean, data.feature_std


def train(config: TrainConfig, run_dir: Path, data: TrainingData) -> Path:
    """Train (or resume) in ``run_dir`` on ``prepare_data``'s result; return the path of the best weights.

    The caller prepares the data so that ``kws-train all`` can hand the same decoded corpus
    to the export instead of decoding it twice (minutes).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    keras.utils.set_random_seed(config.seed)
    exported_start = starts_from_export(config, run_dir)
    exported = read_exported_weights(exported_start) if exported_start is not None else None
    mean, std = input_normalisation(config, data, exported)  # the model's, the run's record and its export's
    np.savez(run_dir / "normalisation.npz", mean=mean, std=std)
    (run_dir / "corpus.json").write_text(
        json.dumps(
            {
                "train": summarize(data.corpus.train),
                "validation": summarize(data.corpus.validation),
                "absent_sources": data.corpus.skipped_sources,
            },
            indent=2,
        )
    )
    strategy = strategy_for_this_machine()
    replicas = strategy.num_replicas_in_sync
    ep = data.train_maker.config
    checkpoint, best_path = run_dir / "checkpoint.npz", run_dir / "best.weights.npz"
    with strategy.scope():
        if exported is not None and not checkpoint.is_file():  # a resumed run takes every weight from its checkpoint
            calibration = representative_windows(data, config.representative_windows, config.seed)
            model = rebuild_encoder(exported, config.encoder, calibration, (mean, std))
            log.info("encoder rebuilt from %s (float, batch norms re-expanded on %d windows)", exported_start,
                     len(calibration))  # fmt: skip
        else:
            model = build_encoder(config.encoder, mean, std)
        head = LossHead(len(data.train_maker.words), config.encoder.embedding_size)
        head.build()
        optimizer = keras.optimizers.AdamW(0.0, weight_decay=config.weight_decay)
        trainable = model.trainable_variables + head.trainable_variables
        optimizer.build(trainable)

    step, best, elapsed_before = 0, -1.0, training_clock(run_dir)
    if checkpoint.is_file():
        with np.load(checkpoint) as saved:
            _assign(model.weights, _saved_part(saved, "m_"))
            _assign(head.weights, _saved_part(saved, "h_"))
            _assign(optimizer.variables, _saved_part(saved, "o_"))
            step, best = int(saved["step"]), float(saved["best"])
        log.info("resumed from %s at step %d (best validation %.3f)", checkpoint, step, best)
    elif config.start_from and exported_start is None:
        start_weights(model, head, resolve_path(config.start_from))

    # sentence windows (indices past the clips) have no word: -1 keeps them out of the classification loss
    unlabelled = np.full(len(data.train_maker.sentences), -1, np.int32)
    word_table = tf.constant(np.concatenate([data.train_maker.word_ids, unlabelled]))
    distil = data.teacher_targets is not None
    target_table = tf.constant(data.teacher_targets if distil else np.zeros((1, 96), np.float32))

    @tf.function
    def replica_step(features, clip_index):
        keep = clip_index >= 0
        safe_index = tf.maximum(clip_index, 0)
        word_labels = tf.where(keep, tf.gather(word_table, safe_index), -1)
        with tf.GradientTape() as tape:
            embeddings = model(features, training=True)
            loss, accuracy, open_accuracy = episode_loss(
                embeddings, ep.ways, ep.shots, ep.queries, tf.exp(head.log_scale), head.threshold
            )
            classification = additive_margin_loss(
                embeddings, word_labels, head.word_weights, config.classification_scale, config.classification_margin
            )
            total = config.prototypical_weight * loss + config.classification_weight * classification
            distillation = relational = tf.constant(0.0)
            if distil:
                targets = tf.gather(target_table, safe_index)
                distillation = distillation_loss(embeddings, targets, head.projection, keep)
                total += config.distillation_weight * distillation
                if config.relational_distillation_weight > 0:
                    relational = relational_distillation_loss(embeddings, targets, keep, config.relational_temperature)
                    total += config.relational_distillation_weight * relational
            scaled = total / replicas
        gradients = tape.gradient(scaled, trainable)
        optimizer.apply_gradients(zip(gradients, trainable, strict=True))
        return loss, accuracy, open_accuracy, classification, distillation, relational

    workers = config.workers or os.cpu_count() or 1
    shape = (ep.size, config.encoder.window_frames, data.train_maker.frontend.num_mels)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        def generator():
            # replica r trains on episodes r, r+R, r+2R, ... (each a full episode)
            for i, features in enumerate(stream_episodes(data.train_maker, step * replicas, workers)):
                if i % replicas == context.input_pipeline_id:
                    yield features

        spec = (tf.TensorSpec(shape, tf.float32), tf.TensorSpec((ep.size,), tf.int32))
        return tf.data.Dataset.from_generator(generator, output_signature=spec).prefetch(2)

    episodes = iter(strategy.distribute_datasets_from_function(dataset_fn))
    history = open(run_dir / "history.jsonl", "a")  # noqa: SIM115 - closed after the loop, flushed per line
    # a resumed run keeps its clock, so its time budget and learning-rate schedule go on where they stopped
    started = time.monotonic() - elapsed_before
    progress = tqdm(total=config.steps, initial=step, desc="meta-training", unit="episode")
    running = []
    budget_seconds = 60 * config.time_budget_minutes
    while step < config.steps:
        elapsed = time.monotonic() - started
        optimizer.learning_rate = learning_rate_at(step, elapsed, config, budget_seconds)
        losses = strategy.run(replica_step, args=next(episodes))
        running.append([float(strategy.reduce("MEAN", x, axis=None)) for x in losses])
        step += 1
        progress.update(1)
        over_time = budget_seconds > 0 and (time.monotonic() - started) > budget_seconds
        if step % config.validate_every == 0 or step == config.steps or over_time:
            closed, opened = validation_accuracy(model, data.validation_features, config.validation_episodes)
            train_loss, train_acc, train_open, train_classification, train_distillation, train_relational = np.mean(
                running, axis=0
            )
            running = []
            record = {
                "step": step,
                "loss": round(float(train_loss), 4),
                "train_accuracy": round(float(train_acc), 4),
                "train_open_accuracy": round(float(train_open), 4),
                "classification_loss": round(float(train_classification), 4),
                "distillation_loss": round(float(train_distillation), 4),
                "relational_distillation_loss": round(float(train_relational), 4),
                "validation_accuracy": round(closed, 4),
                "validation_open_accuracy": round(opened, 4),
                "learning_rate": round(float(optimizer.learning_rate.numpy()), 6),
                "scale": round(float(np.exp(head.log_scale.numpy())), 3),
                "threshold": round(float(head.threshold.numpy()), 3),
                "minutes": round((time.monotonic() - started) / 60, 2),
            }
            history.write(json.dumps(record) + "\n")
            history.flush()
            progress.write(json.dumps(record))
            if closed > best:
                best = closed
                _atomic_savez(best_path, **_weights_dict(model.weights))
            state = {f"m_{k}": v for k, v in _weights_dict(model.weights).items()}
            state |= {f"h_{k}": v for k, v in _weights_dict(head.weights).items()}
            state |= {f"o_{k}": v for k, v in _weights_dict(optimizer.variables).items()}
            elapsed = time.monotonic() - started
            _atomic_savez(checkpoint, step=step, best=best, elapsed_seconds=elapsed, **state)
            if over_time:
                log.warning("time budget of %.0f min reached at step %d: stopping", config.time_budget_minutes, step)
                break
    progress.close()
    history.close()
    return best_path


def representative_windows(data: TrainingData, count: int, seed: int) -> np.ndarray:
    """Training-distribution windows (augmented training speech) for int8 calibration.

    Reuses the clips and augmenter ``prepare_data`` already decoded and built.
    """
    maker = data.train_maker
    rng = np.random.default_rng(seed + 7)
    picks = rng.choice(len(maker.bank), min(count, len(maker.bank)), replace=False)
    windows = [
        log_mel(maker.augmenter(maker.bank[i].astype(np.float32) / 32768.0, maker.window_samples, rng), maker.frontend)
        for i in picks
    ]
    return np.stack(windows).astype(np.float32)
