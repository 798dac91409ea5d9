"""What `kws set NAME --not FILE` buys and costs, against negative prototypes: a quick espeak measurement.

For each (keyword, look-alike) pair the keyword is enrolled from five en-us takes, and one
recording of the look-alike by one voice is taught as "not this". Then the look-alike and the
keyword, each said by four other voices, are streamed through the detector's windows and
scored two ways: the shipped rule (the threshold raised above the taught recording,
device.false_alarms) and negative prototypes (a window closer to the taught embedding than
to the keyword's prototype scores nothing; the calibrated threshold). Prints, per rule, the
look-alike recordings that still fire and the keyword recordings missed.

    .venv/bin/python scripts/not_this_cost.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from spoken import say  # noqa: E402

from device.detector import DetectorSettings, StreamingDetector  # noqa: E402
from device.encoder import Encoder  # noqa: E402
from device.enroll import enroll, load_negatives  # noqa: E402
from device.false_alarms import RecordingEncoder, apply_negatives, strongest_window  # noqa: E402

PAIRS = [
    ("hey jasper", "hey casper"),
    ("lights on", "lights off"),
    ("hey toaster", "hey taster"),
    ("hey toaster", "okay toaster"),
]
ENROLL = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
TAUGHT = ("en-us+f3", 50, 160)
TESTS = [("en-us+m3", 50, 160), ("en-gb", 50, 160), ("en-us+f2", 60, 170), ("en-us+f4", 45, 150)]


def clip(text: str, voice) -> np.ndarray:
    quiet = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.002
    return np.concatenate([quiet, say(text, *voice), quiet, np.zeros(16000, np.float32)])


def hops(encoder: Encoder, keyword, audio: np.ndarray) -> list[tuple[float, np.ndarray | None]]:
    """(raw score, window embedding or None when gated) of every hop, as the detector computes them."""
    recorder = RecordingEncoder(encoder)
    found: list[tuple[float, np.ndarray | None]] = []

    def on_hop(now, smoothed, thresholds):
        embedding, recorder.last = recorder.last, None
        raw = float(np.max(keyword.prototype_matrix() @ embedding)) if embedding is not None else 0.0
        found.append((raw, embedding))

    StreamingDetector(recorder, [keyword], DetectorSettings(), on_hop).process(audio)  # type: ignore[arg-type]
    return found


def fires(scores: list[float], threshold: float) -> bool:
    smoothed = [np.mean(scores[max(0, i - 1) : i + 1]) for i in range(len(scores))]  # smoothing_hops = 2
    return max(smoothed) >= threshold


def main() -> None:
    encoder = Encoder(ROOT / "firmware_models" / "encoder.tflite")
    bank = load_negatives(encoder)
    totals = {"threshold": [0, 0], "negative prototype": [0, 0], "calibrated only": [0, 0]}
    for word, alike in PAIRS:
        keyword, _ = enroll(encoder, word, [(f"t{i}", say(word, *v)) for i, v in enumerate(ENROLL)], bank)
        window = strongest_window(encoder, keyword, clip(alike, TAUGHT), alike, DetectorSettings())
        raised = apply_negatives(keyword, [window], bank)
        negative = window.embedding
        row = []
        for name, rule in (("calibrated only", "none"), ("threshold", "raised"), ("negative prototype", "neg")):
            false_alarms = misses = 0
            for voice in TESTS:
                for text, is_word in ((alike, False), (word, True)):
                    found = hops(encoder, keyword, clip(text, voice))
                    if rule == "neg":
                        scores = [s if e is None or s > float(negative @ e) else 0.0 for s, e in found]
                    else:
                        scores = [s for s, _ in found]
                    fired = fires(scores, raised.threshold if rule == "raised" else keyword.threshold)
                    false_alarms += fired and not is_word
                    misses += is_word and not fired
            totals[name][0] += false_alarms
            totals[name][1] += misses
            row.append(f"{name}: {false_alarms}/{len(TESTS)} look-alikes fire, {misses}/{len(TESTS)} words missed")
        print(
            f"{word!r} vs {alike!r} (taught {window.score:.3f}; "
            f"threshold {keyword.threshold:.3f} -> {raised.threshold:.3f})"
        )
        print("   " + "; ".join(row))
    n = len(PAIRS) * len(TESTS)
    for name, (false_alarms, misses) in totals.items():
        print(f"total {name}: {false_alarms}/{n} look-alike recordings fire, {misses}/{n} keyword recordings missed")


if __name__ == "__main__":
    main()
