"""Few-shot enrollment: a handful of takes become a prototype head, no gradient steps.

Each take is checked before it can spoil the prototype (silent, clipped, too
short, too long, or unlike the other takes), embedded as the detector will see
the word (clean and under generated noise, averaged), and averaged into a unit
prototype. When the takes spread
into two groups (two pronunciations, two rooms) a second sub-prototype keeps
both. The decision threshold is calibrated per keyword from how non-keyword speech
and noise (the model's negative bank) score against the prototype: just under
the other words that come closest to it.
"""

from __future__ import annotations

import logging
import re
import shutil
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.encoder import Encoder
from device.manifest import ModelError, sha256_of
from device.noise import coloured_noise
from device.sensitivity import negative_tail
from device.store import Keyword
from device.vad import frame_energy_db, remove_dc, speech_bounds

log = logging.getLogger(__name__)

MIN_TAKES, MAX_TAKES = 3, 10
SILENT_DB = -50.0  # loudest 10 ms frame below this: nothing was said
CLIPPED_FRACTION = 0.01  # more than 1 % of speech samples at full scale
MIN_SPEECH_SECONDS = 0.15
OUTLIER_COSINE = 0.45  # a take this far from the others' mean is not the same word
SPLIT_COSINE = 0.6  # below this, two sub-prototypes describe the takes better than one
# Threshold: just under the mean score of the negative bank's CLOSEST_NEGATIVES windows nearest the
# prototype, the other words that sound most like the keyword. Measured on the evaluation's three seeded
# personal streams with the session-3 encoder (BENCHMARKS.md, "Calibration against isolated words"):
# against a bank with ~26,000 isolated-word windows this misses 6-9 points fewer keywords at 1-5 false alarms
# an hour than mean + 4 standard deviations of the bank did. The margin sets the as-enrolled point only
# (with noise-averaged takes, about 29% FRR at 4 false alarms an hour there); the DET curves sweep an
# offset around it.
CLOSEST_NEGATIVES = 10
CLOSEST_MARGIN = 0.02
# A take's enrollment embedding averages it clean and under pink noise at these SNRs (see enrollment_embedding).
NOISY_COPIES_SNR_DB = (10.0, 15.0, 20.0)


class EnrollmentError(ValueError):
    """A take or a set of takes that cannot make a keyword; the message says which and why."""


MAX_NAME_CHARACTERS = 64
MAX_NAME_BYTES = 200  # UTF-8; the name plus ".<12 hex digits>" must fit a 255-byte file name
NAME_PUNCTUATION = frozenset("' .-_")
JOINERS = frozenset("\u200c\u200d")  # zero-width (non-)joiner: part of how Persian and Indic words are spelt


def check_keyword_name(name: str) -> str:
    """The name as stored (NFC, stripped), or :class:`EnrollmentError` saying what is wrong with it.

    Why these rules: a keyword is said in any language, so letters, combining marks
    (Devanagari vowel signs, Thai tone marks, a decomposed ``é``) and digits of any script
    are allowed; NFC makes one spelling of what looks the same. The name also becomes a
    folder name under the store, so path separators, control characters, a leading dot
    and ``..`` are refused, and its length is capped in characters and in bytes.
    """
    name = unicodedata.normalize("NFC", name).strip()
    problem = ""
    bad = sorted(
        {c for c in name if not (unicodedata.category(c)[0] in "LMN" or c in NAME_PUNCTUATION or c in JOINERS)}
    )
    if not name:
        problem = "it is empty"
    elif bad:
        problem = "it contains " + ", ".join(repr(c) if c.isprintable() else f"U+{ord(c):04X}" for c in bad)
    elif unicodedata.category(name[0])[0] not in "LN":
        problem = "it must start with a letter or a digit"
    elif ".." in name:
        problem = "it contains '..'"
    elif len(name) > MAX_NAME_CHARACTERS or len(name.encode()) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_CHARACTERS} characters (or {MAX_NAME_BYTES} bytes in UTF-8)"
    if problem:
        raise EnrollmentError(
            f"keyword name {name!r} is not allowed: {problem}; use letters and digits of any script, "
            f"spaces and ' . - _ (starting with a letter or digit, at most {MAX_NAME_CHARACTERS} characters)"
        )
    return name


LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$")


