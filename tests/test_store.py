"""The keyword store under crashes and damage: takes committed with their version, the backup kept good,
every record verified on load, interrupted changes cleaned up, re-embedding all at once.

Keywords are enrolled for real (the shipped model, espeak-ng takes); a store "from another
encoder" is one whose keywords carry another sha256 and prototypes of another size, as a
model change leaves them. Crashes are injected as a failing ``os.replace`` (a power cut at
the commit) and, in ``test_sigkill_at_random_moments_*``, as SIGKILLs of a real child process.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from spoken import say

from device.audio import write_wav
from device.store import (
    BACKUP_FILE,
    STORE_FILE,
    TAKES_FOLDER,
    Keyword,
    KeywordStore,
    StoreError,
    _checksum,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")
RATE = 16000
VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
OTHER_ENCODER = "f" * 64

needs_speech = pytest.mark.skipif(
    not MODEL.is_file() or shutil.which("espeak-ng") is None, reason="needs the shipped model and espeak-ng"
)


def takes_of(word: str, voices=VOICES) -> list[np.ndarray]:
    return [say(word, *voice) for voice in voices]


def spotter(folder: Path, check_store: bool = False):
    from device.spotter import Spotter

    return Spotter(folder, MODEL, check_store=check_store)


def wavs(folder: Path) -> int:
    return len(list(folder.glob("take_*.wav")))


def take_folders(store: Path) -> set[str]:
    root = store / TAKES_FOLDER
    return {f"{TAKES_FOLDER}/{p.name}" for p in root.iterdir()} if root.is_dir() else set()


def assert_whole(folder: Path) -> KeywordStore:
    """The store loads from its current file, every kept keyword's folder holds its takes, nothing else is left."""
    store = KeywordStore(folder)
    assert not store.recovered_from_backup
    for keyword in store.keywords.values():
        if keyword.takes_dir is not None:
            assert wavs(folder / keyword.takes_dir) == keyword.takes, keyword.name
    named = {k.takes_dir for k in store.keywords.values() if k.takes_dir}
    if store.backup_path.exists():
        named |= {k["takes_dir"] for k in json.loads(store.backup_path.read_text())["payload"]["keywords"]}
    assert take_folders(folder) <= named, "orphan take folders survived the open"
    assert not list(folder.glob("*.tmp"))
    return store


@pytest.fixture
def power_cut_at_commit(monkeypatch):
    """Make the rename that commits a new version fail, as a power cut just before it would."""
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == STORE_FILE:
            raise OSError("power cut")
        real(src, dst)

    def arm() -> None:
        monkeypatch.setattr(os, "replace", replace)

    yield arm
    monkeypatch.setattr(os, "replace", real)


# -- takes change with their keyword ------------------------------------------------------------------------


@needs_speech
@pytest.mark.parametrize("change", ["re-enroll", "add", "remove"])
def test_a_crash_during_a_change_leaves_the_old_keyword_with_all_its_takes(tmp_path, power_cut_at_commit, change):
    spot = spotter(tmp_path)
    spot.enroll("hey toaster", takes_of("hey toaster"))
    power_cut_at_commit()
    with pytest.raises(OSError, match="power cut"):
        if change == "re-enroll":
            spot.enroll("hey toaster", takes_of("hey toaster", VOICES[:3]), replace=True)
        elif change == "add":
            spot.enroll("hey toaster", takes_of("hey toaster", VOICES[:2]), add=True)
        else:
            spot.remove("hey toaster")
    store = assert_whole(tmp_path)
    assert store.keywords["hey toaster"].takes == 5
    assert wavs(tmp_path / store.keywords["hey toaster"].takes_dir) == 5


@needs_speech
def test_re_enroll_and_add_commit_a_new_folder_holding_every_take(tmp_path):
    spot = spotter(tmp_path)
    first = spot.enroll("hey toaster", takes_of("hey toaster"))
    added = spot.enroll("hey toaster", takes_of("hey toaster", VOICES[:2]), add=True)
    assert added.takes_dir != first.takes_dir and wavs(tmp_path / added.takes_dir) == added.takes == 7
    replaced = spot.enroll("hey toaster", takes_of("hey toaster", VOICES[:3]), replace=True)
    assert wavs(tmp_path / replaced.takes_dir) == replaced.takes == 3
    # The backup's version keeps its folder (it must stay whole for a fallback); the one before is gone.
    assert take_folders(tmp_path) == {replaced.takes_dir, added.takes_dir}
    assert_whole(tmp_path)
    spot.remove("hey toaster")
    assert take_folders(tmp_path) == set()  # removing a keyword removes its recordings, backup included
    assert "hey toaster" not in (tmp_path / BACKUP_FILE).read_text()


@needs_speech
def test_add_to_a_keyword_whose_takes_were_not_kept_keeps_none(tmp_path):
    spot = spotter(tmp_path)
    spot.enroll("hey toaster", takes_of("hey toaster"), keep_takes=False)
    added = spot.enroll("hey toaster", takes_of("hey toaster", VOICES[:2]), add=True)
    assert added.takes == 7 and added.takes_dir is None  # two wavs could not stand for seven takes
    assert take_folders(tmp_path) == set()


