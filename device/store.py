"""The keyword store: enrolled keywords on disk, written so that a crash or a power cut loses nothing.

Layout of a store folder::

    keywords.json            current version (JSON with a checksum over its content)
    keywords.json.bak        the previous good version
    takes/<name>.<id>/*.wav  a keyword's enrollment takes, when the user chose to keep them

A keyword and its takes change together. New takes go into a new folder (a fresh
``<id>``, never one a committed version names) and are fsynced; only then is the
version that names the folder (``Keyword.takes_dir``) committed: written to a
temporary file and fsynced, the current file saved as the backup (only when it
reads and verifies: a damaged file must never replace a good backup), and the
temporary file renamed over the current one (atomic on POSIX). Take folders that
neither the current version nor the backup names, and the store's own temporary
files, are what an interrupted change leaves; they are deleted after every commit
and on open. So a crash or power cut at any instant leaves the old or the new
keyword whole, takes included. Writers hold an exclusive lock on the folder, and
the clean-up runs under it, so it never deletes a folder another process is still
filling.

A load verifies the checksum and then the whole record (fields, types, names,
finite numbers, prototype sizes); a damaged current file falls back to the backup,
loudly, and when both are damaged the store is refused with what to do. Every
keyword records the sha256 of the encoder that made its prototypes: scoring them
with another encoder would be meaningless, so such a store is refused (or
re-embedded from kept takes by the caller).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath

import numpy as np

from device.sensitivity import check_sensitivity

log = logging.getLogger(__name__)

STORE_FORMAT = 1
STORE_FILE = "keywords.json"
BACKUP_FILE = "keywords.json.bak"
TAKES_FOLDER = "takes"
# The only temporary files the store writes, so the only ones it deletes after a crash.
TEMPORARY_FILES = (STORE_FILE + ".tmp", BACKUP_FILE + ".tmp")

# Fills a new, empty take folder with a keyword's takes; the store fsyncs and commits it.
TakesWriter = Callable[[Path], object]


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
    # 0..1, set by `kws set NAME --sensitivity S` (None: the config's default; see device.sensitivity)
    sensitivity: float | None = None
    # BCP 47 tag the user gave (`--language`), reported to Wyoming clients; None: not said
    language: str | None = None

    def prototype_matrix(self) -> np.ndarray:
        return np.asarray(self.prototypes, dtype=np.float32)


_FIELDS = {f.name for f in fields(Keyword)}
# What the user sets on a keyword rather than what enrollment measures (`kws set`): kept by --add and reembed.
USER_SETTINGS = ("sensitivity", "language")
_REQUIRED = {f.name for f in fields(Keyword) if f.default is MISSING and f.default_factory is MISSING}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class _Version:
    """One verified store file: its version number, its keywords and its exact bytes (for the backup)."""

    number: int
    keywords: dict[str, Keyword]
    raw: bytes


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _number(value: object, what: str) -> float:
    # bool is an int in Python but never a number a store means.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


def _vectors(value: object, what: str) -> list[list[float]]:
    """A non-empty list of equally long, non-empty lists of finite numbers."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of vectors, got {type(value).__name__} {value!r:.40}")
    rows = []
    for row in value:
        if not isinstance(row, list) or not row:
            raise ValueError(f"{what} must be non-empty lists of numbers, got {type(row).__name__} {row!r:.40}")
        rows.append([_number(x, what) for x in row])
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"{what} have different sizes ({sorted({len(row) for row in rows})})")
    return rows