def check_language(tag: str) -> str:
    """A keyword's language as a BCP 47 tag in its usual case (``en``, ``pt-BR``, ``zh-Hans``), or EnrollmentError.

    Why it is kept at all: the Wyoming ``info`` lists each wake word's languages, and only the
    user knows what language a phrase they made up is in. The check is shape only (a 2-3 letter
    language, then up to three subtags), not a registry lookup, so any language can be named.
    """
    text = tag.strip() if isinstance(tag, str) else ""
    if not LANGUAGE_TAG.match(text):
        raise EnrollmentError(
            f"language {tag!r:.40} is not a language tag: use a BCP 47 tag such as 'en', 'de', 'pt-BR' or 'zh-Hans'"
        )
    first, *rest = text.split("-")
    cased = [first.lower()]
    for part in rest:
        cased.append(part.upper() if len(part) == 2 else part.title() if len(part) == 4 else part.lower())
    return "-".join(cased)


def keyword_key(name: str) -> str:
    """What makes two keyword names the same: case, ``_`` or space, runs of spaces and Unicode form do not count.

    Why one rule: Home Assistant and openWakeWord users write ``hey_jarvis`` for "Hey Jarvis", so
    the Wyoming server matches names this way; enrollment refuses a name whose key another keyword
    already has, so the server can never be asked for two keywords at once by one name.
    """
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())
    return " ".join(folded.replace("_", " ").split())


def check_distinct_name(name: str, names: Iterable[str]) -> None:
    """Refuse ``name`` when another of ``names`` has its :func:`keyword_key` (the same name is fine: a re-enroll)."""
    clash = sorted(n for n in names if n != name and keyword_key(n) == keyword_key(name))
    if clash:
        raise EnrollmentError(
            f"keyword name {name!r} is too close to the enrolled {', '.join(map(repr, clash))}: names that differ "
            "only in case or '_' versus space are one name to Home Assistant; "
            "use that name, or remove it first (`kws remove NAME`)"
        )


@dataclass
class Take:
    """A checked take: its audio (trimmed to the speech) and its embedding."""

    label: str
    samples: np.ndarray
    embedding: np.ndarray
    speech_seconds: float


