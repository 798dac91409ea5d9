"""`kws set --sensitivity`, `--sensitivity` on a run, `kws detect --scores/--plot`, `kws listen --debug`
and the config file's `[detector] sensitivity`, end to end through the command (issue #25)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import test_cli
import test_listen
from test_cli import ROOT, assert_clean_error, json_lines, kws

from device.settings import load_settings
from device.store import KeywordStore

# The fixtures of the CLI and daemon tests: the same stores and recordings, made once per module.
enrolled, conversation = test_cli.enrolled, test_cli.conversation
store, keyword_wav = test_listen.store, test_listen.keyword_wav


def assert_argument_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """argparse's refusal of an option value: exit 2, the option and the value named, no traceback."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: argument --sensitivity" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def tsv(text: str) -> tuple[list[list[str]], list[list[str]]]:
    """--scores output as (score rows after the header, '# detected' rows)."""
    lines = text.splitlines()
    assert lines[0] == "time_s\tkeyword\tscore\tthreshold"
    rows = [line.split("\t") for line in lines[1:] if not line.startswith("#")]
    detected = [line.split("\t")[1:] for line in lines[1:] if line.startswith("# detected\t")]
    return rows, detected


def test_scores_tsv_has_every_hop_and_keyword_and_the_same_detections(enrolled, conversation):
    path, _ = conversation
    plain = kws("--store", enrolled, "detect", path)
    result = kws("--store", enrolled, "detect", path, "--scores")
    assert result.returncode == 0, result.stderr
    rows, detected = tsv(result.stdout)
    assert detected == [line.split("\t") for line in plain.stdout.splitlines()] and detected
    keywords = KeywordStore(enrolled).keywords
    assert {r[1] for r in rows} == set(keywords)
    times = sorted({float(r[0]) for r in rows})
    assert len(rows) == len(times) * len(keywords)  # every hop, every keyword
    for _, name, score, threshold in rows:
        assert -1.0 <= float(score) <= 1.0
        assert float(threshold) == pytest.approx(keywords[name].threshold, abs=1e-4)  # 0.5: as calibrated
    for _, name, peak in detected:  # each detection's score is one of its keyword's hop scores over the threshold
        over = [float(r[2]) for r in rows if r[1] == name and float(r[2]) >= float(r[3])]
        assert any(abs(score - float(peak)) <= 6e-4 for score in over), (name, peak)


def test_scores_json_lines_parse(enrolled, conversation):
    path, _ = conversation
    events = json_lines(kws("--store", enrolled, "detect", path, "--json").stdout)
    lines = json_lines(kws("--store", enrolled, "detect", path, "--scores", "--json").stdout)
    scores = [x for x in lines if x["event"] == "score"]
    assert scores and all(set(x) == {"event", "time_s", "keyword", "score", "threshold"} for x in scores)
    assert [{k: v for k, v in x.items() if k != "event"} for x in lines if x["event"] == "detection"] == events


def test_sensitivity_override_lowers_every_threshold_and_detects_at_least_as_much(enrolled, conversation):
    path, _ = conversation
    thresholds, counts = {}, {}
    for sensitivity in ("0.2", "0.5", "0.9"):
        lines = json_lines(
            kws("--store", enrolled, "detect", path, "--scores", "--json", "--sensitivity", sensitivity).stdout
        )
        thresholds[sensitivity] = {x["keyword"]: x["threshold"] for x in lines if x["event"] == "score"}
        counts[sensitivity] = sum(x["event"] == "detection" for x in lines)
    for name in thresholds["0.5"]:
        assert thresholds["0.2"][name] > thresholds["0.5"][name] > thresholds["0.9"][name]
    assert counts["0.2"] <= counts["0.5"] <= counts["0.9"]
    assert_argument_error(kws("--store", enrolled, "detect", path, "--sensitivity", "1.5"), "'1.5'", "between 0 and 1")