def _keyword(record: object) -> Keyword:
    """Check one keyword record field by field; raise ValueError naming the keyword and the field."""
    from device.enroll import EnrollmentError, check_keyword_name, check_language  # device.enroll imports this

    if not isinstance(record, dict):
        raise ValueError(f"a keyword record is a {type(record).__name__}, not an object")
    name = record.get("name")
    label = f"keyword {name!r}" if isinstance(name, str) else "a keyword"
    unknown, missing = sorted(set(record) - _FIELDS), sorted(_REQUIRED - set(record))
    if unknown or missing:
        raise ValueError(f"{label}: unknown fields {unknown}, missing fields {missing}")
    if not isinstance(name, str) or check_keyword_name(name) != name:
        raise ValueError(f"{label}: the name is not a keyword name")
    prototypes = _vectors(record["prototypes"], f"{label}: prototypes")
    threshold = _number(record["threshold"], f"{label}: threshold")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"{label}: threshold {threshold} is not a cosine (between -1 and 1)")
    sha = record["encoder_sha256"]
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ValueError(f"{label}: encoder_sha256 {sha!r:.70} is not a sha256")
    takes = record["takes"]
    if type(takes) is not int or takes < 1:
        raise ValueError(f"{label}: takes is {takes!r}, not a positive whole number")
    stats = record.get("stats", {})
    if not isinstance(stats, dict):
        raise ValueError(f"{label}: stats is a {type(stats).__name__}, not an object")
    if "embeddings" in stats:  # what --add builds on: one per take, of the prototypes' size
        embeddings = _vectors(stats["embeddings"], f"{label}: stats.embeddings")
        if len(embeddings) != takes or len(embeddings[0]) != len(prototypes[0]):
            raise ValueError(
                f"{label}: {len(embeddings)} take embeddings of size {len(embeddings[0])} "
                f"for {takes} takes and prototypes of size {len(prototypes[0])}"
            )
    if "not_embeddings" in stats:  # `kws set NAME --not`: one label, score and embedding per recording
        negatives = _vectors(stats["not_embeddings"], f"{label}: stats.not_embeddings")
        labels, scores = stats.get("not_labels"), stats.get("not_scores")
        if (
            len(negatives[0]) != len(prototypes[0])
            or not isinstance(labels, list)
            or not isinstance(scores, list)
            or not len(labels) == len(scores) == len(negatives)
            or not all(isinstance(x, str) for x in labels)
        ):
            raise ValueError(f"{label}: stats.not_labels, not_scores and not_embeddings do not match")
        for value in scores:
            _number(value, f"{label}: stats.not_scores")
    if "negative_tail" in stats:  # what the sensitivity dial maps through: [rank, score], ranks increasing
        tail = stats["negative_tail"]
        if (
            not isinstance(tail, list)
            or not all(isinstance(p, list) and len(p) == 2 and type(p[0]) is int and p[0] >= 1 for p in tail)
            or any(a[0] >= b[0] for a, b in zip(tail, tail[1:], strict=False))
        ):
            raise ValueError(f"{label}: stats.negative_tail {tail!r:.60} is not a list of [rank, score] by rank")
        for _, value in tail:
            _number(value, f"{label}: stats.negative_tail score")
    above = stats.get("negative_above_threshold", 0)
    if type(above) is not int or above < 0:
        raise ValueError(f"{label}: stats.negative_above_threshold is {above!r}, not a whole number")
    sensitivity = record.get("sensitivity")
    if sensitivity is not None:
        sensitivity = check_sensitivity(sensitivity, f"{label}: sensitivity")
    language = record.get("language")
    if language is not None:
        try:
            if check_language(language) != language:
                raise EnrollmentError(f"language {language!r:.40} is not in its usual case")
        except EnrollmentError as error:
            raise ValueError(f"{label}: {error}") from None
    takes_dir = record.get("takes_dir")
    if takes_dir is not None:
        parts = PurePosixPath(takes_dir).parts if isinstance(takes_dir, str) else ()
        if len(parts) != 2 or parts[0] != TAKES_FOLDER or parts[1] in (".", "..") or "\\" in takes_dir:
            raise ValueError(f"{label}: takes_dir {takes_dir!r:.70} is not a folder under {TAKES_FOLDER}/")
    return Keyword(name, prototypes, threshold, sha, takes, stats, takes_dir, sensitivity, language)


