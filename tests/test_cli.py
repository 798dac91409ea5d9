"""The ``kws`` command end to end: enroll from synthetic takes, detect in a stream, the store's safety nets.

Speech comes from espeak-ng so these tests run anywhere CI installs it: keywords
are enrolled from one voice (en-us, male, at several pitches and speeds) and
detected in another (en-us+f3, a female voice) saying them between other words
and noise.
They use the shipped model, ``firmware_models/encoder.tflite`` (``$KWS_TEST_MODEL``
overrides it for development), and skip with the reason when it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spoken import say

from device.audio import read_wav, write_wav
from device.store import BACKUP_FILE, STORE_FILE, KeywordStore
from device.vad import speech_bounds

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")
SHARED = Path(os.environ.get("KWS_SHARED") or Path(__file__).resolve().parents[2] / "shared")
RATE = 16000

needs_model = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not on PATH (apt install)")

# Enrollment voice: one speaker, natural variation in pitch and speed. Test voice: another speaker (female).
ENROLL_VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
OTHER_VOICE = ("en-us+f3", 50, 160)


# -- audio helpers ---------------------------------------------------------------------------------------


def noise(seconds: float, rms: float = 0.003, seed: int = 0, colour: str = "pink") -> np.ndarray:
    """Coloured Gaussian noise (white, pink or brown) at ``rms``."""
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
    spectrum *= {"white": 1.0, "pink": 1 / np.sqrt(f), "brown": 1 / f}[colour]
    x = np.fft.irfft(spectrum, n)
    return (x * rms / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def compose(parts: list[tuple[str, np.ndarray]], floor_rms: float = 0.002) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Concatenate labelled parts over a noise floor; return the audio and where each label's speech ends."""
    audio = np.concatenate([p for _, p in parts])
    audio = audio + noise(len(audio) / RATE, floor_rms, seed=7)
    ends: dict[str, list[float]] = {}
    start = 0
    for label, part in parts:
        bounds = speech_bounds(part, RATE)
        if label and bounds:
            ends.setdefault(label, []).append((start + bounds[1]) / RATE)
        start += len(part)
    return audio.astype(np.float32), ends


def write_takes(folder: Path, text: str, voices=ENROLL_VOICES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (voice, pitch, speed) in enumerate(voices):
        path = folder / f"{text.replace(' ', '_')}_{i}.wav"
        write_wav(path, say(text, voice, pitch, speed), RATE)
        paths.append(path)
    return paths


# -- running the command ---------------------------------------------------------------------------------


def kws(*args: str | Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m device.cli`` as a user would, with the test model and no user config."""
    full_env = dict(os.environ)
    full_env.pop("KWS_FAKE_INPUT", None)
    full_env.update({"KWS_MODEL": str(MODEL), "KWS_CONFIG": "/nonexistent/kws-config.toml"})
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *map(str, args)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_clean_error(result: subprocess.CompletedProcess, status: int, *fragments: str) -> None:
    """One ``kws: error:`` line (plus indented details), the right status, never a traceback."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "kws: error:" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


# -- fixtures: one store with two keywords, enrolled once per module ---------------------------------------


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory) -> Path:
    """A store with 'hey toaster' and 'open sesame' enrolled through `kws enroll` from wav takes."""
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} absent (export a model: `make export`)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (apt install espeak-ng)")
    base = tmp_path_factory.mktemp("enrolled")
    store = base / "store"
    for word in ("hey toaster", "open sesame"):
        result = kws("--store", store, "enroll", word, *write_takes(base / "takes", word))
        assert result.returncode == 0, result.stderr
        assert f"enrolled {word!r}: 5 takes" in result.stdout
    return store


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> tuple[Path, dict[str, list[float]]]:
    """Another voice saying both keywords between other words and noise bursts."""
    voice = OTHER_VOICE
    audio, ends = compose(
        [
            ("", noise(1.0, 0.002, seed=1)),
            ("", say("good morning everyone", *voice)),
            ("", noise(1.0, 0.01, seed=2, colour="brown")),
            ("hey toaster", say("hey toaster", *voice)),
            ("", noise(1.5, 0.002, seed=3)),
            ("", say("I would like a cup of tea", *voice)),
            ("", noise(1.0, 0.002, seed=4)),
            ("open sesame", say("open sesame", *voice)),
            ("", noise(1.5, 0.002, seed=5)),
            ("", say("where are my keys", *voice)),
            ("", noise(1.0, 0.002, seed=6)),
        ]
    )
    path = tmp_path_factory.mktemp("conversation") / "conversation.wav"
    write_wav(path, audio, RATE)
    return path, ends