def test_kws_set_stores_the_sensitivity_and_a_run_overrides_it(enrolled, conversation, tmp_path):
    path, _ = conversation
    folder = tmp_path / "store"
    shutil.copytree(enrolled, folder)
    result = kws("--store", folder, "set", "hey toaster", "--sensitivity", "0.9")
    assert result.returncode == 0, result.stderr
    assert "'hey toaster': sensitivity 0.9 (its own)" in result.stdout
    assert KeywordStore(folder).keywords["hey toaster"].sensitivity == 0.9
    listed = {x["name"]: x["sensitivity"] for x in json_lines(kws("--store", folder, "list", "--json").stdout)}
    assert listed == {"hey toaster": 0.9, "open sesame": None}

    def thresholds(*extra: str) -> dict[str, float]:
        lines = json_lines(kws("--store", folder, "detect", path, "--scores", "--json", *extra).stdout)
        return {x["keyword"]: x["threshold"] for x in lines if x["event"] == "score"}

    stored, forced, calibrated = thresholds(), thresholds("--sensitivity", "0.9"), thresholds("--sensitivity", "0.5")
    keywords = KeywordStore(enrolled).keywords
    assert stored["hey toaster"] == forced["hey toaster"] < keywords["hey toaster"].threshold
    assert stored["open sesame"] == pytest.approx(keywords["open sesame"].threshold)  # the default, 0.5
    assert calibrated["hey toaster"] == pytest.approx(keywords["hey toaster"].threshold)
    assert kws("--store", folder, "set", "hey toaster", "--sensitivity", "default").returncode == 0
    assert KeywordStore(folder).keywords["hey toaster"].sensitivity is None
    assert_clean_error(kws("--store", folder, "set", "no such word", "--sensitivity", "0.5"), 2, "no keyword named")
    assert_argument_error(kws("--store", folder, "set", "hey toaster", "--sensitivity", "x"), "'x'", "between 0 and 1")


def test_plot_writes_a_png(enrolled, conversation, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'fewshot-kws[plot]'")
    path, _ = conversation
    out = tmp_path / "scores.png"
    result = kws("--store", enrolled, "detect", path, "--plot", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert len(result.stdout.splitlines()) >= 2  # the detections are still printed


def test_plot_without_matplotlib_says_how_to_install_it(enrolled, conversation, tmp_path):
    path, _ = conversation
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    result = kws(
        "--store", enrolled, "detect", path, "--plot", tmp_path / "x.png", env={"PYTHONPATH": str(shadow.parent)}
    )
    assert_clean_error(result, 1, "matplotlib", "fewshot-kws[plot]")
    assert not (tmp_path / "x.png").exists()


def test_listen_debug_prints_live_scores_near_the_threshold(store, keyword_wav):
    env = {"KWS_FAKE_INPUT": str(keyword_wav), "KWS_FAKE_INPUT_SPEED": "4", "KWS_MODEL": str(test_cli.MODEL)}
    full_env = dict(os.environ) | env | {"KWS_CONFIG": "/nonexistent/kws-config.toml"}
    process = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "--store", str(store), "listen", "--json", "--debug"],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        event = json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert event["keyword"] == "hey toaster"
    debug = [line for line in err.splitlines() if line.startswith("debug  ")]
    assert any("'hey toaster'" in line and "PASS" in line for line in debug), err
    for line in debug:  # only near misses and passes: score within 0.2 of the threshold
        score, threshold = float(line.split("score ")[1].split()[0]), float(line.split("threshold ")[1].split()[0])
        assert score >= threshold - 0.2


def test_config_sensitivity_and_the_retired_threshold_offset(tmp_path, caplog):
    config = tmp_path / "config.toml"
    config.write_text("[detector]\nsensitivity = 0.7\n")
    assert load_settings(config).detector.sensitivity == 0.7
    config.write_text("[detector]\nthreshold_offset = -0.06\n")  # an old config file keeps loading
    with caplog.at_level("WARNING"):
        assert load_settings(config).detector.sensitivity == 0.7
    assert "threshold_offset is retired" in caplog.text and "sensitivity = 0.70" in caplog.text
    for bad in ("sensitivity = 1.5", "sensitivity = true", "sensitivity_override = 0.5"):
        config.write_text(f"[detector]\n{bad}\n")
        with pytest.raises(SystemExit) as raised:
            load_settings(config)
        assert "config file" in str(raised.value.code)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[detector]\nthreshold_offset = "0.08"\n', "threshold_offset is '0.08', not a number"),
        ("[detector]\nsmoothing_hops = 0\n", "smoothing_hops is 0: a whole number of hops from 1 to 50"),
        ("[detector]\nsmoothing_hops = 2.5\n", "smoothing_hops is 2.5"),
        ("[detector]\nhop_seconds = -1\n", "hop_seconds is -1: a number of seconds between encoder runs"),
        ("[detector]\nrefractory_seconds = 'long'\n", "refractory_seconds is 'long'"),
        ("[detector]\ngate_db = 6\n", "gate_db is 6: a number of dBFS from -120 to 0"),
        ("[detector]\nbest_only = 1\n", "best_only is 1: true or false"),
        ("[listen]\ndevise = 2\n", "unknown settings listen.devise (known: store"),
        ("[listen]\ndevice = 2.5\n", "listen.device is 2.5, not an input device index or name part"),
        ("[listen]\non_detect = ['aplay', 'x.wav']\n", "listen.on_detect is ['aplay', 'x.wav'], not a shell command"),
        ("listen = 'default'\n", "listen must be a table"),
        ("keep_takes = 'no'\n", "keep_takes is 'no', not true or false"),
        ("store = 7\n", "store is 7, not a folder path"),
    ],
)
def test_a_config_value_that_would_misbehave_is_refused_naming_the_setting(tmp_path, text, message):
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(SystemExit) as raised:
        load_settings(config)
    assert str(raised.value.code).startswith(f"config file {config}: ") and message in str(raised.value.code)


