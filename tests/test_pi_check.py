"""The Raspberry Pi proof (`make pi-check`) and the TFLite Micro op check.

The slow test runs the whole pi-check: an enrollment and a detection on x86 and on
emulated Pi CPUs (qemu-aarch64-static), compared. It skips with the reason where the
emulated Pi cannot be prepared (no qemu, no registry), and fails on a real mismatch.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import tflm_ops

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "firmware_models" / "encoder.tflite"
SCRIPT = REPO / "scripts" / "pi_check.py"


def load_pi_check():
    spec = importlib.util.spec_from_file_location("pi_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the comparison logic (fast) ----------------------------------------------------------------------


def fake_result(events: list[tuple[str, float, float]], int8_row: list[int], threshold: float = 0.9) -> dict:
    unit = [x / 100.0 for x in int8_row]
    return {
        "enrollment": {"threshold": threshold, "prototypes": [unit], "take_embeddings": [unit, unit]},
        "events": [{"keyword": k, "time_s": t, "score": s} for k, t, s in events],
        "windows": {"int8": [int8_row], "unit": [unit]},
    }


def test_compare_accepts_int8_rounding_and_rejects_mismatches() -> None:
    pi_check = load_pi_check()
    row = [10, -20, 30, 40]
    reference = fake_result([("hey toaster", 4.17, 0.9517)], row)

    problems, measured = pi_check.compare(reference, fake_result([("hey toaster", 4.17, 0.95175)], [11, -20, 30, 40]))
    assert problems == []
    assert measured["window_int8_max_steps"] == 1 and measured["events_identical"]

    problems, _ = pi_check.compare(reference, fake_result([("hey toaster", 4.27, 0.9517)], row))
    assert any("detection events differ" in p for p in problems)
    problems, _ = pi_check.compare(reference, fake_result([], row))
    assert any("detection events differ" in p for p in problems)
    problems, _ = pi_check.compare(reference, fake_result([("hey toaster", 4.17, 0.96)], row))
    assert any("scores differ" in p for p in problems)
    problems, _ = pi_check.compare(reference, fake_result([("hey toaster", 4.17, 0.9517)], [13, -20, 30, 40]))
    assert any("int8 outputs differ by 3 steps" in p for p in problems)


def test_missing_qemu_is_a_skip_not_a_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pi_check = load_pi_check()
    monkeypatch.setattr(pi_check.shutil, "which", lambda name: None)
    assert pi_check.main(["--cache", str(tmp_path)]) == pi_check.EXIT_SKIP


# -- the whole check under emulation (slow) -----------------------------------------------------------


@pytest.mark.slow
def test_pi_check_matches_x86_on_emulated_pi_cpus() -> None:
    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (Debian package qemu-user-static)")
    if not MODEL.is_file():
        pytest.skip("no shipped encoder in firmware_models/")
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    if done.returncode == 77:
        pytest.skip(next((line for line in output.splitlines() if "SKIP" in line), output.strip()[-300:]))
    assert done.returncode == 0, output
    assert "PASS" in output


# -- TFLite Micro ops (fast) --------------------------------------------------------------------------


@pytest.mark.skipif(not MODEL.is_file(), reason="no shipped encoder in firmware_models/")
def test_shipped_encoder_uses_only_micro_ops() -> None:
    ops = tflm_ops.check_micro_ops(MODEL)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(ops)
    assert ops == sorted(ops)


@pytest.mark.skipif(not MODEL.is_file(), reason="no shipped encoder in firmware_models/")
def test_an_op_outside_micro_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tflm_ops, "MICRO_INT8_OPS", tflm_ops.MICRO_INT8_OPS - {"DEPTHWISE_CONV_2D"})
    with pytest.raises(ValueError, match="DEPTHWISE_CONV_2D"):
        tflm_ops.check_micro_ops(MODEL)


def test_float_only_micro_ops_need_float_operands(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = [("CONV_2D", ("int8", "int8", "int32")), ("SQUARE", ("float32",))]
    monkeypatch.setattr(tflm_ops, "model_ops", lambda path: ops)
    assert tflm_ops.check_micro_ops("model.tflite") == ["CONV_2D", "SQUARE"]
    ops.append(("SQUARE", ("int8",)))
    with pytest.raises(ValueError, match=r"SQUARE \(int8\)"):
        tflm_ops.check_micro_ops("model.tflite")
    monkeypatch.setattr(tflm_ops, "model_ops", lambda path: [("EMBEDDING_LOOKUP", ("int32", "int8"))])
    with pytest.raises(ValueError, match="EMBEDDING_LOOKUP"):
        tflm_ops.check_micro_ops("model.tflite")
