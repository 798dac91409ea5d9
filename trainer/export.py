"""Export a trained encoder as a full-integer int8 TFLite model plus its manifest.

The exported model is checked by the *device's* own loader before it is
accepted: the int8 embeddings must stay close to the float ones (mean cosine >=
0.98) and few-shot accuracy on the validation episodes may drop by at most two
points, or the export fails and nothing is written to the destination.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from device.encoder import Encoder
from device.manifest import ModelManifest, TensorSpec, manifest_path_for, sha256_of
from trainer.config import TrainConfig
from trainer.model import count_macs
from trainer.negatives import bank_summary, build_negative_bank
from trainer.tflm_ops import check_micro_ops

log = logging.getLogger(__name__)

MIN_MEAN_COSINE = 0.98
MAX_ACCURACY_DROP = 0.02


class ExportError(RuntimeError):
    """The int8 model is not faithful enough to the float one."""


def to_int8_tflite(model: keras.Model, representative: np.ndarray) -> bytes:
    """Full-integer quantisation (int8 input, weights, activations and output)."""
    with tempfile.TemporaryDirectory() as saved_model:
        export_archive = keras.export.ExportArchive()
        export_archive.track(model)
        frames, mels = model.input_shape[1:]
        export_archive.add_endpoint(
            "serve",
            lambda log_mel: model(log_mel, training=False),
            input_signature=[tf.TensorSpec([1, frames, mels], tf.float32)],
        )
        export_archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([window[None]] for window in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()


def few_shot_accuracy(vectors: np.ndarray, ways: int, shots: int, queries: int) -> float:
    """Closed-set prototype accuracy of episode embeddings ``[episodes, size, dim]`` (episode order of the loss)."""
    correct = total = 0
    for episode in vectors:
        support = episode[: ways * shots].reshape(ways, shots, -1).mean(axis=1)
        support /= np.linalg.norm(support, axis=1, keepdims=True)
        query = episode[ways * shots : ways * (shots + queries)]
        correct += int(np.sum(np.argmax(query @ support.T, axis=1) == np.repeat(np.arange(ways), queries)))
        total += len(query)
    return correct / total


def export(
    model: keras.Model,
    config: TrainConfig,
    representative: np.ndarray,
    validation_features: np.ndarray,
    out_path: Path,
    training_summary: dict,
    negative_speech: Iterable[np.ndarray],
    noise: Sequence[np.ndarray],
    training_clip_ids: Sequence[str] = (),
    name: str = "encoder",
    enforce_parity: bool = True,
    negative_words: Iterable[np.ndarray] = (),
) -> ModelManifest:
    """Quantise, verify parity with the device loader, and write the model, manifest and negative bank.

    Nothing reaches ``out_path``'s folder unless every check passed; each file is
    copied under a temporary name and renamed into place.
    """
    started = time.monotonic()
    flatbuffer = to_int8_tflite(model, representative)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / out_path.name
        staged.write_bytes(flatbuffer)
        try:
            ops = check_micro_ops(staged)  # a microcontroller port must stay one step away
        except ValueError as error:
            raise ExportError(f"the encoder uses ops TFLite Micro cannot run: {error}") from error
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        manifest = ModelManifest(
            model_file=out_path.name,
            sha256=sha256_of(staged),
            frontend=config.frontend,
            window_frames=config.encoder.window_frames,
            embedding_size=config.encoder.embedding_size,
            input=TensorSpec(
                list(map(int, inp["shape"])), "int8", *map(float, inp["quantization"][:1]), int(inp["quantization"][1])
            ),
            output=TensorSpec(
                list(map(int, out["shape"])), "int8", *map(float, out["quantization"][:1]), int(out["quantization"][1])
            ),
            name=name,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            training={
                "encoder": config.encoder.to_dict(),
                "episodes": config.episodes.to_dict(),
                "seed": config.seed,
                **training_summary,
            },
        )
        manifest_path_for(staged).write_text(manifest.to_json())
        encoder = Encoder(staged)
        figures = parity_figures(model, encoder, validation_features, config)
        figures |= {
            "model_bytes": len(flatbuffer),
            "macs_per_window": count_macs(model),
            "parameters": int(model.count_params()),
            "ops": ops,
        }
        log.info("export parity: %s", figures)
        if not enforce_parity:
            log.warning("parity not enforced (a baseline or comparison export): %s", figures)
        elif figures["int8_mean_cosine"] < MIN_MEAN_COSINE:
            raise ExportError(
                f"int8 embeddings drift from float: mean cosine {figures['int8_mean_cosine']:.4f} < {MIN_MEAN_COSINE}"
            )
        drop = figures["float_validation_accuracy"] - figures["int8_validation_accuracy"]
        if enforce_parity and drop > MAX_ACCURACY_DROP:
            raise ExportError(f"int8 few-shot accuracy is {100 * drop:.1f} points below float (max 2)")
        clip_ids = staged.with_suffix(".training_clips.txt")
        clip_ids.write_text("".join(f"{clip_id}\n" for clip_id in training_clip_ids))
        manifest.training |= {"clip_ids_file": clip_ids.name, "clip_ids_sha256": sha256_of(clip_ids)}
        negatives = staged.with_suffix(".negatives.npy")
        bank = build_negative_bank(
            encoder, negative_speech, noise, config.negative_bank_size, config.seed, negative_words
        )
        np.save(negatives, bank)
        manifest.training["negative_bank"] = bank_summary(bank, config.negative_bank_size)
        manifest.negatives_file = out_path.with_suffix(".negatives.npy").name
        manifest.negatives_sha256 = sha256_of(negatives)
        manifest.figures = figures | {"export_seconds": round(time.monotonic() - started, 1)}
        manifest_path_for(staged).write_text(manifest.to_json())
        out_path.parent.mkdir(parents=True, exist_ok=True)
        outputs = ((staged, out_path), (negatives, out_path.with_suffix(".negatives.npy")))
        outputs += ((clip_ids, out_path.with_suffix(".training_clips.txt")),)
        # the manifest goes last: a model is only usable once its manifest matches it
        outputs += ((manifest_path_for(staged), manifest_path_for(out_path)),)
        for source, target in outputs:
            shutil.copyfile(source, target.with_suffix(target.suffix + ".tmp"))
            target.with_suffix(target.suffix + ".tmp").replace(target)
    return manifest


def parity_figures(model: keras.Model, encoder: Encoder, features: np.ndarray, config: TrainConfig) -> dict:
    """Float vs int8 on the validation episodes: embedding cosine and few-shot accuracy."""
    windows = features.reshape(-1, *features.shape[2:])
    float_vectors = model.predict(windows, batch_size=256, verbose=0)
    int8_vectors = np.stack([encoder.embed_frames(w) for w in windows])
    shape = (features.shape[0], features.shape[1], -1)
    v = config.validation_episodes
    return {
        "int8_mean_cosine": round(float(np.mean(np.sum(float_vectors * int8_vectors, axis=1))), 4),
        "float_validation_accuracy": round(
            few_shot_accuracy(float_vectors.reshape(shape), v.ways, v.shots, v.queries), 4
        ),
        "int8_validation_accuracy": round(
            few_shot_accuracy(int8_vectors.reshape(shape), v.ways, v.shots, v.queries), 4
        ),
    }
