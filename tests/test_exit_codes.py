"""One exit-status table (``kws --help``: 0 ok, 1 runtime failure, 2 bad input) that every command follows,
``kws serve`` included, and a ``--store`` that is a regular file is bad input for every store command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from device import cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")


@pytest.fixture(autouse=True)
def _no_config(monkeypatch):
    monkeypatch.setenv("KWS_CONFIG", "/nonexistent/kws-config.toml")


def test_the_table_is_in_kws_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for line in ("0    success", "1    runtime failure", "2    bad input", "130  a one-shot command interrupted"):
        assert line in text, text


@pytest.mark.parametrize("command", [["list"], ["remove", "x"], ["detect", "x.wav"], ["enroll", "word", "a.wav"]])
def test_a_store_that_is_a_file_is_bad_input(tmp_path, capsys, command):
    store = tmp_path / "store"
    store.write_text("not a folder")
    assert cli.main(["--store", str(store), "--model", str(MODEL), *command]) == 2
    assert f"the keyword store {store} is a file, not a folder" in capsys.readouterr().err


def test_serve_bad_uri_and_limits_are_bad_input(tmp_path):
    pytest.importorskip("wyoming")
    base = ["--store", str(tmp_path), "--model", str(MODEL), "serve"]
    assert cli.main([*base, "--uri", "http://127.0.0.1:1"]) == 2
    assert cli.main([*base, "--uri", "stdio://"]) == 2
    assert cli.main([*base, "--uri", "tcp://127.0.0.1:1", "--idle-timeout", "0"]) == 2
    assert cli.main([*base, "--uri", "tcp://127.0.0.1:1", "--max-connections", "0"]) == 2


def test_serve_without_a_model_is_a_runtime_failure(tmp_path):
    pytest.importorskip("wyoming")
    argv = ["--store", str(tmp_path), "--model", str(tmp_path / "none.tflite"), "serve", "--uri", "tcp://127.0.0.1:1"]
    assert cli.main(argv) == 1


@needs_model
def test_serve_on_a_taken_port_is_a_runtime_failure(tmp_path):
    pytest.importorskip("wyoming")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--store", str(tmp_path), "--model", str(MODEL), "serve", "--uri", f"tcp://127.0.0.1:{port}"]
        assert cli.main(argv) == 1


@needs_model
@pytest.mark.parametrize(
    "program",
    [["-m", "device.cli", "--store", "{store}", "serve"], ["-m", "device.wyoming_server", "--store", "{store}"]],
)
def test_serve_with_a_store_that_is_a_file_exits_2_instead_of_serving_nothing(tmp_path, program):
    pytest.importorskip("wyoming")
    store = tmp_path / "store"
    store.write_text("not a folder")
    argv = [sys.executable, *(a.format(store=store) for a in program), "--model", str(MODEL)]
    with socket.socket() as probe:  # a free port: the old server would bind it and serve an empty store
        probe.bind(("127.0.0.1", 0))
        argv += ["--uri", f"tcp://127.0.0.1:{probe.getsockname()[1]}"]
    env = dict(os.environ, KWS_CONFIG="/nonexistent/kws-config.toml")
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "is a file, not a folder" in done.stderr


def test_kws_serve_limits_default_as_the_server_does(capsys):
    pytest.importorskip("wyoming")
    from device import wyoming_server

    args = cli.build_parser().parse_args(["serve"])
    assert (args.idle_timeout, args.max_connections) == (
        wyoming_server.DEFAULT_IDLE_TIMEOUT,
        wyoming_server.DEFAULT_MAX_CONNECTIONS,
    )
