"""The reserved evaluation words, which no training set of the shipped encoder may contain.

Figures measured on these words are figures on words the encoder never heard, so
the list is broad on purpose: the words, their plurals and common inflections,
homophones, and translations that appear in our multilingual data.
"""

from __future__ import annotations

import re

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_VARIANTS = {
    "yes": ("yeses", "yess", "yea", "yeah"),
    "no": ("know", "knows", "noes", "nos", "noh", "nope"),
    "up": ("ups",),
    "down": ("downs",),
    "left": ("lefts",),
    "right": ("rights", "write", "writes", "rite", "rites", "wright", "wrights"),
    "on": ("ons",),
    "off": ("offs",),
    "stop": ("stops", "stopped", "stopping"),
    "go": ("goes", "going", "gone", "goe", "gos"),
    "zero": ("zeros", "zeroes", "oh"),
    "one": ("ones", "won", "wan"),
    "two": ("twos", "to", "too"),
    "three": ("threes",),
    "four": ("fours", "for", "fore"),
    "five": ("fives",),
    "six": ("sixes",),
    "seven": ("sevens",),
    "eight": ("eights", "ate"),
    "nine": ("nines", "nein"),
}
# Translations present in our data sets (Arabic and Mandarin command words).
_TRANSLATIONS = ("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3", "shi4", "na3am", "la")

RESERVED_WORDS: frozenset[str] = frozenset(
    set(KEYWORDS) | set(DIGITS) | {v for vs in _VARIANTS.values() for v in vs} | set(_TRANSLATIONS)
)


def is_reserved(text: str) -> bool:
    """True when any token of ``text`` (a word or phrase; ``_`` or spaces between words) is reserved."""
    return any(token in RESERVED_WORDS for token in re.split(r"[\s_\-]+", text.lower()) if token)
