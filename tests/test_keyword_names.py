"""Keyword names: letters of any script (combining marks included) are accepted in NFC, and one rule,
``keyword_key``, decides when two names are the same, for enrollment and for the Wyoming server alike."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest
from spoken import say

from device.audio import write_wav
from device.enroll import EnrollmentError, check_distinct_name, check_keyword_name, check_language, keyword_key

ROOT = Path(__file__).resolve().parents[1]
MODEL = Path(os.environ.get("KWS_TEST_MODEL") or ROOT / "firmware_models" / "encoder.tflite")


@pytest.mark.parametrize(
    "name",
    [
        "नमस्ते",
        "สวัสดี",
        "café",
        "Cafe\u0301 Bar",
        "hey toaster",
        "O'Neil 2",
        "привет",
        "مرحبا",
        "こんにちは",
        "می\u200cخواهم",
    ],
)
def test_letters_and_marks_of_any_script_are_accepted_in_nfc(name):
    stored = check_keyword_name(name)
    assert stored == unicodedata.normalize("NFC", name).strip()
    assert check_keyword_name(stored) == stored  # what the store re-checks on load


@pytest.mark.parametrize(
    "name",
    [
        "",
        "  ",
        "../escape",
        "a/b",
        "a\\b",
        ".hidden",
        "a..b",
        "tab\there",
        "bell\x07",
        "_under",
        "\u0301accent",
        "x" * 65,
    ],
)
def test_separators_control_characters_dots_and_overlong_names_are_refused(name):
    with pytest.raises(EnrollmentError, match="not allowed"):
        check_keyword_name(name)


def test_a_name_too_long_in_bytes_is_refused():
    with pytest.raises(EnrollmentError, match="bytes"):
        check_keyword_name("\U00020000" * 60)  # 60 characters of 4 bytes each: over the 200-byte cap


def test_keyword_key_ignores_case_underscores_spacing_and_unicode_form():
    same = ["Hey Toaster", "hey_toaster", "HEY  TOASTER", " hey toaster ", "hey_Toaster"]
    assert {keyword_key(n) for n in same} == {"hey toaster"}
    assert keyword_key("Cafe\u0301") == keyword_key("CAFÉ") == "café"
    assert keyword_key("Straße") == keyword_key("STRASSE")
    assert keyword_key("hey toaster") != keyword_key("hey toasters")


def test_a_name_colliding_with_another_keyword_is_refused_naming_it():
    check_distinct_name("hey toaster", ["hey toaster", "lights on"])  # the same name: a re-enroll
    with pytest.raises(EnrollmentError, match="'Hey Toaster'"):
        check_distinct_name("hey_toaster", ["Hey Toaster", "lights on"])


def test_the_wyoming_server_matches_names_by_the_same_key():
    pytest.importorskip("wyoming")
    from device import wyoming_server

    assert wyoming_server.keyword_key is keyword_key


@pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL} absent (export a model: `make export`)")
def test_enroll_stores_nfc_and_refuses_a_colliding_name_before_recording(tmp_path, capsys):
    from device import cli

    takes = []
    for i, (pitch, speed) in enumerate([(40, 150), (50, 165), (60, 175)]):
        takes.append(tmp_path / f"take{i}.wav")
        write_wav(takes[-1], say("hey toaster", "en-us", pitch, speed), 16000)
    store = str(tmp_path / "store")
    base = ["--store", store, "--model", str(MODEL)]
    assert cli.main([*base, "enroll", "Cafe\u0301 Bar", *map(str, takes)]) == 0
    capsys.readouterr()
    assert cli.main([*base, "list", "--json"]) == 0
    assert [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()] == ["Café Bar"]
    # Only case and "_" differ: refused with exit 2, naming the enrolled keyword (no takes needed to see that).
    assert cli.main([*base, "enroll", "CAFÉ_BAR"]) == 2
    assert "too close to the enrolled 'Café Bar'" in capsys.readouterr().err
    assert cli.main([*base, "remove", "Cafe\u0301 Bar"]) == 0  # typed decomposed, found as stored


@pytest.mark.parametrize(
    ("tag", "stored"),
    [("en", "en"), ("EN-us", "en-US"), ("pt-br", "pt-BR"), ("zh-hans-cn", "zh-Hans-CN"), (" fil ", "fil")],
)
def test_language_tags_are_stored_as_bcp47_writes_them(tag, stored):
    assert check_language(tag) == stored
    assert check_language(stored) == stored  # what the store re-checks on load


@pytest.mark.parametrize("tag", ["", "english!", "e", "en_US", "en-", "toolonglanguage", "en-US-x-y-z-w", 7])
def test_what_is_not_a_language_tag_is_refused_with_an_example(tag):
    with pytest.raises(EnrollmentError, match="BCP 47 tag such as 'en'"):
        check_language(tag)