def _keyword(name: str, size: int = 64, sha: str = "0" * 64, **changes) -> Keyword:
    vector = np.zeros(size)
    vector[0] = 1.0
    fields = dict(name=name, prototypes=[vector.tolist()], threshold=0.9, encoder_sha256=sha, takes=3)
    return Keyword(**(fields | changes))


def test_orphan_take_folders_and_the_stores_temporary_files_are_cleaned_on_open(tmp_path):
    store = KeywordStore(tmp_path)
    store.put(_keyword("kept"), lambda folder: [(folder / f"take_0{i}.wav").write_bytes(b"") for i in range(3)])
    named = store.keywords["kept"].takes_dir
    orphan = tmp_path / TAKES_FOLDER / "kept.0123456789ab"  # a change killed before its commit
    orphan.mkdir()
    (orphan / "take_00.wav").write_bytes(b"")
    for name in (STORE_FILE + ".tmp", BACKUP_FILE + ".tmp"):
        (tmp_path / name).write_text("{")
    (tmp_path / "notes.tmp").write_text("the user's")  # not the store's: left alone
    KeywordStore(tmp_path)
    assert take_folders(tmp_path) == {named}
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == ["notes.tmp"]


def test_the_clean_up_leaves_a_folder_a_writer_is_still_filling(tmp_path):
    store = KeywordStore(tmp_path)
    store.put(_keyword("kept"))
    filling = tmp_path / TAKES_FOLDER / "new.0123456789ab"
    with store._lock():  # another process in the middle of put(): its new folder is not committed yet
        filling.mkdir(parents=True)
        KeywordStore(tmp_path)
        assert filling.is_dir()
    KeywordStore(tmp_path)
    assert not filling.exists()


def test_a_failing_takes_writer_changes_nothing(tmp_path):
    store = KeywordStore(tmp_path)
    store.put(_keyword("kept"))

    def fails(folder: Path) -> None:
        (folder / "take_00.wav").write_bytes(b"")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.put_many([(_keyword("new"), None), (_keyword("other"), fails)])
    assert KeywordStore(tmp_path).names == ["kept"] and take_folders(tmp_path) == set()


def test_two_writers_at_once_keep_each_others_keywords(tmp_path):
    first, second = KeywordStore(tmp_path), KeywordStore(tmp_path)  # e.g. two `kws enroll` at once
    first.put(_keyword("one"))
    second.put(_keyword("two"))
    first.remove("two")
    assert KeywordStore(tmp_path).names == ["one"]


# -- the backup stays good -----------------------------------------------------------------------------------


def test_a_damaged_current_file_never_replaces_the_good_backup(tmp_path):
    store = KeywordStore(tmp_path)
    store.put(_keyword("first"))
    store.put(_keyword("second"))
    (tmp_path / STORE_FILE).write_text("{ half written")
    recovered = KeywordStore(tmp_path)
    assert recovered.recovered_from_backup and recovered.names == ["first"]
    recovered.put(_keyword("third"))  # the damaged file must not become the backup
    assert KeywordStore(tmp_path).names == ["first", "third"]
    (tmp_path / STORE_FILE).write_text("[1, 2, 3]")  # a second damage
    again = KeywordStore(tmp_path)
    assert again.recovered_from_backup and again.names == ["first"]


# -- every record is verified --------------------------------------------------------------------------------


def _write(folder: Path, name: str, records: list[dict], **payload_changes) -> None:
    payload = {"format": 1, "version": 3, "keywords": records} | payload_changes
    (folder / name).write_text(json.dumps({"payload": payload, "checksum": _checksum(payload)}))


def _good() -> dict:
    from dataclasses import asdict

    return asdict(_keyword("good"))


