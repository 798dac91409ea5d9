"""The systemd units in deploy/: what `make install-device` rewrites in them, and that their commands parse.

scripts/install_device.sh points each unit's ExecStart at the venv it made by replacing the
``%h/kws/.venv/bin/kws`` prefix; a unit whose ExecStart drifted from it would be installed
pointing at a venv that does not exist, so both units must start with it and be installed.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from device.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "%h/kws/.venv/bin/kws "
UNITS = sorted((ROOT / "deploy").glob("*.service"))


def _exec_start(unit: Path) -> str:
    (line,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


@pytest.mark.parametrize("unit", UNITS, ids=lambda path: path.name)
def test_each_unit_runs_kws_from_the_venv_prefix_the_installer_rewrites_with_options_that_parse(unit):
    command = _exec_start(unit)
    assert command.startswith(PREFIX), command
    args = build_parser().parse_args(shlex.split(command.removeprefix(PREFIX)))
    assert args.command in ("listen", "serve")


def test_the_device_installer_installs_every_unit():
    script = (ROOT / "scripts" / "install_device.sh").read_text()
    assert {unit.stem for unit in UNITS} == {"kws-listen", "kws-serve"}
    assert "for unit in kws-listen kws-serve; do" in script
    assert f"s|^ExecStart={PREFIX}|ExecStart=$VENV/bin/kws |" in script  # the rewrite the test above relies on
