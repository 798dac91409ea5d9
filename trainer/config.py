"""One TOML file drives a training run: data, augmentation, architecture, episodes, schedule.

Paths in the file are relative to the repository root; ``${SHARED}`` expands to the
shared data folder (``$KWS_SHARED`` or ``../shared`` beside the checkout). A file may
start from another with ``base = "default.toml"`` (relative to itself) and override
single keys or whole tables: an ablation or baseline then states only what it changes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomllib

from device.frontend import FrontendConfig
from trainer.episodes import EpisodeConfig
from trainer.model import EncoderConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
START_MODEL = "start.tflite"  # a run whose start_from is an exported model keeps its copy here


def names_exported_model(start_from: str) -> bool:
    """True when a ``start_from`` value names an exported ``.tflite`` model, not a run folder."""
    return start_from.endswith(".tflite")


def shared_root() -> Path:
    """The shared data folder: ``$KWS_SHARED`` or ``../shared`` next to the repository."""
    return Path(os.environ.get("KWS_SHARED", REPO_ROOT.parent / "shared"))


def resolve_path(text: str) -> Path:
    path = Path(text.replace("${SHARED}", str(shared_root())))
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass
class DataConfig:
    """Where training audio comes from and what is held out."""

    sources: list[str] = field(default_factory=list)  # dataset folders in any supported layout
    noise: list[str] = field(default_factory=list)  # folders of background-noise wavs
    negatives: list[str] = field(default_factory=list)  # continuous non-keyword speech for the negative bank
    sentences: list[str] = field(default_factory=list)  # unlabelled real speech: open-set windows, teacher targets
    # Share of sentence speakers (folders) kept out of training for the negative bank (0: no split).
    bank_speaker_fraction: float = 0.0
    held_out_languages: list[str] = field(default_factory=lambda: ["zh"])
    validation_word_fraction: float = 0.1
    min_clips_per_word: int = 4
    max_clips: int = 0  # 0: all; >0: a random subset (quick runs)


@dataclass
class TrainConfig:
    seed: int = 1234
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # The log-mel frontend the encoder is trained on; the export writes it into the manifest, and the
    # device computes exactly these features for that model. ``num_mels`` is the encoder's input width.
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    validation_episodes: EpisodeConfig = field(
        default_factory=lambda: EpisodeConfig(ways=10, shots=3, queries=2, unknown_queries=10, noise_queries=5)
    )
    augment: dict = field(default_factory=dict)  # trainer.augment.Augmenter settings
    steps: int = 6000
    learning_rate: float = 3e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    # Loss = prototypical_weight * episodic loss + classification_weight * AM-softmax over all words.
    # prototypical_weight = 0 trains the "plain classification" baseline of the evaluation.
    prototypical_weight: float = 1.0
    classification_weight: float = 1.0
    classification_scale: float = 16.0
    classification_margin: float = 0.2
    # Distillation from the speech-embedding teacher (trainer/teacher.py) on every training clip; 0 or no
    # teacher files: off.
    distillation_weight: float = 1.0
    # Relational distillation (trainer.losses.relational_distillation_loss): the student's own cosines
    # rank each window's neighbours in the episode as the teacher's do. 0: off.
    relational_distillation_weight: float = 0.0
    relational_temperature: float = 0.1
    # Sources made by TTS (the rest are recordings of people), and the expected share of each episode's
    # words drawn from words that people recorded: without it the ~200 real words are ~5% of the ~4,000
    # classes and episodes rarely rehearse real voices, which is what the device will hear.
    synthetic_sources: list[str] = field(
        default_factory=lambda: ["synth", "synth_quick", "kokoro_speech", "kokoro_speech_quick"]
    )
    real_word_fraction: float = 0.0
    validate_every: int = 250
    num_validation_episodes: int = 100
    workers: int = 0  # episode builder processes; 0 = number of cores
    representative_windows: int = 300  # for int8 calibration at export
    negative_bank_size: int = 2000  # windows of sentences and noise in the bank shipped beside the model
    negative_bank_words: int = 3000  # TTS word clips said alone in room noise, all their windows in the bank too
    # Refuse an export whose int8 model drifts from the float one (trainer/export.py). Off only for
    # short comparison runs (ablation rows), whose drift is still measured and written to the manifest.
    parity_gate: bool = True
    time_budget_minutes: float = 0.0  # stop training early after this long (0: no limit)
    # What this run starts from, for one more warm-up and cosine decay (a warm restart) counted with the
    # earlier sessions in the manifest: a finished run folder (its latest weights and loss head), or an
    # exported model such as "firmware_models/encoder.tflite" (rebuilt in float by trainer.warm_start; a
    # fresh machine has no run folders, only what shipped). "": none.
    start_from: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["encoder"] = self.encoder.to_dict()
        return data


def _read_toml(path: Path) -> dict:
    """The file's tables, merged over its ``base`` file's (recursively; tables merge key by key)."""
    with open(path, "rb") as handle:
        raw = tomllib.load(handle)
    base = raw.pop("base", None)
    if base is None:
        return raw
    merged = _read_toml(path.parent / base)
    for key, value in raw.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in merged else value
    return merged


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML config; keys missing from the file (and its bases) keep their defaults."""
    raw = _read_toml(Path(path))
    tables = ("data", "encoder", "frontend", "episodes", "validation_episodes")
    config = TrainConfig(**{k: v for k, v in raw.items() if k not in tables})
    config.data = DataConfig(**raw.get("data", {}))
    config.encoder = EncoderConfig.from_dict(raw.get("encoder", {}))
    config.frontend = _frontend(raw.get("frontend", {}), config.encoder)
    config.episodes = EpisodeConfig(**raw.get("episodes", {}))
    if "validation_episodes" in raw:
        config.validation_episodes = EpisodeConfig(**raw["validation_episodes"])
    return config


def _frontend(table: dict, encoder: EncoderConfig) -> FrontendConfig:
    """The ``[frontend]`` table over the defaults; its mel bins are the encoder's input width."""
    mels = table.get("num_mels", encoder.num_mels)
    if mels != encoder.num_mels:
        raise ValueError(f"[frontend] num_mels = {mels} but [encoder] num_mels = {encoder.num_mels}: they must agree")
    frontend = FrontendConfig(**{**table, "num_mels": mels})
    nyquist = frontend.sample_rate / 2
    if not 0 <= frontend.fmin_hz < frontend.fmax_hz <= nyquist:
        raise ValueError(
            f"[frontend] needs 0 <= fmin_hz < fmax_hz <= {nyquist:g} Hz, got {frontend.fmin_hz:g}-{frontend.fmax_hz:g}"
        )
    return frontend