DAMAGE = {
    "extra field": lambda r: r | {"colour": "blue"},
    "missing field": lambda r: {k: v for k, v in r.items() if k != "threshold"},
    "string threshold": lambda r: r | {"threshold": "0.9"},
    "NaN threshold": lambda r: r | {"threshold": float("nan")},
    "no prototypes": lambda r: r | {"prototypes": []},
    "prototypes of two sizes": lambda r: r | {"prototypes": [[1.0, 0.0], [1.0, 0.0, 0.0]]},
    "infinite prototype": lambda r: r | {"prototypes": [[float("inf")] * 64]},
    "bool takes": lambda r: r | {"takes": True},
    "name with a slash": lambda r: r | {"name": "../escape"},
    "takes_dir outside the store": lambda r: r | {"takes_dir": "../../home"},
    "short sha": lambda r: r | {"encoder_sha256": "abc"},
    "embeddings per take": lambda r: r | {"stats": {"embeddings": [[1.0] * 64]}},
    "not a record": lambda r: [1, 2, 3],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_checksum_valid_but_invalid_record_falls_back_to_the_backup_or_is_refused(tmp_path, damage):
    _write(tmp_path, STORE_FILE, [_good(), DAMAGE[damage](_good() | {"name": "bad"})])
    with pytest.raises(StoreError, match="unreadable.*enroll again"):
        KeywordStore(tmp_path)
    _write(tmp_path, BACKUP_FILE, [_good()], version=2)
    store = KeywordStore(tmp_path)
    assert store.recovered_from_backup and store.names == ["good"]


def test_a_prototype_of_another_size_than_its_encoders_other_keywords_is_refused(tmp_path):
    from dataclasses import asdict

    other_size = asdict(_keyword("other", size=32))
    _write(tmp_path, STORE_FILE, [_good(), other_size])
    with pytest.raises(StoreError, match="size 32.*same encoder"):
        KeywordStore(tmp_path)
    _write(tmp_path, STORE_FILE, [_good(), other_size | {"encoder_sha256": OTHER_ENCODER}])
    assert KeywordStore(tmp_path).names == ["good", "other"]  # another encoder's: stale, not damaged
    with pytest.raises(StoreError, match="refusing to write"):
        KeywordStore(tmp_path).put(_keyword("third", size=16))


@pytest.mark.parametrize("text", ["[1, 2, 3]", '{"payload": 1, "checksum": 2}', "null", '"x"', "\udcff"])
def test_a_current_file_that_is_not_a_store_falls_back(tmp_path, text):
    _write(tmp_path, BACKUP_FILE, [_good()])
    (tmp_path / STORE_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert KeywordStore(tmp_path).recovered_from_backup


# -- a store from another encoder is always recoverable ---------------------------------------------------------


def _foreign_store(folder: Path, words: list[str]) -> None:
    """Keywords as another encoder with 32-dim embeddings left them, with their takes kept."""
    store = KeywordStore(folder)
    for word in words:

        def write(target: Path, word: str = word) -> None:
            for i, take in enumerate(takes_of(word)):
                write_wav(target / f"take_{i:02d}.wav", take, RATE)

        store.put(_keyword(word, size=32, sha=OTHER_ENCODER, takes=5), write)


def kws(*args: str | Path) -> tuple[int, str]:
    from device.cli import main

    out = io.StringIO()
    return main(["--model", str(MODEL), *map(str, args)], out=out), out.getvalue()


@needs_speech
def test_reembed_from_an_encoder_of_another_size_switches_every_keyword_at_once(tmp_path):
    _foreign_store(tmp_path, ["hey toaster", "open sesame"])
    status, out = kws("--store", tmp_path, "reembed")
    assert status == 0, out
    assert "re-embedded 'hey toaster' from 5 takes" in out and "re-embedded 'open sesame'" in out
    store = assert_whole(tmp_path)
    size = json.loads(MODEL.with_suffix(".json").read_text())["embedding_size"]
    assert {len(k.prototypes[0]) for k in store.keywords.values()} == {size}
    spotter(tmp_path, check_store=True)  # usable for detection


@needs_speech
def test_a_reembed_that_fails_half_way_changes_nothing_and_says_what_to_do(tmp_path, capsys):
    _foreign_store(tmp_path, ["hey toaster", "open sesame"])
    before = (tmp_path / STORE_FILE).read_bytes()
    broken = tmp_path / KeywordStore(tmp_path).keywords["open sesame"].takes_dir
    (broken / "take_03.wav").write_bytes(b"RIFF garbage")
    status, _ = kws("--store", tmp_path, "reembed")
    assert status == 1
    error = capsys.readouterr().err
    assert "cannot re-embed 'open sesame'" in error and "nothing was changed" in error and "kws enroll" in error
    assert (tmp_path / STORE_FILE).read_bytes() == before
    assert_whole(tmp_path)


@needs_speech
def test_enroll_into_a_store_of_another_encoder_works_and_reembed_finishes_it(tmp_path):
    _foreign_store(tmp_path, ["hey toaster"])
    takes = []
    for i, take in enumerate(takes_of("open sesame")):
        takes.append(tmp_path / f"open_sesame_{i}.wav")
        write_wav(takes[-1], take, RATE)
    status, out = kws("--store", tmp_path, "enroll", "open sesame", *takes)
    assert status == 0 and "enrolled 'open sesame': 5 takes" in out
    assert kws("--store", tmp_path, "reembed")[0] == 0
    assert_whole(tmp_path)
    spotter(tmp_path, check_store=True)


# -- SIGKILL at random moments ------------------------------------------------------------------------------------


@needs_speech
def test_sigkill_at_random_moments_leaves_every_keyword_whole(tmp_path, monkeypatch):
    """A few kills of a real child process enrolling, adding, removing and re-embedding (`make crash-test`: 300)."""
    spec = importlib.util.spec_from_file_location("crash_test", ROOT / "scripts" / "crash_test.py")
    crash_test = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "crash_test", crash_test)  # its dataclass looks its module up
    spec.loader.exec_module(crash_test)
    tally = crash_test.run(kills=4, work=tmp_path, model=MODEL, seed=1)
    assert tally.kills == 4 and tally.failures == 0, tally.line()
