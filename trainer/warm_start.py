"""A trainable float encoder rebuilt from an exported int8 TFLite model: training can go on from what shipped.

Why: a run folder (float checkpoints) lives on the machine that trained it, and this project's
machines are not kept, so a later session on a fresh machine has only ``firmware_models/``. Every
training session so far started from a run folder; without this, going on from the shipped
encoder meant repeating all of its sessions first (261 minutes on 2 cores).

What an int8 export keeps, and how it is turned back into the Keras model of ``trainer.model``:

- the input normalisation (a SUB and a MUL by constants) -> the Normalization layer's mean and
  standard deviation;
- each convolution with its batch normalisation folded in (weights ``W * gamma / sigma``, bias
  ``beta - mu * gamma / sigma``), per-channel int8 -> the convolution gets the folded weights and
  its BatchNormalization layer the folded bias. So that training-mode batch statistics do not
  change what the layer computes, the BatchNormalization is re-expanded around the statistics
  of ``calibration`` windows: moving mean ``m`` and variance ``s^2`` of the folded convolution's
  output, ``gamma = sqrt(s^2 + eps)``, ``beta = m + bias`` (inference: unchanged; training on
  batches like the calibration ones: about unchanged);
- the embedding layer (int8 weights, int32 bias) -> the Dense layer.

The rebuilt float model matches the int8 one to quantisation error (cosine ~0.99; tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from device.interpreter import make_interpreter
from trainer.model import EncoderConfig, build_encoder

CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


class WarmStartError(ValueError):
    """The TFLite model does not have the layout of ``trainer.model``'s encoder for this config."""


@dataclass
class ExportedWeights:
    """Float weights recovered from an int8 export, in graph order."""

    path: Path
    mean: np.ndarray  # [mels]
    std: np.ndarray  # [mels]
    convolutions: list[tuple[str, np.ndarray, np.ndarray]]  # (op, weights as the TFLite holds them, bias)
    dense: tuple[np.ndarray, np.ndarray]  # ([out, in], [out])


def _dequantised(interpreter, details: dict, index: int) -> np.ndarray:
    """A constant tensor as float: ``scale * (q - zero_point)``, per channel where it is quantised so."""
    values = interpreter.get_tensor(index)
    q = details[index]["quantization_parameters"]
    scales, zeros = q["scales"], q["zero_points"]
    if len(scales) == 0:
        return values.astype(np.float32)
    shape = [1] * values.ndim
    if len(scales) > 1:
        shape[q["quantized_dimension"]] = len(scales)
    return ((values.astype(np.float32) - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def read_exported_weights(model_path: str | Path) -> ExportedWeights:
    """Walk the exported graph (SUB, MUL, convolutions, FULLY_CONNECTED) and dequantise its constants."""
    interpreter, _ = make_interpreter(str(model_path), 1)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    by_name: dict[str, list[dict]] = {}
    for op in ops:
        by_name.setdefault(op["op_name"], []).append(op)
    try:
        sub, mul = by_name["SUB"][0], by_name["MUL"][0]
        (dense_op,) = by_name["FULLY_CONNECTED"]
    except (KeyError, ValueError) as error:
        raise WarmStartError(
            f"{model_path}: not an encoder export (no normalisation or one embedding layer)"
        ) from error
    mean = _dequantised(interpreter, details, int(sub["inputs"][1])).reshape(-1)
    std = 1.0 / _dequantised(interpreter, details, int(mul["inputs"][1])).reshape(-1)
    convolutions = [
        (
            op["op_name"],
            _dequantised(interpreter, details, int(op["inputs"][1])),
            _dequantised(interpreter, details, int(op["inputs"][2])),
        )
        for op in ops
        if op["op_name"] in CONVOLUTIONS
    ]
    dense = (
        _dequantised(interpreter, details, int(dense_op["inputs"][1])),
        _dequantised(interpreter, details, int(dense_op["inputs"][2])),
    )
    return ExportedWeights(Path(model_path), mean, std, convolutions, dense)


def _keras_kernel(op: str, weights: np.ndarray) -> np.ndarray:
    """TFLite layouts to Keras: CONV_2D [out, h, w, in] -> [h, w, in, out]; DEPTHWISE [1, h, w, c] -> [h, w, c, 1]."""
    if op == "CONV_2D":
        return weights.transpose(1, 2, 3, 0)
    return weights[0][..., None]


def rebuild_encoder(
    exported: ExportedWeights,
    config: EncoderConfig,
    calibration: np.ndarray,
    normalisation: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """The float Keras encoder an int8 export came from, batch norms re-expanded on ``calibration`` windows.

    ``exported`` is :func:`read_exported_weights`'s reading of the model; ``calibration`` is
    ``[n, frames, mels]`` raw log-mel windows like the training batches. ``normalisation`` (mean,
    std per mel bin) replaces the export's own input normalisation, for a run whose features differ
    from the export's. Raises WarmStartError when the export's layers do not match ``config``'s
    architecture.
    """
    mean, std = normalisation if normalisation is not None else (exported.mean, exported.std)
    model = build_encoder(config, mean, std)
    convolutions = [
        layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    if len(convolutions) != len(exported.convolutions):
        raise WarmStartError(
            f"{exported.path} has {len(exported.convolutions)} convolutions, the config's encoder {len(convolutions)}"
        )
    norms = [model.get_layer(f"{_block_name(layer)}_bn") for layer in convolutions]
    for layer, norm, (op, weights, bias) in zip(convolutions, norms, exported.convolutions, strict=True):
        kernel = _keras_kernel(op, weights)
        if tuple(layer.kernel.shape) != kernel.shape:
            raise WarmStartError(f"{layer.name}: the export has {kernel.shape}, the config {tuple(layer.kernel.shape)}")
        layer.kernel.assign(kernel)
        # identity + folded bias in inference mode until the statistics below are known
        norm.set_weights([np.ones_like(bias), bias, np.zeros_like(bias), np.full_like(bias, 1.0 - norm.epsilon)])
    dense_weights, dense_bias = exported.dense
    embedding = model.get_layer("embedding")
    if tuple(embedding.kernel.shape) != dense_weights.T.shape:
        raise WarmStartError(f"embedding: the export has {dense_weights.T.shape}, the config {embedding.kernel.shape}")
    embedding.set_weights([dense_weights.T, dense_bias])
    _re_expand_batch_norms(model, convolutions, norms, calibration)
    return model


def _block_name(layer: keras.layers.Layer) -> str:
    """The name ``trainer.model`` gives the conv/BN/ReLU group a convolution belongs to (the stem's is unnamed)."""
    return layer.name if layer.name.startswith("block") else "stem"


def _re_expand_batch_norms(model: keras.Model, convolutions: list, norms: list, calibration: np.ndarray) -> None:
    """Give each batch norm the statistics of its convolution's output on ``calibration``; inference unchanged."""
    probe = keras.Model(model.input, [layer.output for layer in convolutions])
    outputs = probe.predict(np.asarray(calibration, np.float32), batch_size=64, verbose=0)
    for norm, output in zip(norms, outputs, strict=True):
        gamma, beta, _, _ = norm.get_weights()  # beta is the folded bias here
        axes = tuple(range(output.ndim - 1))
        mean = output.mean(axis=axes).astype(np.float32)
        variance = output.var(axis=axes).astype(np.float32)
        norm.set_weights([np.sqrt(variance + norm.epsilon), mean + beta, mean, variance])
