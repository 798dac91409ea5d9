"""`make export QUICK=1` end to end: synthetic data, training, int8 export, parity check, device load."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.config import shared_root

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (make install-system)"),
]


def _train_and_export(config: Path, run: Path, out: Path) -> str:
    """``kws-train all``; its log (stderr)."""
    command = [
        sys.executable,
        "-m",
        "trainer.cli",
        "all",
        "--config",
        str(config),
        "--run",
        str(run),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def test_quick_export_produces_a_verified_int8_model(tmp_path):
    pytest.importorskip("tensorflow", reason="tensorflow not installed (trainer extra)")
    command = [sys.executable, "-m", "trainer.synth", "--out", "data_cache/synth_quick", "--quick"]
    subprocess.run(command, cwd=REPO, check=True)
    out = tmp_path / "encoder.tflite"
    _train_and_export(REPO / "configs/quick.toml", tmp_path / "run", out)
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["input"]["dtype"] == "int8" and manifest["output"]["dtype"] == "int8"
    figures = manifest["figures"]
    assert figures["int8_mean_cosine"] >= 0.98
    assert figures["float_validation_accuracy"] - figures["int8_validation_accuracy"] <= 0.02
    card = (tmp_path / "README.md").read_text()
    sentences = shared_root() / "data" / "speechocean762_sentences" / "audio" / "so-0001"
    if sentences.is_dir():  # the quick config trains on one speaker's sentences; the card says so
        assert manifest["training"]["sentences"]["speakers"] == 1
        assert "windows of unlabelled read speech from" in card

    from device.encoder import Encoder
    from device.manifest import ModelError

    encoder = Encoder(out)
    embedding = encoder.embed_frames(np.zeros((encoder.window_frames, 40), np.float32) - 5.0)
    assert embedding.shape == (manifest["embedding_size"],)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    negatives = np.load(out.with_suffix(".negatives.npy"))
    assert negatives.shape[1] == manifest["embedding_size"] and len(negatives) > 2000  # + isolated-word windows

    out.write_bytes(out.read_bytes()[:-1] + b"\x00")  # one byte changed
    with pytest.raises(ModelError, match="does not match its manifest"):
        Encoder(out)

    # a resumed run keeps its clock (time budget, schedule) and its minutes. Give the finished run's
    # checkpoint the clock of a 10-minute run that was interrupted and resumed: training it again resumes
    # it, trains nothing more, and must report those 10 minutes, not the new process's few seconds.
    from trainer.train import training_clock

    checkpoint = tmp_path / "run" / "checkpoint.npz"
    with np.load(checkpoint) as saved:
        assert saved["elapsed_seconds"] > 0
        np.savez(checkpoint, **{**saved, "elapsed_seconds": np.float64(600.0)})
    command = [
        sys.executable,
        "-m",
        "trainer.cli",
        "train",
        "--config",
        "configs/quick.toml",
        "--run",
        str(tmp_path / "run"),
    ]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert json.loads((tmp_path / "run" / "timing.json").read_text())["train_minutes"] >= 10.0
    assert training_clock(tmp_path / "run") == 600.0

    # a second training session starts from the first run's weights and is counted with it
    second = tmp_path / "second.toml"
    quick = (REPO / "configs/quick.toml").as_posix()
    second.write_text(
        f'base = "{quick}"\nstart_from = "{(tmp_path / "run").as_posix()}"\nsteps = 6\nvalidate_every = 3\n'
    )
    log = _train_and_export(second, tmp_path / "run2", tmp_path / "second" / "encoder.tflite")
    assert "starting a new cycle from" in log and "different word list" not in log
    training = json.loads((tmp_path / "second" / "encoder.json").read_text())["training"]
    assert training["steps"] == manifest["training"]["steps"] + 6 == 36
    assert [c["run"] for c in training["cycles"]] == ["run", "run2"]
    assert training["train_minutes"] >= manifest["training"]["train_minutes"]
    card = (tmp_path / "second" / "README.md").read_text()
    assert "in 2 training sessions" in card and "2 sessions, each a warm-up and cosine decay" in card

    # a third session starts from the second one's exported model, as a fresh machine with only
    # firmware_models/ would: rebuilt in float, its sessions and training clips carried into the new manifest;
    # it also narrows the mel range, which the new manifest (what the device computes) must carry
    third = tmp_path / "third.toml"
    start = tmp_path / "second" / "encoder.tflite"
    third.write_text(
        f'base = "{quick}"\nstart_from = "{start.as_posix()}"\nsteps = 6\nvalidate_every = 3\n'
        "[frontend]\nfmax_hz = 3800.0\n"
    )
    log = _train_and_export(third, tmp_path / "run3", tmp_path / "third" / "encoder.tflite")
    assert "encoder rebuilt from" in log and "starting a new cycle from" not in log
    assert "the frontend changes ({'fmax_hz': (7600.0, 3800.0)})" in log
    assert (tmp_path / "run3" / "start.tflite").read_bytes() == start.read_bytes()
    manifest3 = json.loads((tmp_path / "third" / "encoder.json").read_text())
    assert [c["run"] for c in manifest3["training"]["cycles"]] == ["run", "run2", "run3"]
    assert manifest3["training"]["steps"] == 42
    assert manifest3["frontend"]["fmax_hz"] == 3800.0 and manifest["frontend"]["fmax_hz"] == 7600.0
    second_ids = (tmp_path / "second" / "encoder.training_clips.txt").read_text().split()
    third_ids = (tmp_path / "third" / "encoder.training_clips.txt").read_text().split()
    assert set(second_ids) <= set(third_ids)
    assert manifest3["figures"]["int8_mean_cosine"] >= 0.98
