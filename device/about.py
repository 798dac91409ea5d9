"""What this installation is: the package's name, version and home page, and the encoder it ships.

Why one module: ``kws --version`` and the Wyoming server's ``info`` (what Home Assistant
shows as the wake word's attribution) must say the same thing, and both must come from
the installed package's metadata (pyproject.toml), not from a copy that drifts.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

DISTRIBUTION = "fewshot-kws"  # [project] name in pyproject.toml


class NotInstalledError(RuntimeError):
    """The code runs from a checkout that was never installed, so it has no package metadata."""


def _metadata():
    try:
        return metadata(DISTRIBUTION)
    except PackageNotFoundError as error:
        raise NotInstalledError(
            f"the {DISTRIBUTION} package is not installed (run `pip install -e '.[device]'` in the checkout)"
        ) from error


def package_version() -> str:
    """The installed version (pyproject.toml's [project] version)."""
    return _metadata()["Version"]


def project_url() -> str:
    """The project's home page from [project.urls] (``Homepage``, else the first URL); "" when it names none."""
    meta = _metadata()
    urls = [entry.split(",", 1) for entry in meta.get_all("Project-URL") or []]
    by_label = {label.strip().lower(): url.strip() for label, url in urls if url.strip()}
    return by_label.get("homepage") or next(iter(by_label.values()), "") or (meta.get("Home-page") or "")


def encoder_id(sha256: str) -> str:
    """An encoder's short id, as `kws list` shows it: the first 12 hex digits of the model's sha256."""
    return sha256[:12]


def version_text(model_path: Path) -> str:
    """``kws --version``: the package version, then the encoder's id (or why there is none)."""
    from device.manifest import ModelError, load_manifest

    try:
        manifest = load_manifest(model_path)
        created = f", created {manifest.created}" if manifest.created else ""
        encoder = f"encoder {encoder_id(manifest.sha256)} ({model_path}{created})"
    except ModelError as error:
        encoder = f"no usable encoder: {error}"
    return f"kws ({DISTRIBUTION}) {package_version()}\n{encoder}"