def _parse(raw: bytes) -> _Version:
    """Verify a store file's bytes completely; raise ValueError saying what is wrong."""
    data = json.loads(raw)
    if not isinstance(data, dict) or set(data) != {"payload", "checksum"}:
        raise ValueError("not a keyword store file (expected an object with payload and checksum)")
    payload = data["payload"]
    if not isinstance(payload, dict) or data["checksum"] != _checksum(payload):
        raise ValueError("checksum mismatch (half-written or edited by hand)")
    if payload.get("format") != STORE_FORMAT or type(payload.get("format")) is not int:
        raise ValueError(f"unknown store format {payload.get('format')!r}")
    if set(payload) != {"format", "version", "keywords"}:
        raise ValueError(f"unexpected store fields {sorted(payload)}")
    number, records = payload["version"], payload["keywords"]
    if type(number) is not int or number < 1:
        raise ValueError(f"version {number!r} is not a positive whole number")
    if not isinstance(records, list):
        raise ValueError(f"keywords is a {type(records).__name__}, not a list")
    keywords: dict[str, Keyword] = {}
    sizes: dict[str, tuple[int, str]] = {}  # per encoder: the embedding size and the first keyword with it
    for record in records:
        keyword = _keyword(record)
        if keyword.name in keywords:
            raise ValueError(f"keyword {keyword.name!r} appears twice")
        size = len(keyword.prototypes[0])
        first_size, first_name = sizes.setdefault(keyword.encoder_sha256, (size, keyword.name))
        if size != first_size:
            raise ValueError(
                f"keyword {keyword.name!r} has prototypes of size {size}, but {first_name!r}, "
                f"made by the same encoder, has size {first_size}"
            )
        keywords[keyword.name] = keyword
    return _Version(number, keywords, raw)


def _read(path: Path) -> _Version:
    return _parse(path.read_bytes())


def read_keywords(path: str | Path) -> dict[str, Keyword]:
    """The keywords of one store file (current or backup), verified as a load does; ValueError or OSError if not."""
    return _read(Path(path)).keywords


