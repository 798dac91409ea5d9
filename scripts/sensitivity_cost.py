"""What sensitivity 0.3 / 0.7 cost: thresholds, negative-bank windows passing and false alarms on espeak talk.

Run from the repository root: `.venv/bin/python scripts/sensitivity_cost.py` (needs espeak-ng; ~10 s).
The figures in `kws detect --help` (device/cli.py SENSITIVITY_HELP) come from this script.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import numpy as np
from spoken import say
from test_cli import ENROLL_VOICES, noise

from device import DetectorSettings, Spotter
from device.enroll import score
from device.sensitivity import threshold_at

WORDS = [
    "hey toaster",
    "open sesame",
    "lights on",
    "hey computer",
    "good night",
    "start the music",
    "hello robot",
    "wake up",
]
sp = Spotter(tempfile.mkdtemp())
neg = sp.negatives
rows = []
for w in WORDS:
    k = sp.enroll(w, [say(w, *v) for v in ENROLL_VOICES], keep_takes=False)
    scores = score(k.prototype_matrix(), neg)
    r = [w, k.threshold]
    for s in (0.3, 0.5, 0.7):
        t = threshold_at(k.threshold, k.stats, s)
        r += [round(t - k.threshold, 4), int((scores >= t).sum())]
    rows.append(r)
    print(r, flush=True)
d3 = [r[2] for r in rows]
d7 = [r[6] for r in rows]
print("median shift 0.3:", np.median(d3), "0.7:", np.median(d7), "per tenth (0.7):", np.median(d7) / -2)
print(
    "bank passing ratio 0.7/0.5:",
    np.median([r[7] / max(1, r[5]) for r in rows]),
    "0.3/0.5:",
    np.median([r[3] / max(1, r[5]) for r in rows]),
)
text = (
    "the weather today is cloudy with a chance of rain in the afternoon. "
    "please remember to buy milk and bread on the way home. "
    "our meeting has been moved to thursday morning at ten. the train to the city leaves every twenty minutes. "
    "can you tell me where the nearest post office is. i think we should paint the kitchen a lighter colour. "
    "she read the whole book in one evening and loved the ending. "
    "turn left at the second traffic light and park behind the shop. "
)
sentences = [x.strip() for x in text.split(".") if x.strip()]
parts = []
for voice in [
    ("en-us+f3", 50, 160),
    ("en-us+m3", 45, 170),
    ("en", 55, 150),
    ("en-us+f2", 60, 175),
    ("en-gb-x-rp", 50, 160),
]:
    for j, sent in enumerate(sentences):
        parts += [say(sent, *voice), noise(0.7, 0.003, seed=j)]
talk = np.concatenate(parts)
talk = np.concatenate([talk, talk[::-1] * 0.8])  # reversed speech too: same spectrum, no words
minutes = len(talk) / 16000 / 60
print(f"talk stream {minutes:.1f} min", flush=True)
for s in (0.3, 0.5, 0.7, 0.9):
    sp.settings = DetectorSettings(sensitivity_override=s)
    st = sp.new_stream()
    ev = []
    for i in range(0, len(talk), 1600):
        ev += st.process(talk[i : i + 1600])
    ev += st.process(np.zeros(16000, np.float32))
    print(
        f"sensitivity {s}: {len(ev)} false alarms in {minutes:.1f} min "
        f"({len(ev) / minutes * 60:.1f}/h) over {len(WORDS)} keywords",
        [(e.keyword, round(e.score, 3)) for e in ev][:8],
        flush=True,
    )
