"""Rebuilding the float encoder from an int8 export: the shipped model, back in Keras, computes what it computed."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="tensorflow not installed (trainer extra)")

import keras  # noqa: E402
from spoken import say  # noqa: E402

from device.encoder import Encoder  # noqa: E402
from device.frontend import log_mel  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.model import EncoderConfig  # noqa: E402
from trainer.warm_start import WarmStartError, read_exported_weights, rebuild_encoder  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "firmware_models" / "encoder.tflite"
WORDS = ["toaster", "lights on", "window", "computer", "music", "morning", "robot", "garden"]

pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped encoder")


def _windows(encoder: Encoder, rng: np.random.Generator) -> np.ndarray:
    """Spoken words at random places in faint noise, as log-mel windows."""
    windows = []
    for i, word in enumerate(WORDS * 3):
        audio = (0.01 * rng.standard_normal(encoder.window_samples)).astype(np.float32)
        speech = say(word, pitch=30 + 5 * i % 50)[: encoder.window_samples // 2]
        start = int(rng.integers(0, encoder.window_samples - len(speech)))
        audio[start : start + len(speech)] += speech
        windows.append(log_mel(audio, encoder.manifest.frontend))
    return np.stack(windows)


def test_the_rebuilt_float_encoder_matches_the_shipped_int8_one():
    encoder = Encoder(SHIPPED)
    rng = np.random.default_rng(0)
    calibration, probe = _windows(encoder, rng), _windows(encoder, rng)
    config = load_config(REPO / "configs" / "default.toml").encoder
    exported = read_exported_weights(SHIPPED)
    model = rebuild_encoder(exported, config, calibration)
    rebuilt = model.predict(probe, verbose=0)
    shipped = np.stack([encoder.embed_frames(w) for w in probe])
    cosines = np.sum(rebuilt * shipped, axis=1)
    assert cosines.min() > 0.98 and cosines.mean() > 0.99  # int8 rounding, nothing more
    assert exported.mean.shape == exported.std.shape == (40,) and np.all(exported.std > 0)
    # each batch norm sits on its convolution's calibration statistics, so a training-mode batch like the
    # calibration one computes what inference does: fine-tuning starts from the shipped function
    stem_bn = model.get_layer("stem_bn")
    stem_conv = model.layers[model.layers.index(stem_bn) - 1]
    raw = keras.Model(model.input, stem_conv.output).predict(calibration, verbose=0)
    np.testing.assert_allclose(stem_bn.moving_mean.numpy(), raw.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)
    training = stem_bn(raw, training=True).numpy()
    inference = stem_bn(raw, training=False).numpy()
    np.testing.assert_allclose(training, inference, rtol=1e-3, atol=2e-3)


def test_an_export_of_another_architecture_is_refused():
    encoder = Encoder(SHIPPED)
    calibration = _windows(encoder, np.random.default_rng(1))[:4]
    smaller = EncoderConfig(stem_channels=48, blocks=((64, 2), (64, 1)), embedding_size=64)
    with pytest.raises(WarmStartError, match="convolutions"):
        rebuild_encoder(read_exported_weights(SHIPPED), smaller, calibration)
    wider = EncoderConfig(stem_channels=32, blocks=((64, 2), (64, 1), (128, 2), (128, 1), (128, 1), (128, 1)))
    with pytest.raises(WarmStartError, match="the export has"):
        rebuild_encoder(read_exported_weights(SHIPPED), wider, calibration)


def test_a_run_with_other_features_rebuilds_with_their_normalisation():
    """The normalisation training runs with is the one the run records and exports (a changed frontend's)."""
    encoder = Encoder(SHIPPED)
    calibration = _windows(encoder, np.random.default_rng(2))[:4]
    config = load_config(REPO / "configs" / "default.toml").encoder
    exported = read_exported_weights(SHIPPED)
    mean, std = exported.mean - 0.5, exported.std * 1.2
    model = rebuild_encoder(exported, config, calibration, (mean, std))
    normalise = model.get_layer("normalise")
    np.testing.assert_allclose(np.ravel(normalise.mean), mean, rtol=1e-6)
    np.testing.assert_allclose(np.ravel(normalise.variance), std**2, rtol=1e-5)
