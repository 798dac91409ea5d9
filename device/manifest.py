"""The JSON manifest that travels beside every exported ``.tflite`` encoder.

Why: a model file alone does not say which features it expects, how its int8
tensors are scaled or how it was made. The runtime reads everything it needs from
the manifest and refuses a model whose bytes do not match the recorded sha256,
so a keyword store can never be silently scored by a different encoder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device.frontend import FrontendConfig

FORMAT_VERSION = 1


class ModelError(RuntimeError):
    """A model that cannot be used, with what to do about it in the message."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and affine int8 quantisation of one model tensor."""

    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0


@dataclass
class ModelManifest:
    """Everything the runtime needs to use an encoder, and how it was made."""

    model_file: str
    sha256: str
    frontend: FrontendConfig
    window_frames: int
    embedding_size: int
    input: TensorSpec
    output: TensorSpec
    format_version: int = FORMAT_VERSION
    name: str = "encoder"
    created: str = ""
    training: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    # Embeddings of non-keyword speech and noise windows, for threshold calibration at enrollment.
    negatives_file: str = ""
    negatives_sha256: str = ""

    @property
    def window_seconds(self) -> float:
        c = self.frontend
        return c.samples_for_frames(self.window_frames) / c.sample_rate

    def to_json(self) -> str:
        data = asdict(self)
        data["frontend"] = self.frontend.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> ModelManifest:
        data = dict(data)
        data["frontend"] = FrontendConfig.from_dict(data["frontend"])
        data["input"] = TensorSpec(**data["input"])
        data["output"] = TensorSpec(**data["output"])
        return cls(**data)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path_for(model_path: str | Path) -> Path:
    """``encoder.tflite`` -> ``encoder.json``."""
    return Path(model_path).with_suffix(".json")


def load_manifest(model_path: str | Path) -> ModelManifest:
    """Read and verify the manifest beside ``model_path``.

    Raises :class:`ModelError` when the model or manifest is missing, unreadable,
    of an unknown format version, or when the model's sha256 differs from the one
    recorded at export (a corrupted copy or a model swapped by hand).
    """
    model_path = Path(model_path)
    manifest_path = manifest_path_for(model_path)
    if not model_path.is_file():
        raise ModelError(f"model {model_path} not found; run `make export` or pass --model PATH")
    if not manifest_path.is_file():
        raise ModelError(
            f"model {model_path} has no manifest {manifest_path.name} beside it; "
            "only models exported by `make export` (which writes the manifest) can be used"
        )
    try:
        manifest = ModelManifest.from_dict(json.loads(manifest_path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise ModelError(f"manifest {manifest_path} is unreadable: {error}") from error
    if manifest.format_version != FORMAT_VERSION:
        raise ModelError(
            f"manifest {manifest_path} has format version {manifest.format_version}; "
            f"this runtime reads version {FORMAT_VERSION}"
        )
    actual = sha256_of(model_path)
    if actual != manifest.sha256:
        raise ModelError(
            f"model {model_path} does not match its manifest (sha256 {actual[:12]}... "
            f"!= {manifest.sha256[:12]}...); the file is corrupt or was replaced: re-export or reinstall it"
        )
    return manifest
