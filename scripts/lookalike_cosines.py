"""How close keyword prototypes come, against how an utterance of one word scores against another's.

The measurement behind enrollment's look-alike warning (device.false_alarms.sounds_like: warn
when two prototypes are as close as the lower of their thresholds). Ten espeak phrases enrolled
from five en-us takes; for every pair: the prototype cosine, both thresholds, and how each word
said by another voice (en-us+f3) scores against the other word's prototype.

    .venv/bin/python scripts/lookalike_cosines.py
"""

import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from spoken import say  # noqa: E402

from device.encoder import Encoder  # noqa: E402
from device.enroll import enroll, load_negatives, score  # noqa: E402

VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
WORDS = ["hey jasper", "hey casper", "hey jarvis", "hey toaster", "open sesame", "lights on", "hey computer",
         "okay toaster", "hey taster", "lights off"]  # fmt: skip
OTHER = ("en-us+f3", 50, 160)


def main() -> None:
    encoder = Encoder(ROOT / "firmware_models" / "encoder.tflite")
    bank = load_negatives(encoder)
    keywords = {w: enroll(encoder, w, [(f"t{i}", say(w, *v)) for i, v in enumerate(VOICES)], bank)[0] for w in WORDS}
    for a, b in itertools.combinations(WORDS, 2):
        pa, pb = keywords[a].prototype_matrix(), keywords[b].prototype_matrix()
        cosine = float(np.max(pa @ pb.T))
        b_as_a = float(score(pa, encoder.embed_utterance(say(b, *OTHER)))[0])
        a_as_b = float(score(pb, encoder.embed_utterance(say(a, *OTHER)))[0])
        warn = "WARN" if cosine >= min(keywords[a].threshold, keywords[b].threshold) else "    "
        print(
            f"{warn} {a:>14} ~ {b:<14} prototypes {cosine:.3f}  thresholds {keywords[a].threshold:.3f}/"
            f"{keywords[b].threshold:.3f}  {b!r} said, as {a!r} {b_as_a:.3f}  {a!r} said, as {b!r} {a_as_b:.3f}"
        )


if __name__ == "__main__":
    main()