# Everything a damaged file can raise while being read and verified.
_DAMAGE = (OSError, ValueError, RecursionError)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Make a filled take folder durable: every file in it, then the folder itself."""
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(folder)


class KeywordStore:
    """Keywords of one store folder, loaded on construction."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.keywords: dict[str, Keyword] = {}
        self.version = 0
        self.recovered_from_backup = False
        self._load()
        self._clean_up_on_open()

    @property
    def path(self) -> Path:
        return self.folder / STORE_FILE

    @property
    def backup_path(self) -> Path:
        return self.folder / BACKUP_FILE

    def _load(self) -> None:
        if not self.path.exists() and not self.backup_path.exists():
            return
        try:
            current = _read(self.path)
        except _DAMAGE as error:
            try:
                current = _read(self.backup_path)
            except _DAMAGE as backup_error:
                raise StoreError(
                    f"keyword store {self.path} is unreadable ({error}) and so is its backup ({backup_error}); "
                    f"move the folder aside and enroll again"
                ) from backup_error
            log.error(
                "keyword store %s is damaged (%s): using the last good version %d from %s",
                self.path,
                error,
                current.number,
                self.backup_path.name,
            )
            self.recovered_from_backup = True
        self.version = current.number
        self.keywords = current.keywords

    # -- locking and clean-up --------------------------------------------------------------------

    @contextmanager
    def _lock(self, wait: bool = True) -> Iterator[bool]:
        """Hold the store's exclusive lock (a flock on the folder); yield False if busy and not ``wait``."""
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _clean_up_on_open(self) -> None:
        """Delete what an interrupted change left, unless a writer is busy (its new folder is not garbage)."""
        if not self.folder.is_dir():
            return
        try:
            with self._lock(wait=False) as locked:
                if locked:
                    self._clean_up()
        except OSError as error:  # a read-only store can still be read
            log.warning("could not clean up keyword store %s: %s", self.folder, error)

    def _referenced_takes(self) -> set[str] | None:
        """Take folders the current file or the backup names, as they are on disk now.

        None when the current file cannot be read, or the backup exists but cannot: the folders
        they name are unknown and may yet be wanted (a file fixed by hand), so nothing is deleted.
        """
        referenced = set()
        for path in (self.path, self.backup_path):
            try:
                version = _read(path)
            except FileNotFoundError:
                if path == self.path and self.backup_path.exists():
                    return None
                continue
            except _DAMAGE:
                return None
            referenced |= {k.takes_dir for k in version.keywords.values() if k.takes_dir}
        return referenced

    def _clean_up(self) -> None:
        """Delete the store's temporary files and take folders no committed version names (lock held)."""
        for name in TEMPORARY_FILES:
            (self.folder / name).unlink(missing_ok=True)
        root = self.folder / TAKES_FOLDER
        referenced = self._referenced_takes()
        if referenced is None or not root.is_dir():
            return
        for entry in root.iterdir():
            if f"{TAKES_FOLDER}/{entry.name}" in referenced:
                continue
            log.info("deleting %s: no version of the store names it (left by an interrupted change)", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # -- reading ----------------------------------------------------------------------------------

    def check_encoder(self, encoder_sha256: str) -> None:
        """Refuse keywords made with another encoder, naming them and the way out."""
        stale = sorted(k.name for k in self.keywords.values() if k.encoder_sha256 != encoder_sha256)
        if stale:
            raise EncoderMismatchError(
                f"keywords {', '.join(stale)} in {self.folder} were enrolled with a different encoder "
                f"(sha256 {self.keywords[stale[0]].encoder_sha256[:12]}..., loaded {encoder_sha256[:12]}...): "
                f"re-enroll them with `kws enroll NAME ...`, or run `kws reembed` if their takes were kept"
            )

    @property
    def names(self) -> list[str]:
        return sorted(self.keywords)

    def take_files(self, keyword: Keyword) -> list[Path]:
        """The wav files of a keyword's kept takes (none when they were not kept)."""
        folder = self.folder / keyword.takes_dir if keyword.takes_dir else None
        return sorted(folder.glob("take_*.wav")) if folder and folder.is_dir() else []

    # -- writing ----------------------------------------------------------------------------------

    def put(self, keyword: Keyword, write_takes: TakesWriter | None = None) -> Keyword:
        """Add or replace a keyword; ``write_takes`` fills a new take folder committed with it. Returns it as stored."""
        return self.put_many([(keyword, write_takes)])[0]

    def put_many(self, entries: list[tuple[Keyword, TakesWriter | None]]) -> list[Keyword]:
        """Add or replace keywords in one new version, each with its new takes (if a writer is given).

        All of them are committed, or (on any error) none: the folders written for them are
        deleted and the store stays as it was. Returns the keywords as stored (with ``takes_dir``).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._refresh()
            before, made, stored = self.version, [], []
            try:
                for keyword, write_takes in entries:
                    if write_takes is not None:
                        folder = self.folder / TAKES_FOLDER / f"{keyword.name}.{uuid.uuid4().hex[:12]}"
                        folder.mkdir(parents=True)
                        made.append(folder)
                        write_takes(folder)
                        _fsync_tree(folder)
                        keyword = replace(keyword, takes_dir=folder.relative_to(self.folder).as_posix())
                    stored.append(keyword)
                if made:
                    _fsync_dir(self.folder / TAKES_FOLDER)
                self._commit(self.keywords | {k.name: k for k in stored})
            finally:
                if self.version == before:  # not committed: the new folders belong to no version
                    for folder in made:
                        shutil.rmtree(folder, ignore_errors=True)
            self._clean_up()
        return stored

    def update_settings(self, name: str, **settings: object) -> Keyword:
        """Store the user's settings (:data:`USER_SETTINGS`; None: not set) with the keyword; return it as stored.

        ``sensitivity`` is 0..1 (None: back to the config's default), ``language`` a BCP 47 tag.
        Applied to the version on disk under the lock, like every change, so it cannot undo
        an enrollment another process committed meanwhile; one call is one version.
        """
        unknown = sorted(set(settings) - set(USER_SETTINGS))
        if unknown:
            raise TypeError(f"not a keyword setting: {', '.join(unknown)} (settings: {', '.join(USER_SETTINGS)})")
        with self._lock() if self.folder.is_dir() else nullcontext():
            self._refresh()
            if name not in self.keywords:
                have = ", ".join(self.names) or "none"
                raise StoreError(f"no keyword named {name!r} in {self.folder} (have: {have})")
            keyword = replace(self.keywords[name], **settings)
            self._commit(self.keywords | {name: keyword})  # its write-time check refuses a bad value
            self._clean_up()
        return keyword

    def remove(self, name: str) -> None:
        """Remove a keyword, and (once no version names them) its kept takes.

        The backup is brought up to the new version too: a backup still holding the keyword
        would keep the recordings of a word the user removed, and bring it back on a fallback.
        """
        with self._lock() if self.folder.is_dir() else nullcontext():
            self._refresh()
            if name not in self.keywords:
                have = ", ".join(self.names) or "none"
                raise StoreError(f"no keyword named {name!r} in {self.folder} (have: {have})")
            self._commit({n: k for n, k in self.keywords.items() if n != name}, also_backup=True)
            self._clean_up()

    def save(self) -> None:
        """Commit ``keywords`` as they are now as a new version (see the module docstring)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._commit(dict(self.keywords))
            self._clean_up()

    def _refresh(self) -> None:
        """Adopt a version another process committed since this one was loaded (lock held).

        Why: a change applied to an out-of-date copy would silently drop the other process's
        keywords (two ``kws enroll`` at once). A current file that cannot be read changes nothing.
        """
        try:
            current = _read(self.path)
        except _DAMAGE:
            return
        if current.number != self.version:
            log.info(
                "keyword store %s changed on disk (version %d): applying the change to it", self.path, current.number
            )
            self.version, self.keywords = current.number, current.keywords

    def _write_synced(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def _commit(self, keywords: dict[str, Keyword], also_backup: bool = False) -> None:
        """Write ``keywords`` as the next version: temporary file, backup of a good current file, rename."""
        payload = {
            "format": STORE_FORMAT,
            "version": self.version + 1,
            "keywords": [asdict(keywords[n]) for n in sorted(keywords)],
        }
        raw = json.dumps({"payload": payload, "checksum": _checksum(payload)}, indent=1).encode()
        try:
            _parse(raw)  # never write what a load would refuse
        except ValueError as error:
            raise StoreError(f"refusing to write an invalid keyword store to {self.folder}: {error}") from error
        try:
            previous: bytes | None = _read(self.path).raw
        except FileNotFoundError:
            previous = None
        except _DAMAGE as error:
            log.warning(
                "not backing up %s, it is damaged (%s): %s stays the last good version", self.path, error, BACKUP_FILE
            )
            previous = None
        temporary = self._write_synced(STORE_FILE + ".tmp", raw)
        if previous is not None:
            os.replace(self._write_synced(BACKUP_FILE + ".tmp", previous), self.backup_path)
            _fsync_dir(self.folder)
        os.replace(temporary, self.path)
        self.version, self.keywords = payload["version"], keywords
        _fsync_dir(self.folder)
        if also_backup:
            os.replace(self._write_synced(BACKUP_FILE + ".tmp", raw), self.backup_path)
            _fsync_dir(self.folder)


def store_version(folder: str | Path) -> tuple[int, int] | None:
    """A cheap change marker for watchers: (mtime_ns, size) of the current file, or None."""
    try:
        stat = (Path(folder) / STORE_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size
