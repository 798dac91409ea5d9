"""The reserved evaluation words, which no training set of the shipped encoder may contain.

Figures measured on these words are figures on words the encoder never heard, so
the list is broad on purpose: the words, their plurals and inflections, homophones
and near forms a voice could make sound like one, and the translations present in
our multilingual data. The synthetic generator refuses to speak them and the
trainer asserts that none reaches a training set.
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------------------------------

#: The Speech Commands keywords the evaluation measures few-shot accuracy on.
EVALUATION_KEYWORDS: tuple[str, ...] = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip

# Plurals, inflections, homophones and near forms a TTS voice would make sound like a keyword.
_KEYWORD_NEIGHBOURS: tuple[str, ...] = (
    "yeses", "yesses", "yeah", "yea", "yeas", "yep", "yup",
    "nos", "noes", "know", "knows", "known", "noh", "noe", "nose", "nope", "nah",
    "ups", "upped", "upping",
    "downs", "downed", "downing",
    "lefts", "lefty", "lefties",
    "rights", "righted", "righting", "write", "writes", "rite", "rites", "wright", "wrights", "writ",
    "ons", "offs", "of",
    "stops", "stopped", "stopping", "stopper",
    "goes", "gos", "going", "gone", "goer", "goers",
    "zeros", "zeroes", "zeroed", "oh", "ohs", "owe", "owes",
    "ones", "won", "wan",
    "twos", "to", "too", "tu", "tutu",
    "threes", "thee",
    "fours", "for", "fore", "fores", "forte",
    "fives", "fife",
    "sixes", "sics", "sicks",
    "sevens",
    "eights", "ate", "ait", "eighth",
    "nines", "nein", "ninth",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fourty", "fifty", "sixty", "seventy", "eighty", "ninety",
)  # fmt: skip

# Translations of the keywords and digits in our data sets (Arabic and Mandarin romanised).
_TRANSLATIONS: tuple[str, ...] = (
    "ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3", "shi4", "na3am", "la",
)  # fmt: skip

#: Every reserved token (lowercase).
RESERVED_WORDS: frozenset[str] = frozenset(EVALUATION_KEYWORDS + _KEYWORD_NEIGHBOURS + _TRANSLATIONS)

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lowercase alphabetic tokens of a word or phrase; ``_``, ``-`` and spaces all separate."""
    return _TOKEN.findall(text.lower().replace("'", ""))


def is_reserved(text: str) -> bool:
    """True if ANY token of ``text`` (a word, ``"hey go"`` or ``"hey_go"``) is a reserved word."""
    return any(token in RESERVED_WORDS for token in tokens(text))
