"""What an installation says about itself: ``kws --version``, the quiet runtime, and the trainer-only scripts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_cli import MODEL, ROOT, kws, needs_model

from device.about import DISTRIBUTION, package_version
from device.audio import write_wav
from device.interpreter import DELEGATE_LINE
from device.manifest import load_manifest
from trainer import entry


@needs_model
def test_version_names_the_package_and_the_encoder_in_use(tmp_path):
    result = kws("--version")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == f"kws ({DISTRIBUTION}) {package_version()}"
    assert second.startswith(f"encoder {load_manifest(MODEL).sha256[:12]} ({MODEL}")
    missing = kws("--version", env={"KWS_MODEL": str(tmp_path / "none.tflite")})
    assert missing.returncode == 0 and "no usable encoder" in missing.stdout


@needs_model
def test_the_runtime_prints_no_delegate_line_unless_asked_to_be_verbose(tmp_path):
    clip = tmp_path / "tone.wav"
    t = np.arange(16000) / 16000
    write_wav(clip, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    quiet = kws("embed", clip)
    assert quiet.returncode == 0, quiet.stderr
    assert DELEGATE_LINE not in quiet.stderr and DELEGATE_LINE not in quiet.stdout
    verbose = kws("-v", "embed", clip)
    assert DELEGATE_LINE not in verbose.stderr and "TFLite runtime:" in verbose.stderr


def test_trainer_scripts_run_here_and_name_the_extra_where_it_is_missing(monkeypatch, capsys):
    assert entry.missing_trainer_modules() == []  # this venv has the trainer extra
    help_text = subprocess.run(
        [sys.executable, "-c", "from trainer.entry import eval_main; eval_main()", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_text.returncode == 0 and "kws-eval" in help_text.stdout, help_text.stderr
    monkeypatch.setattr(entry, "TRAINER_MODULES", ("numpy", "no_such_trainer_module"))
    with pytest.raises(SystemExit) as raised:
        entry.train_main()
    assert raised.value.code == 1
    err = capsys.readouterr().err
    assert "kws-train: error: needs the trainer extra (missing: no_such_trainer_module)" in err
    assert entry.INSTALL_HINT in err