def check_take(samples: np.ndarray, label: str, max_seconds: float, rate: int = 16000) -> np.ndarray:
    """Return the speech part of a take (DC removed), or raise :class:`EnrollmentError` with the reason."""
    recorded = np.asarray(samples, dtype=np.float32)
    samples = remove_dc(recorded)
    energy = frame_energy_db(samples, rate)
    if len(energy) == 0 or energy.max() < SILENT_DB:
        loudest = energy.max() if len(energy) else -120.0
        raise EnrollmentError(f"{label}: silent (loudest part {loudest:.0f} dBFS); speak closer to the microphone")
    bounds = speech_bounds(samples, rate, floor_aware=True)
    if bounds is None:
        raise EnrollmentError(f"{label}: no speech found")
    speech = samples[bounds[0] : bounds[1]]
    clipped = float(np.mean(np.abs(recorded[bounds[0] : bounds[1]]) >= 0.99))  # full scale as recorded, DC and all
    if clipped > CLIPPED_FRACTION:
        raise EnrollmentError(
            f"{label}: clipped ({100 * clipped:.1f}% of samples at full scale); speak softer or lower the input gain"
        )
    seconds = len(speech) / rate
    if seconds < MIN_SPEECH_SECONDS:
        raise EnrollmentError(f"{label}: too short ({seconds:.2f} s of speech, need at least {MIN_SPEECH_SECONDS} s)")
    if seconds > max_seconds:
        raise EnrollmentError(
            f"{label}: too long ({seconds:.2f} s of speech; the encoder hears {max_seconds:.2f} s at a time): "
            f"say just the wake word, with silence around it"
        )
    return samples[max(0, bounds[0] - rate // 10) : bounds[1] + rate // 10]


def enrollment_embedding(encoder: Encoder, samples: np.ndarray) -> np.ndarray:
    """A take's embedding for the prototype: the mean of its embeddings clean and under pink noise.

    Why: takes are usually said close to the microphone in a quiet moment, while the word
    is later heard across a noisy room; a prototype of clean takes alone sits where noisy
    utterances of the word do not reach. Averaging in copies at 10, 15 and 20 dB SNR moves
    it towards them (measured on the evaluation's streams: fewer misses at 2-5 false alarms
    an hour; BENCHMARKS.md). The noise is seeded by the take's length, so the same take
    always gives the same embedding.
    """
    samples = np.asarray(samples, dtype=np.float32)
    vectors = [encoder.embed_utterance(samples)]
    rng = np.random.default_rng(len(samples))
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    for snr_db in NOISY_COPIES_SNR_DB:
        noise = coloured_noise(len(samples), rng, exponent=1.0) * np.float32(rms / 10 ** (snr_db / 20))
        vectors.append(encoder.embed_utterance(samples + noise))
    return _unit(np.mean(vectors, axis=0)).astype(np.float32)


def embed_takes(encoder: Encoder, takes: list[tuple[str, np.ndarray]]) -> list[Take]:
    """Check and embed every take; all problems are collected and reported together."""
    max_seconds = encoder.window_samples / encoder.manifest.frontend.sample_rate
    checked, problems = [], []
    for label, samples in takes:
        try:
            speech = check_take(samples, label, max_seconds)
        except EnrollmentError as error:
            problems.append(str(error))
            continue
        seconds = len(speech) / encoder.manifest.frontend.sample_rate
        checked.append(Take(label, speech, enrollment_embedding(encoder, speech), seconds))
    if problems:
        raise EnrollmentError("rejected takes:\n  " + "\n  ".join(problems))
    return checked


def find_outliers(embeddings: np.ndarray, negatives: np.ndarray | None = None) -> list[int]:
    """Indices of takes that sound no more like the other takes than unrelated speech does.

    A take is compared with the mean of the *other* takes; it is an outlier when that
    cosine is below ``OUTLIER_COSINE`` or below what the top 1 % of the negative bank
    (non-keyword speech and noise) scores against the same mean. The second test
    scales with the encoder: a fixed cosine alone is too lenient for a model whose
    embeddings of different words already sit close together.
    """
    outliers = []
    for i in range(len(embeddings)):
        others = _unit(np.delete(embeddings, i, axis=0).mean(axis=0))
        if float(embeddings[i] @ others) < likeness_bar(others, negatives):
            outliers.append(i)
    return outliers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


def make_prototypes(embeddings: np.ndarray) -> np.ndarray:
    """One unit prototype, or two when the takes split into two clear groups (2-means on cosine)."""
    mean = _unit(embeddings.mean(axis=0))
    if len(embeddings) < 4 or float(np.min(embeddings @ embeddings.T)) >= SPLIT_COSINE:
        return mean[None]
    similarity = embeddings @ embeddings.T
    a, b = np.unravel_index(np.argmin(similarity), similarity.shape)
    centres = embeddings[[a, b]]
    for _ in range(10):
        groups = np.argmax(embeddings @ centres.T, axis=1)
        if min(np.sum(groups == 0), np.sum(groups == 1)) < 2:
            return mean[None]
        centres = _unit(np.stack([embeddings[groups == g].mean(axis=0) for g in (0, 1)]))
    return centres


def score(prototypes: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Keyword score of each embedding: its best cosine over the prototypes."""
    return np.max(np.atleast_2d(embeddings) @ prototypes.T, axis=1)


def calibrate_threshold(takes: np.ndarray, negatives: np.ndarray | None) -> tuple[float, dict]:
    """Threshold just under how the negative bank's closest windows score against the prototype.

    Why the closest windows, not the bank as a whole: false alarms come from the few other
    words that sound like the keyword, not from ordinary speech, and how close those come
    differs from word to word far more than the bulk does. A threshold at the level of each
    keyword's own nearest non-keyword words gives keywords about the same false-alarm rate,
    so one sensitivity setting means the same for all of them. (Measured on the evaluation's
    streams: at the same false-alarm rate it misses fewer keywords than a threshold a fixed
    number of standard deviations above the bank, or one between the bank and the takes; see
    BENCHMARKS.md.) Without a bank, the threshold sits just under the takes' own
    leave-one-out scores. Takes that score below the threshold are kept but reported: the
    word sounds like other words.
    """
    loo = np.array([score(make_prototypes(np.delete(takes, i, axis=0)), takes[i])[0] for i in range(len(takes))])
    positive_low = float(loo.min())
    stats = {"take_scores_loo": [round(float(x), 4) for x in loo]}
    if negatives is None or len(negatives) == 0:
        threshold = float(np.clip(positive_low - 0.1, 0.3, 0.95))
    else:
        negative_scores = score(make_prototypes(takes), negatives)
        closest = float(np.mean(np.sort(negative_scores)[-CLOSEST_NEGATIVES:]))
        threshold = float(np.clip(closest - CLOSEST_MARGIN, 0.3, 0.95))
        stats |= {
            "negative_mean": round(float(negative_scores.mean()), 4),
            "negative_closest": round(closest, 4),
            "take_margin_loo_min": round(positive_low - threshold, 4),
        }
        stats |= negative_tail(negative_scores, round(threshold, 4))  # what the sensitivity dial moves along
        if positive_low < threshold:
            stats["warning"] = (
                f"a take scores {positive_low:.3f}, under the threshold {threshold:.3f} set by the other words "
                "closest to this one: this word may be missed; a longer wake word, or takes said the way you "
                "will say it, help"
            )
    return threshold, stats


def load_negatives(encoder: Encoder) -> np.ndarray | None:
    """The negative bank shipped beside the model, verified against the manifest; None if absent."""
    m = encoder.manifest
    if not m.negatives_file:
        log.warning("model has no negative bank: thresholds come from the takes alone")
        return None
    path = encoder.model_path.parent / m.negatives_file
    if not path.is_file() or sha256_of(path) != m.negatives_sha256:
        raise ModelError(f"negative bank {path} is missing or does not match the manifest; reinstall the model")
    return np.load(path).astype(np.float32)


def enroll(
    encoder: Encoder,
    name: str,
    takes: list[tuple[str, np.ndarray]],
    negatives: np.ndarray | None,
    previous: list[np.ndarray] | None = None,
) -> tuple[Keyword, list[Take]]:
    """Build a :class:`Keyword` from labelled takes (plus embeddings of earlier takes for ``--add``)."""
    checked = embed_takes(encoder, takes)
    earlier = list(previous or [])
    if len(checked) + len(earlier) < MIN_TAKES:
        raise EnrollmentError(f"need at least {MIN_TAKES} good takes, have {len(checked) + len(earlier)}")
    if len(checked) + len(earlier) > MAX_TAKES:
        raise EnrollmentError(f"at most {MAX_TAKES} takes per keyword, got {len(checked) + len(earlier)}")
    embeddings = np.stack(earlier + [t.embedding for t in checked])
    outliers = [i - len(earlier) for i in find_outliers(embeddings, negatives) if i >= len(earlier)]
    if outliers:
        labels = ", ".join(checked[i].label for i in outliers)
        raise EnrollmentError(f"{labels}: does not sound like the other takes; re-record it (or them)")
    prototypes = make_prototypes(embeddings)
    threshold, stats = calibrate_threshold(embeddings, negatives)
    pairwise = embeddings @ embeddings.T
    stats |= {
        "take_seconds": [round(t.speech_seconds, 3) for t in checked],
        "take_min_cosine": round(float(pairwise.min()), 4),
        "prototypes": len(prototypes),
        "embeddings": [[round(float(x), 5) for x in e] for e in embeddings],
    }
    keyword = Keyword(
        name=name,
        prototypes=[[round(float(x), 6) for x in p] for p in prototypes],
        threshold=round(threshold, 4),
        encoder_sha256=encoder.sha256,
        takes=len(embeddings),
        stats=stats,
    )
    return keyword, checked


def save_takes(folder: Path, takes: list[Take], rate: int = 16000, earlier: Sequence[Path] = ()) -> list[Path]:
    """Keep the takes (trimmed) so keywords can be re-embedded when the encoder changes.

    ``earlier`` (the takes already kept, for ``--add``) are copied in first, so the folder holds
    every take of the keyword: the store commits a keyword's takes as one new folder.
    """
    from device.audio import write_wav

    folder.mkdir(parents=True, exist_ok=True)
    for path in earlier:
        shutil.copyfile(path, folder / path.name)
    start = len(list(folder.glob("take_*.wav")))
    paths = []
    for offset, take in enumerate(takes):
        path = folder / f"take_{start + offset:02d}.wav"
        write_wav(path, take.samples, rate)
        paths.append(path)
    return paths


def speech_seconds(samples: np.ndarray, rate: int = 16000) -> float:
    """How long the speech in a take lasts, as :func:`check_take` bounds it (no silence either side).

    Why not the recording's length: a take recorded from the microphone carries the pre-roll and
    the silence that ended it, so "ok (2.4 s)" for a 0.7 s word hid a take that was mostly room.
    """
    bounds = speech_bounds(remove_dc(np.asarray(samples, dtype=np.float32)), rate, floor_aware=True)
    return 0.0 if bounds is None else (bounds[1] - bounds[0]) / rate


def likeness_bar(mean: np.ndarray, negatives: np.ndarray | None) -> float:
    """The cosine a take needs to the (unit) mean of the other takes to count as the same word.

    The rule of :func:`find_outliers`: ``OUTLIER_COSINE``, or what the top 1 % of the negative
    bank scores against that mean when that is higher.
    """
    if negatives is None or not len(negatives):
        return OUTLIER_COSINE
    return max(OUTLIER_COSINE, float(np.quantile(negatives @ mean, 0.99)))
