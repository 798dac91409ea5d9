"""Issue #23 item 3: the user's own ordinary speech (``kws enroll ... --speech FILE``) as their keyword's negative.

The enrolling voice says "hey jasper" for the takes, and then talks: sentences that hold
its look-alike "hey casper" (the same voice saying something else, the hardest negative a
personal wake word meets). Given as --speech, that talk must stop firing the keyword while
the keyword itself, said by another voice, still fires.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spoken import say
from test_cli import MODEL, RATE, assert_clean_error, json_lines, kws, needs_espeak, needs_model
from test_not_this import ENROLL_VOICES, quiet, spoken_clip

from device.audio import read_wav, write_wav
from device.enroll import EnrollmentError
from device.false_alarms import MAX_SPEECH_SECONDS, NOT_MARGIN, SPEECH_LABEL
from device.store import KeywordStore

MY_VOICE = ENROLL_VOICES[0]
MY_SENTENCES = (
    "so I told him hey casper, the dog is out again",
    "we had pasta for dinner and then watched a film",
    "hey casper, can you bring the blue chair inside",
)


def my_talk() -> np.ndarray:
    """About 10 s of the enrolling voice talking (its look-alike phrase included), with pauses."""
    pieces = []
    for i, sentence in enumerate(MY_SENTENCES):
        pieces += [quiet(0.4, seed=10 + i), say(sentence, *MY_VOICE)]
    return np.concatenate([*pieces, quiet(0.5, seed=20)])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} absent (export a model: `make export`)")
    folder = tmp_path_factory.mktemp("own-speech")
    takes = []
    for i, voice in enumerate(ENROLL_VOICES[:4]):
        takes.append(folder / f"take{i}.wav")
        write_wav(takes[-1], say("hey jasper", *voice), RATE)
    talk = my_talk()
    out = {"takes": takes, "speech": folder / "me.wav", "jasper": folder / "jasper.wav", "short": folder / "short.wav"}
    write_wav(out["speech"], talk, RATE)
    write_wav(out["jasper"], spoken_clip("hey jasper"), RATE)
    write_wav(out["short"], talk[: 3 * RATE], RATE)
    return out


@needs_model
@needs_espeak
def test_own_speech_raises_the_threshold_above_it_and_the_keyword_still_fires(files, tmp_path):
    plain_store, store = tmp_path / "plain", tmp_path / "mine"
    assert kws("--store", plain_store, "enroll", "hey jasper", *files["takes"]).returncode == 0
    plain = KeywordStore(plain_store).keywords["hey jasper"]
    fired = json_lines(kws("--store", plain_store, "detect", files["speech"], "--json").stdout)
    assert fired, "the look-alike in the user's own talk should fire the plain keyword (else this test shows nothing)"

    result = kws("--store", store, "enroll", "hey jasper", *files["takes"], "--speech", files["speech"])
    assert result.returncode == 0, result.stderr
    mine = KeywordStore(store).keywords["hey jasper"]
    label, value = mine.stats["not_labels"][0], mine.stats["not_scores"][0]
    assert label == f"{SPEECH_LABEL}: {files['speech']}" and f"not {label}: scores {value:.3f}" in result.stdout
    assert value >= max(e["score"] for e in fired) - 0.02  # its best hop: what the detector saw
    cap = min(mine.stats["take_scores_loo"]) - 0.02
    assert mine.threshold == pytest.approx(max(plain.threshold, min(value + NOT_MARGIN, cap)), abs=1e-3)
    assert mine.threshold > plain.threshold
    if value + NOT_MARGIN <= cap:  # not capped under the takes: the user's own talk no longer fires it
        assert json_lines(kws("--store", store, "detect", files["speech"], "--json").stdout) == []
    real = json_lines(kws("--store", store, "detect", files["jasper"], "--json").stdout)
    assert [e["keyword"] for e in real] == ["hey jasper"]

    # The whole recording is kept (not only the window around its best hop), so reembed and --add
    # can find another strongest window; --add scores it again and keeps it whole.
    kept = store / mine.takes_dir / "not_00.wav"
    assert len(read_wav(kept)) == len(read_wav(files["speech"]))
    added = kws("--store", store, "enroll", "hey jasper", files["takes"][0], "--add")
    assert added.returncode == 0, added.stderr
    after = KeywordStore(store).keywords["hey jasper"]
    assert after.stats["not_labels"] == [label] and after.threshold > after.stats["calibrated_threshold"]
    assert len(read_wav(store / after.takes_dir / "not_00.wav")) == len(read_wav(files["speech"]))


@needs_model
@needs_espeak
def test_set_speech_on_an_enrolled_keyword_and_too_little_speech_is_refused(files, tmp_path):
    store = tmp_path / "store"
    assert kws("--store", store, "enroll", "hey jasper", *files["takes"]).returncode == 0
    before = KeywordStore(store).keywords["hey jasper"].threshold
    short = kws("--store", store, "enroll", "hey jasper", *files["takes"], "--replace", "--speech", files["short"])
    assert_clean_error(short, 2, "short.wav", "at least 5 s")
    assert KeywordStore(store).keywords["hey jasper"].threshold == before  # nothing was stored

    result = kws("--store", store, "set", "hey jasper", "--speech", files["speech"])
    assert result.returncode == 0, result.stderr
    assert f"threshold {before:.3f} -> " in result.stdout
    assert KeywordStore(store).keywords["hey jasper"].threshold > before
    assert_clean_error(kws("--store", store, "set", "hey jasper", "--speech", tmp_path / "gone.wav"), 2, "gone.wav")


@needs_model
@needs_espeak
def test_speech_as_an_array_is_capped_at_a_minute_and_must_be_long_enough(files, tmp_path):
    from device.spotter import Spotter

    spotter = Spotter(tmp_path / "store", MODEL)
    talk = read_wav(files["speech"])
    long = np.tile(talk, int(np.ceil(70 * RATE / len(talk))))
    keyword = spotter.enroll("hey jasper", files["takes"], speech=[long])
    kept = Path(spotter.store.folder) / keyword.takes_dir / "not_00.wav"
    assert len(read_wav(kept)) == round(MAX_SPEECH_SECONDS * RATE)
    assert keyword.stats["not_labels"] == [f"{SPEECH_LABEL}: recording 1"]
    with pytest.raises(EnrollmentError, match="at least 5 s"):
        spotter.teach_not("hey jasper", [], speech=[talk[: 2 * RATE]])


@needs_model
@needs_espeak
def test_speech_is_recorded_from_the_microphone_right_after_the_takes(tmp_path):
    parts = [quiet(0.8, 30)]
    for i, voice in enumerate(ENROLL_VOICES):
        parts += [say("hey jasper", *voice), quiet(1.2, 40 + i)]
    talk = my_talk()
    parts += [talk, quiet(4.0, 50)]
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.concatenate(parts), RATE)
    env = {"KWS_FAKE_INPUT": str(mic), "KWS_FAKE_INPUT_SPEED": "10"}
    result = kws("--store", tmp_path / "store", "enroll", "hey jasper", "--speech", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "enrolled 'hey jasper': 5 takes" in result.stdout and "Now talk for about 10 s" in result.stderr
    recorded = float(result.stderr.split("  recorded ")[1].split(" s")[0])
    assert len(talk) / RATE - 1.0 <= recorded <= len(talk) / RATE + 1.0  # the talk, not the takes
    keyword = KeywordStore(tmp_path / "store").keywords["hey jasper"]
    assert keyword.stats["not_labels"] == [f"{SPEECH_LABEL}: recording 1"]
    assert keyword.threshold > keyword.stats["calibrated_threshold"]
