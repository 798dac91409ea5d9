"""The int8 TFLite encoder as the device runs it: log-mel window in, unit embedding out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.frontend import log_mel
from device.interpreter import make_interpreter
from device.manifest import ModelError, ModelManifest, load_manifest
from device.vad import trim_silence
from device.windowing import centre_in_window


class Encoder:
    """Loads a verified model (manifest + sha256) and embeds windows of log-mel frames."""

    def __init__(self, model_path: str | Path, num_threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self.manifest: ModelManifest = load_manifest(self.model_path)
        self.interpreter, self.runtime = make_interpreter(str(self.model_path), num_threads)
        (self._input,) = self.interpreter.get_input_details()
        (self._output,) = self.interpreter.get_output_details()
        expected = [1, self.manifest.window_frames, self.manifest.frontend.num_mels]
        if list(self._input["shape"]) != expected:
            raise ModelError(f"model input shape {list(self._input['shape'])} differs from its manifest's {expected}")
        self._in_scale, self._in_zero = self._input["quantization"]
        self._out_scale, self._out_zero = self._output["quantization"]

    @property
    def sha256(self) -> str:
        return self.manifest.sha256

    @property
    def window_frames(self) -> int:
        return self.manifest.window_frames

    @property
    def window_samples(self) -> int:
        return self.manifest.frontend.samples_for_frames(self.manifest.window_frames)

    @property
    def embedding_size(self) -> int:
        return self.manifest.embedding_size

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """One ``[window_frames, num_mels]`` log-mel window -> unit-length float32 embedding."""
        x = np.asarray(frames, dtype=np.float32)[None]
        if self._input["dtype"] == np.int8:
            x = np.clip(np.round(x / self._in_scale) + self._in_zero, -128, 127).astype(np.int8)
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._output["index"])[0].astype(np.float32)
        if self._output["dtype"] == np.int8:
            y = (y - self._out_zero) * self._out_scale
        return y / (np.linalg.norm(y) + 1e-12)

    def embed_utterance(self, samples: np.ndarray) -> np.ndarray:
        """Embed one take as enrollment does: trimmed, centred in the window, dithered."""
        window = centre_in_window(trim_silence(samples, self.manifest.frontend.sample_rate), self.window_samples)
        return self.embed_frames(log_mel(window, self.manifest.frontend))
