"""The keyword store: enrolled keywords on disk, written so that a power cut loses nothing.

Layout of a store folder::

    keywords.json       current version (JSON with a checksum over its content)
    keywords.json.bak   the previous good version
    takes/<name>/*.wav  the enrollment takes, when the user chose to keep them

A write goes to a temporary file, is fsynced, the current file is copied to the
backup, and the temporary file is renamed over the current one (atomic on POSIX).
A load verifies the checksum; a corrupt or half-written current file falls back to
the backup, loudly. Every keyword records the sha256 of the encoder that made its
prototypes: scoring them with another encoder would be meaningless, so such a
store is refused (or re-embedded from kept takes by the caller).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

STORE_FORMAT = 1
STORE_FILE = "keywords.json"
BACKUP_FILE = "keywords.json.bak"


class StoreError(RuntimeError):
    """The store cannot be used as it is; the message says what to do."""


class EncoderMismatchError(StoreError):
    """Keywords were enrolled with a different encoder than the one loaded."""


@dataclass
class Keyword:
    """One enrolled keyword: its prototype(s), decision threshold and where they came from."""

    name: str
    prototypes: list[list[float]]
    threshold: float
    encoder_sha256: str
    takes: int
    stats: dict = field(default_factory=dict)
    takes_dir: str | None = None  # relative to the store, when takes are kept

    def prototype_matrix(self) -> np.ndarray:
        return np.asarray(self.prototypes, dtype=np.float32)


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeywordStore:
    """Keywords of one store folder, loaded on construction."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.keywords: dict[str, Keyword] = {}
        self.version = 0
        self.recovered_from_backup = False
        self._load()

    @property
    def path(self) -> Path:
        return self.folder / STORE_FILE

    def _read(self, path: Path) -> dict:
        data = json.loads(path.read_text())
        payload = data["payload"]
        if data.get("checksum") != _checksum(payload):
            raise ValueError("checksum mismatch (half-written or edited by hand)")
        if payload.get("format") != STORE_FORMAT:
            raise ValueError(f"unknown store format {payload.get('format')}")
        return payload

    def _load(self) -> None:
        if not self.path.exists() and not (self.folder / BACKUP_FILE).exists():
            return
        try:
            payload = self._read(self.path)
        except (OSError, ValueError, KeyError) as error:
            backup = self.folder / BACKUP_FILE
            try:
                payload = self._read(backup)
            except (OSError, ValueError, KeyError) as backup_error:
                raise StoreError(
                    f"keyword store {self.path} is unreadable ({error}) and so is its backup ({backup_error}); "
                    f"move the folder aside and enroll again"
                ) from backup_error
            log.error(
                "keyword store %s is damaged (%s): using the last good version %d from %s",
                self.path,
                error,
                payload.get("version", 0),
                backup.name,
            )
            self.recovered_from_backup = True
        self.version = int(payload.get("version", 0))
        self.keywords = {k["name"]: Keyword(**k) for k in payload["keywords"]}

    def check_encoder(self, encoder_sha256: str) -> None:
        """Refuse keywords made with another encoder, naming them and the way out."""
        stale = sorted(k.name for k in self.keywords.values() if k.encoder_sha256 != encoder_sha256)
        if stale:
            raise EncoderMismatchError(
                f"keywords {', '.join(stale)} in {self.folder} were enrolled with a different encoder "
                f"(sha256 {self.keywords[stale[0]].encoder_sha256[:12]}..., loaded {encoder_sha256[:12]}...): "
                f"re-enroll them with `kws enroll NAME ...`, or run `kws reembed` if their takes were kept"
            )

    def put(self, keyword: Keyword) -> None:
        self.keywords[keyword.name] = keyword
        self.save()

    def remove(self, name: str) -> None:
        if name not in self.keywords:
            raise StoreError(f"no keyword named {name!r} in {self.folder} (have: {', '.join(self.names) or 'none'})")
        del self.keywords[name]
        self.save()
        takes = self.folder / "takes" / name
        if takes.is_dir():
            shutil.rmtree(takes)

    @property
    def names(self) -> list[str]:
        return sorted(self.keywords)

    def save(self) -> None:
        """Atomic write with a backup of the previous version (see the module docstring)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": STORE_FORMAT,
            "version": self.version + 1,
            "keywords": [asdict(self.keywords[n]) for n in self.names],
        }
        text = json.dumps({"payload": payload, "checksum": _checksum(payload)}, indent=1)
        temporary = self.folder / (STORE_FILE + ".tmp")
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if self.path.exists():
            backup_tmp = self.folder / (BACKUP_FILE + ".tmp")
            shutil.copyfile(self.path, backup_tmp)
            with open(backup_tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(backup_tmp, self.folder / BACKUP_FILE)
        os.replace(temporary, self.path)
        _fsync_dir(self.folder)
        self.version = payload["version"]


def store_version(folder: str | Path) -> tuple[int, int] | None:
    """A cheap change marker for watchers: (mtime_ns, size) of the current file, or None."""
    try:
        stat = (Path(folder) / STORE_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size
