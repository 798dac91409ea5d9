"""The encoder: a small depthwise-separable CNN over a window of log-mel frames.

One definition serves training (float Keras), export (int8 TFLite) and the
device (which only ever sees the exported TFLite). The network maps a window of
``window_frames`` x ``num_mels`` log-mel features to an L2-normalised embedding,
so that "same word" means "high cosine" whatever the word.

Budget (issue 3): int8 model <= 150 KB, <= 10 M multiply-accumulates per window.
:func:`count_macs` computes the MACs from the layer shapes, and the exporter writes
the figure into the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture hyper-parameters (all of them; the manifest records them)."""

    window_frames: int = 120
    num_mels: int = 40
    stem_channels: int = 32
    # (channels, stride) of each depthwise-separable block.
    blocks: tuple[tuple[int, int], ...] = ((48, 2), (48, 1), (96, 2), (96, 1), (96, 1))
    embedding_size: int = 64
    dropout: float = 0.1

    def to_dict(self) -> dict:
        data = asdict(self)
        data["blocks"] = [list(b) for b in self.blocks]
        return data

    @classmethod
    def from_dict(cls, values: dict) -> EncoderConfig:
        values = dict(values)
        if "blocks" in values:
            values["blocks"] = tuple(tuple(b) for b in values["blocks"])
        return cls(**values)


def _conv_bn_relu(x, layer: keras.layers.Layer, name: str):
    x = layer(x)
    # Momentum 0.9, not 0.99: episodes are few and large, and slow running statistics
    # lag the weights so far that validation in inference mode looks like chance.
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_encoder(
    config: EncoderConfig,
    feature_mean: np.ndarray | None = None,
    feature_std: np.ndarray | None = None,
) -> keras.Model:
    """Build the encoder: ``[batch, frames, mels]`` float log-mel -> ``[batch, embedding]`` unit vectors.

    ``feature_mean``/``feature_std`` (per mel band, from training data) are baked
    into a first normalisation layer, so the device feeds raw log-mel values.
    """
    mean = np.zeros(config.num_mels) if feature_mean is None else np.asarray(feature_mean)
    std = np.ones(config.num_mels) if feature_std is None else np.asarray(feature_std)
    inputs = keras.Input((config.window_frames, config.num_mels), name="log_mel")
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std), name="normalise")(inputs)
    x = keras.layers.Reshape((config.window_frames, config.num_mels, 1), name="to_image")(x)
    conv = keras.layers.Conv2D(config.stem_channels, (5, 3), strides=(2, 2), padding="same", use_bias=False)
    x = _conv_bn_relu(x, conv, "stem")
    for index, (channels, stride) in enumerate(config.blocks):
        name = f"block{index}"
        depthwise = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")
        x = _conv_bn_relu(x, depthwise, f"{name}_dw")
        pointwise = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw")
        x = _conv_bn_relu(x, pointwise, f"{name}_pw")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(config.dropout, name="dropout")(x)
    x = keras.layers.Dense(config.embedding_size, name="embedding")(x)
    outputs = keras.layers.UnitNormalization(name="l2_normalise")(x)
    return keras.Model(inputs, outputs, name="encoder")


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass, from layer shapes (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