def test_a_config_that_sets_every_setting_within_range_loads(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        "keep_takes = false\n[detector]\nhop_seconds = 0.05\nsmoothing_hops = 3\nrefractory_seconds = 2\n"
        "gate_db = -70\nmax_hold_seconds = 0.4\nbest_only = false\n[listen]\ndevice = 2\non_detect = 'true'\n"
    )
    settings = load_settings(config)
    assert (settings.keep_takes, settings.detector.hop_seconds, settings.detector.smoothing_hops) == (False, 0.05, 3)
    assert settings.listen == {"device": 2, "on_detect": "true"} and not settings.detector.best_only


def test_help_shows_sensitivity_scores_and_plot_examples():
    for command, fragments in {
        "detect": ("--scores", "--plot", "--sensitivity 0.7", "0.3 raises"),
        "listen": ("--debug", "--sensitivity"),
        "serve": ("--sensitivity",),
        "set": ('kws set "hey toaster" --sensitivity 0.7',),
    }.items():
        text = kws(command, "--help").stdout
        for fragment in fragments:
            assert fragment in text, (command, fragment)
    assert "kws set" in kws("--help").stdout


def test_sensitivity_reaches_the_server_and_the_daemon(monkeypatch, tmp_path):
    """``kws serve/listen --sensitivity S`` hand detector settings with S as the override for every keyword."""
    import types

    import device.listen
    from device import cli

    calls = []
    module = types.ModuleType("device.wyoming_server")
    module.serve = lambda uri, store, model, settings, *rest, **limits: calls.append(settings) or 0
    monkeypatch.setitem(sys.modules, "device.wyoming_server", module)
    monkeypatch.setattr(
        device.listen, "listen", lambda store, model, settings, options, out: calls.append(settings) or 0
    )
    assert cli.main(["--store", str(tmp_path), "serve", "--sensitivity", "0.8"]) == 0
    assert cli.main(["--store", str(tmp_path), "listen", "--sensitivity", "0.3", "--debug"]) == 0
    assert cli.main(["--store", str(tmp_path), "serve"]) == 0
    assert [s.sensitivity_override for s in calls] == [0.8, 0.3, None]
