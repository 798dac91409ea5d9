"""Where things live and the one optional config file.

Defaults follow the XDG base directories: keywords in ``$XDG_DATA_HOME/kws``
(``~/.local/share/kws``), the config in ``$XDG_CONFIG_HOME/kws/config.toml``, the
model from ``$KWS_MODEL`` or the shipped ``firmware_models/encoder.tflite``.
Command-line options override the config file, which overrides the defaults.

Example ``config.toml``::

    store = "/home/pi/.local/share/kws"
    model = "/opt/kws/firmware_models/encoder.tflite"
    keep_takes = true
    [detector]
    hop_seconds = 0.1
    smoothing_hops = 2
    refractory_seconds = 1.5
    gate_db = -62.0
    sensitivity = 0.5          # 0..1 for keywords without their own (`kws set NAME --sensitivity S`)
    [listen]
    device = "default"
    on_detect = "aplay /usr/share/sounds/alsa/Front_Center.wav"
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from device.detector import DetectorSettings
from device.sensitivity import DEFAULT_SENSITIVITY, FALLBACK_SHIFT_PER_TENTH

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on older Pi images
    import tomli as tomllib

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# [listen] settings: the types TOML may give each and what it is (the command-line options of `kws listen`)
LISTEN_SETTINGS = {
    "device": ((str, int), "an input device index or name part"),
    "on_detect": ((str,), "a shell command"),
}


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback)


def default_store_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "kws"


def default_config_path() -> Path:
    return Path(os.environ.get("KWS_CONFIG") or _xdg("XDG_CONFIG_HOME", ".config") / "kws" / "config.toml")


def default_model_path() -> Path:
    return Path(os.environ.get("KWS_MODEL") or PACKAGE_ROOT / "firmware_models" / "encoder.tflite")


@dataclass
class Settings:
    store: Path = field(default_factory=default_store_dir)
    model: Path = field(default_factory=default_model_path)
    keep_takes: bool = True
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    listen: dict = field(default_factory=dict)


def _sensitivity_from_offset(detector: dict, config_path: Path) -> dict:
    """The [detector] table with the retired ``threshold_offset`` turned into the ``sensitivity`` it meant.

    Why a mapping and not an error: old config files keep loading. The offset was one cosine
    shift for every keyword; sensitivity moves each keyword along its own negative scores, so
    the mapping uses the fixed shift per 0.1 that keywords without calibration stats get.
    """
    detector = dict(detector)
    offset = detector.pop("threshold_offset")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)):
        raise SystemExit(f"config file {config_path}: [detector] threshold_offset is {offset!r}, not a number")
    if "sensitivity" in detector:
        log.warning(
            "config file %s: [detector] threshold_offset is retired and ignored: sensitivity is set", config_path
        )
        return detector
    value = float(min(1.0, max(0.0, DEFAULT_SENSITIVITY - offset / (10 * FALLBACK_SHIFT_PER_TENTH))))
    log.warning(
        "config file %s: [detector] threshold_offset is retired; read %g as sensitivity = %.2f "
        "(0..1, 0.5 = as calibrated, higher = more sensitive): write that instead",
        config_path,
        offset,
        value,
    )
    detector["sensitivity"] = round(value, 2)
    return detector


def load_settings(path: Path | None = None) -> Settings:
    """Defaults, overridden by the config file when it exists (an explicit path must exist)."""
    settings = Settings()
    config_path = path or default_config_path()
    if path is None and not config_path.exists():
        return settings
    try:
        with open(config_path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError as error:
        raise SystemExit(f"config file {config_path} not found") from error
    except tomllib.TOMLDecodeError as error:
        raise SystemExit(f"config file {config_path} is not valid TOML: {error}") from error
    for table in ("detector", "listen"):
        if not isinstance(raw.get(table, {}), dict):
            raise SystemExit(f"config file {config_path}: {table} must be a table ([{table}]), not a value")
    detector = dict(raw.get("detector", {}))
    if "threshold_offset" in detector:
        detector = _sensitivity_from_offset(detector, config_path)
    known_detector = {f.name for f in fields(DetectorSettings)} - {"sensitivity_override"}  # a per-run option
    unknown = set(detector) - known_detector
    unknown |= set(raw) - {"store", "model", "keep_takes", "detector", "listen"}
    listen = dict(raw.get("listen", {}))
    unknown |= {f"listen.{key}" for key in set(listen) - set(LISTEN_SETTINGS)}
    if unknown:
        raise SystemExit(
            f"config file {config_path}: unknown settings {', '.join(sorted(unknown))} "
            f"(known: store, model, keep_takes, [detector] {', '.join(sorted(known_detector))}, "
            f"[listen] {', '.join(LISTEN_SETTINGS)})"
        )
    for key, kinds, what in [("store", (str,), "a folder path"), ("model", (str,), "a .tflite path")] + [
        (f"listen.{key}", kinds, what) for key, (kinds, what) in LISTEN_SETTINGS.items()
    ]:
        table, _, name = key.rpartition(".")
        value = (listen if table else raw).get(name)
        if value is not None and type(value) not in kinds:
            raise SystemExit(f"config file {config_path}: {key} is {value!r}, not {what}")
    if "keep_takes" in raw and type(raw["keep_takes"]) is not bool:
        raise SystemExit(f"config file {config_path}: keep_takes is {raw['keep_takes']!r}, not true or false")
    if "store" in raw:
        settings.store = Path(raw["store"]).expanduser()
    if "model" in raw:
        settings.model = Path(raw["model"]).expanduser()
    settings.keep_takes = raw.get("keep_takes", settings.keep_takes)
    try:
        settings.detector = DetectorSettings(**detector)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"config file {config_path}: [detector] {error}") from error
    settings.listen = listen
    return settings