# -- help ------------------------------------------------------------------------------------------------


def test_every_command_has_a_help_that_teaches(capsys):
    from device.cli import main

    top = kws("--help")  # also: `python -m device.cli` works
    assert top.returncode == 0
    commands = ["enroll", "detect", "listen", "list", "remove", "reembed", "devices", "embed", "serve"]
    for command in commands:
        assert command in top.stdout
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"kws {command}" in text, command
    assert kws().returncode == 2  # no command: usage on stderr


# -- detection ---------------------------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_keyword_said_by_another_voice_is_detected_near_its_time(enrolled, conversation):
    path, ends = conversation
    result = kws("--store", enrolled, "detect", path, "--json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    for event in events:
        assert set(event) == {"keyword", "time_s", "score"}
        assert isinstance(event["keyword"], str) and isinstance(event["time_s"], float)
    toaster = [e for e in events if e["keyword"] == "hey toaster"]
    assert len(toaster) == 1, events
    assert abs(toaster[0]["time_s"] - ends["hey toaster"][0]) < 0.5, (toaster, ends)

    plain = kws("detect", path, "--store", enrolled)  # global options also after the command
    assert plain.returncode == 0
    rows = [line.split("\t") for line in plain.stdout.splitlines()]
    assert [(r[1], float(r[0])) for r in rows] == [(e["keyword"], round(e["time_s"], 2)) for e in events]


@needs_model
@needs_espeak
def test_two_keywords_fire_independently(enrolled, conversation):
    path, ends = conversation
    events = json_lines(kws("--store", enrolled, "detect", path, "--json").stdout)
    for word in ("hey toaster", "open sesame"):
        hits = [e for e in events if e["keyword"] == word]
        assert len(hits) == 1, (word, events)
        assert abs(hits[0]["time_s"] - ends[word][0]) < 0.5, (word, hits, ends)
    # Each fires only at its own word: nothing else in the conversation triggers either.
    assert len(events) == 2, events


@needs_model
@needs_espeak
def test_nothing_fires_on_a_minute_of_noise(enrolled, tmp_path):
    pieces = [
        noise(15, 0.02, seed=10, colour="pink"),
        noise(15, 0.05, seed=11, colour="brown"),
        noise(10, 0.01, seed=12, colour="white"),
        (0.05 * np.sin(2 * np.pi * 50 * np.arange(10 * RATE) / RATE)).astype(np.float32)
        + noise(10, 0.005, seed=13),  # mains hum
    ]
    real = sorted((SHARED / "data" / "background_noise").glob("*.wav")) if SHARED.is_dir() else []
    pieces += [read_wav(p, RATE)[: 2 * RATE] * 0.5 for p in real[:5]]  # a taste of real rooms when available
    audio = np.concatenate(pieces)
    audio = audio[: 60 * RATE] if len(audio) >= 60 * RATE else np.concatenate([audio, noise(60 - len(audio) / RATE)])
    path = tmp_path / "noise.wav"
    write_wav(path, np.clip(audio, -1, 1), RATE)
    result = kws("--store", enrolled, "detect", path, "--json")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == []


# -- the store through the command --------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_list_and_remove(enrolled, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(enrolled, store)
    sha = json.loads(MODEL.with_suffix(".json").read_text())["sha256"]
    listing = kws("--store", store, "list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["keyword", "takes", "threshold", "prototypes", "encoder"]
    assert any(line.startswith("hey toaster") and sha[:12] in line for line in lines)
    rows = {row["name"]: row for row in json_lines(kws("--store", store, "list", "--json").stdout)}
    assert set(rows) == {"hey toaster", "open sesame"}
    assert rows["hey toaster"]["takes"] == 5 and 0.3 <= rows["hey toaster"]["threshold"] <= 0.95
    assert rows["hey toaster"]["prototypes"] in (1, 2) and not rows["hey toaster"]["stale"]
    kept = store / KeywordStore(store).keywords["hey toaster"].takes_dir
    assert len(list(kept.glob("take_*.wav"))) == 5

    removed = kws("--store", store, "remove", "hey toaster")
    assert removed.returncode == 0 and "removed 'hey toaster'" in removed.stdout
    assert not kept.exists() and not (store / BACKUP_FILE).read_text().count("hey toaster")  # recordings gone
    assert [r["name"] for r in json_lines(kws("--store", store, "list", "--json").stdout)] == ["open sesame"]
    assert_clean_error(kws("--store", store, "remove", "hey toaster"), 2, "no keyword named 'hey toaster'")
    assert "no keywords in" in kws("--store", tmp_path / "empty", "list").stdout


@needs_model
@needs_espeak
def test_add_takes_to_an_existing_keyword(enrolled, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(enrolled, store)
    more = write_takes(tmp_path / "more", "hey toaster", [("en-us", 52, 155), ("en-us", 48, 170)])
    result = kws("--store", store, "enroll", "hey toaster", *more, "--add")
    assert result.returncode == 0, result.stderr
    assert "7 takes" in result.stdout
    assert len(list((store / KeywordStore(store).keywords["hey toaster"].takes_dir).glob("take_*.wav"))) == 7
    assert_clean_error(kws("--store", store, "enroll", "new word", *more, "--add"), 2, "enroll it first")


@needs_model
@needs_espeak
def test_what_the_user_set_survives_add_and_reembed_and_replace_starts_afresh(enrolled, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(enrolled, store)
    changed = kws("--store", store, "set", "hey toaster", "--sensitivity", "0.7", "--language", "EN-us")
    assert changed.returncode == 0 and "sensitivity 0.7 (its own)" in changed.stdout, changed.stderr
    assert "language en-US" in changed.stdout  # stored as BCP 47 is usually written
    refused = kws("--store", store, "set", "hey toaster", "--language", "english!")
    assert refused.returncode == 2 and "BCP 47" in refused.stderr and "Traceback" not in refused.stderr
    more = write_takes(tmp_path / "more", "hey toaster", [("en-us", 52, 155)])
    assert kws("--store", store, "enroll", "hey toaster", *more, "--add").returncode == 0
    assert kws("--store", store, "reembed").returncode == 0
    row = {r["name"]: r for r in json_lines(kws("--store", store, "list", "--json").stdout)}["hey toaster"]
    assert (row["takes"], row["sensitivity"], row["language"]) == (6, 0.7, "en-US")
    takes = write_takes(tmp_path / "again", "hey toaster", ENROLL_VOICES[:3])
    assert kws("--store", store, "enroll", "hey toaster", *takes, "--replace", "--language", "en").returncode == 0
    again = KeywordStore(store).keywords["hey toaster"]
    assert (again.takes, again.sensitivity, again.language) == (3, None, "en")
    assert kws("--store", store, "set", "hey toaster", "--language", "none").returncode == 0
    assert KeywordStore(store).keywords["hey toaster"].language is None


# -- embeddings ---------------------------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_embed_prints_unit_vectors_of_the_manifest_size(tmp_path):
    size = json.loads(MODEL.with_suffix(".json").read_text())["embedding_size"]
    takes = write_takes(tmp_path, "hey toaster", ENROLL_VOICES[:2])
    result = kws("embed", *takes, "--json")
    assert result.returncode == 0, result.stderr
    rows = json_lines(result.stdout)
    assert [r["file"] for r in rows] == [str(t) for t in takes]
    for row in rows:
        vector = np.asarray(row["embedding"])
        assert vector.shape == (size,)
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-4
    # The same computation as enrollment: enrollment_embedding on the file read at the model's rate.
    from device.encoder import Encoder
    from device.enroll import enrollment_embedding

    expected = enrollment_embedding(Encoder(MODEL), read_wav(takes[0], RATE))
    np.testing.assert_allclose(rows[0]["embedding"], expected, atol=1e-5)


# -- rejected takes and bad input ------------------------------------------------------------------------------


@needs_model
@needs_espeak
def test_bad_takes_are_rejected_each_with_its_own_reason(tmp_path):
    good = write_takes(tmp_path, "hey toaster", ENROLL_VOICES[:3])
    speech = say("hey toaster")
    bad = {
        "silent.wav": noise(1.5, 0.0001, seed=20),
        "clipped.wav": np.clip(speech * 40, -1, 1),
        "short.wav": np.concatenate([np.zeros(RATE // 2), noise(0.08, 0.2, seed=21), np.zeros(RATE // 2)]),
        "long.wav": say("this is a much longer sentence than any wake word should ever be", speed=150),
    }
    for name, audio in bad.items():
        write_wav(tmp_path / name, audio, RATE)
    store = tmp_path / "store"
    result = kws("--store", store, "enroll", "hey toaster", *good, *(tmp_path / n for n in bad))
    assert_clean_error(result, 2, "rejected takes")
    for name, reason in [("silent", "silent"), ("clipped", "clipped"), ("short", "too short"), ("long", "too long")]:
        line = next((ln for ln in result.stderr.splitlines() if f"{name}.wav" in ln), "")
        assert reason in line, (name, result.stderr)
    assert not (store / STORE_FILE).exists()  # nothing stored


@needs_model
@needs_espeak
def test_a_different_word_among_the_takes_is_named_as_the_outlier(tmp_path):
    takes = write_takes(tmp_path, "hey toaster", ENROLL_VOICES[:4])
    odd = tmp_path / "odd.wav"
    # A word of another shape: with the shipped model, multi-syllable words (banana, potato) still score
    # above enroll.OUTLIER_COSINE against 'hey toaster', so they would not be caught.
    write_wav(odd, say("ship", "en-us", 50, 160), RATE)
    result = kws("--store", tmp_path / "store", "enroll", "hey toaster", *takes, odd)
    assert_clean_error(result, 2, "odd.wav", "does not sound like the other takes")
    assert "hey_toaster_0.wav" not in result.stderr


@needs_model
def test_corrupt_or_missing_wav_is_a_clear_error(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    store = tmp_path / "store"
    assert_clean_error(kws("embed", garbage), 2, "garbage.wav")
    takes = [garbage, tmp_path / "missing.wav", garbage]
    assert_clean_error(kws("--store", store, "enroll", "word", *map(str, takes)), 2, "garbage.wav")
    assert_clean_error(kws("embed", tmp_path / "missing.wav"), 2, "missing.wav: no such file")
    KeywordStore(store).put(_fake_keyword("x", json.loads(MODEL.with_suffix(".json").read_text())["sha256"]))
    assert_clean_error(kws("--store", store, "detect", garbage), 2, "not a readable audio file")


def test_bad_names_options_and_config_are_usage_errors(tmp_path):
    assert_clean_error(kws("--store", tmp_path, "enroll", "../escape", "a.wav"), 2, "not allowed")
    assert_clean_error(kws("--store", tmp_path, "enroll", "word", "--takes", "50"), 2, "--takes")
    bad = tmp_path / "config.toml"
    bad.write_text("colour = 'blue'\n")
    assert_clean_error(kws("--config", bad, "list"), 2, "unknown settings colour")
    good = tmp_path / "good.toml"
    good.write_text(f"store = '{tmp_path / 'from-config'}'\n")
    assert str(tmp_path / "from-config") in kws("--config", good, "list").stdout


def test_missing_model_is_a_clear_error(tmp_path):
    result = kws("--model", tmp_path / "nothing.tflite", "--store", tmp_path, "detect", tmp_path / "x.wav")
    assert_clean_error(result, 1, "nothing.tflite")


def test_devices_lists_inputs_or_says_why_not():
    result = kws("devices")
    if result.returncode == 0:
        assert result.stdout.strip()
    else:
        assert_clean_error(result, 1)
        assert (
            "PortAudio" in result.stderr or "no audio input device" in result.stderr or "sounddevice" in result.stderr
        )


def test_serve_is_dispatched_to_the_wyoming_server(monkeypatch, tmp_path):
    """``kws serve`` hands its options to ``device.wyoming_server.serve`` (imported only when used)."""
    import types

    from device import cli

    calls = []
    module = types.ModuleType("device.wyoming_server")
    module.serve = lambda *args, **limits: calls.append((args, limits)) or 0
    monkeypatch.setitem(sys.modules, "device.wyoming_server", module)
    status = cli.main(
        ["--store", str(tmp_path), "--model", "m.tflite", "serve", "--uri", "tcp://127.0.0.1:1", "--zeroconf"]
        + ["--idle-timeout", "5", "--max-connections", "3"]
    )
    assert status == 0
    (uri, store, model, settings, zeroconf), limits = calls[0]
    assert (uri, store, model, zeroconf) == ("tcp://127.0.0.1:1", tmp_path, Path("m.tflite"), True)
    assert limits == {"idle_timeout": 5.0, "max_connections": 3}
    from device.detector import DetectorSettings

    assert isinstance(settings, DetectorSettings)


# -- store safety ----------------------------------------------------------------------------------------------


def _fake_keyword(name: str, sha: str = "0" * 64):
    from device.store import Keyword

    size = json.loads(MODEL.with_suffix(".json").read_text())["embedding_size"] if MODEL.is_file() else 8
    vector = np.zeros(size)
    vector[0] = 1.0
    return Keyword(name=name, prototypes=[vector.tolist()], threshold=0.9, encoder_sha256=sha, takes=3)


def test_a_crash_between_write_and_rename_leaves_the_old_version_loadable(tmp_path, monkeypatch):
    store = KeywordStore(tmp_path)
    store.put(_fake_keyword("first"))
    real_replace = os.replace

    def crash(src, dst):
        if Path(dst).name == STORE_FILE:
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.put(_fake_keyword("second"))
    monkeypatch.setattr(os, "replace", real_replace)
    reloaded = KeywordStore(tmp_path)
    assert reloaded.names == ["first"]
    assert not reloaded.recovered_from_backup
    assert [r["name"] for r in json_lines(kws("--store", tmp_path, "list", "--json").stdout)] == ["first"]


def test_a_half_written_store_falls_back_to_the_backup_loudly(tmp_path):
    store = KeywordStore(tmp_path)
    store.put(_fake_keyword("first"))
    store.put(_fake_keyword("second"))
    assert (tmp_path / BACKUP_FILE).exists()
    text = (tmp_path / STORE_FILE).read_text()
    (tmp_path / STORE_FILE).write_text(text[: len(text) // 2])  # the power went mid-write
    result = kws("--store", tmp_path, "list")
    assert result.returncode == 0, result.stderr
    assert "first" in result.stdout and "second" not in result.stdout  # the last good version
    assert "damaged" in result.stderr and BACKUP_FILE in result.stderr
    (tmp_path / BACKUP_FILE).write_text("{")
    assert_clean_error(kws("--store", tmp_path, "list"), 1, "unreadable", "enroll again")


@needs_model
def test_a_store_made_by_another_encoder_is_refused_with_a_re_enroll_message(tmp_path):
    KeywordStore(tmp_path).put(_fake_keyword("old word", sha="f" * 64))
    wav = tmp_path / "x.wav"
    write_wav(wav, noise(2.0), RATE)
    result = kws("--store", tmp_path, "detect", wav)
    assert_clean_error(result, 1, "old word", "re-enroll")
    assert "STALE" in kws("--store", tmp_path, "list").stdout
    assert_clean_error(kws("--store", tmp_path, "enroll", "old word", wav, wav, wav, "--add"), 2, "different encoder")
    reembed = kws("--store", tmp_path, "reembed")
    assert_clean_error(reembed, 1, "no kept takes for old word")


# -- the device never needs TensorFlow ----------------------------------------------------------------------------

NO_TF_SCRIPT = """
import sys
import device
from device.cli import main
from device.spotter import Spotter
takes = sys.argv[3:]
spotter = Spotter(sys.argv[1], sys.argv[2])
spotter.enroll("hey toaster", takes)
spotter.detect_file(takes[0])
import device.listen, device.microphone, device.fake_input
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras")))
print("LOADED", loaded)
sys.exit(1 if loaded else 0)
"""


@needs_model
@needs_espeak
def test_the_device_runtime_never_imports_tensorflow(tmp_path):
    takes = write_takes(tmp_path, "hey toaster", ENROLL_VOICES[:3])
    result = subprocess.run(
        [sys.executable, "-c", NO_TF_SCRIPT, str(tmp_path / "store"), str(MODEL), *map(str, takes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout
