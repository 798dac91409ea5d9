"""The talk split: evaluation talk never reaches training, and the guard says which file did."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trainer.evaluation.data import shared_data
from trainer.real_speech import (
    EVAL_LANGUAGES,
    TRAIN_LANGUAGES,
    TalkLeakageError,
    assert_talk_disjoint,
    read_manifest,
    talk_files,
)

TALK = shared_data("real_speech")
needs_talk = pytest.mark.skipif(not (TALK / "manifest.csv").is_file(), reason=f"real-speech corpus not found at {TALK}")


def _write_manifest(root: Path, rows: list[tuple[str, str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "source_repo", "commit", "original_path", "licence", "seconds", "language", "use"])
        for file, language in rows:
            writer.writerow([file, "r", "c", file, "CC BY 4.0, with a comma", "2.5", language, "x"])


def test_languages_of_the_two_parts_do_not_meet() -> None:
    assert not TRAIN_LANGUAGES & EVAL_LANGUAGES


def test_split_by_language_and_eval_only_corpus(tmp_path: Path) -> None:
    _write_manifest(
        tmp_path,
        [("voxlingua107_dev/en/a.opus", "en"), ("voxlingua107_dev/ja/b.opus", "ja"), ("mboshi/c.opus", "mdw")],
    )
    assert [f.file_id for f in talk_files(tmp_path, "train")] == ["voxlingua107_dev/en/a.opus"]
    assert [f.file_id for f in talk_files(tmp_path, "eval")] == ["voxlingua107_dev/ja/b.opus", "mboshi/c.opus"]
    assert read_manifest(tmp_path)[0].seconds == 2.5
    assert read_manifest(tmp_path)[1].source == "talk:voxlingua107_dev:ja"


def test_a_language_in_no_part_is_refused(tmp_path: Path) -> None:
    _write_manifest(tmp_path, [("voxlingua107_dev/xx/a.opus", "xx")])
    with pytest.raises(ValueError, match="neither part"):
        talk_files(tmp_path, "train")


def test_guard_names_evaluation_talk_used_for_training(tmp_path: Path) -> None:
    _write_manifest(tmp_path, [("voxlingua107_dev/en/a.opus", "en"), ("voxlingua107_dev/ja/b.opus", "ja")])
    assert_talk_disjoint(["voxlingua107_dev/en/a.opus", "fsdd/recordings/3_theo_7.wav"], tmp_path)
    with pytest.raises(TalkLeakageError, match="voxlingua107_dev/ja/b.opus"):
        assert_talk_disjoint(["/data/real_speech/voxlingua107_dev/ja/b.opus"], tmp_path)
    with pytest.raises(TalkLeakageError, match="mboshi"):
        assert_talk_disjoint(["real_speech/mboshi/anything.opus"])  # without a manifest, by path


@needs_talk
def test_the_real_corpus_splits_whole() -> None:
    files = read_manifest(TALK)
    train, evaluation = talk_files(TALK, "train"), talk_files(TALK, "eval")
    assert len(train) + len(evaluation) == len(files)
    assert sum(f.seconds for f in train) > 3600  # over an hour to train and calibrate on
    assert sum(f.seconds for f in evaluation) > 5 * 3600  # hours to count false alarms over
    assert {f.corpus for f in train} == {"voxlingua107_dev"}
    assert_talk_disjoint([f.file_id for f in train], TALK)
    with pytest.raises(TalkLeakageError):
        assert_talk_disjoint([evaluation[0].file_id], TALK)
