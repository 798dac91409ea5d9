"""How long after the end of the word an event arrives, at several max holds (issue #25: median under 300 ms).

Run from the repository root: `.venv/bin/python scripts/event_latency.py` (needs espeak-ng; a few seconds).
Two keywords enrolled from espeak takes, each said by 7 other voices, fed in 160-sample chunks as the
Wyoming server does; "emission" is the stream time when ``process`` returned the event.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import numpy as np
from spoken import say
from test_cli import ENROLL_VOICES, compose, noise

from device import DetectorSettings, Spotter

sp = Spotter(tempfile.mkdtemp())
for w in ("hey toaster", "open sesame"):
    sp.enroll(w, [say(w, *v) for v in ENROLL_VOICES], keep_takes=False)
voices = [
    ("en-us+f3", 50, 160),
    ("en-us+m3", 45, 170),
    ("en", 55, 150),
    ("en-us+f2", 60, 175),
    ("en-gb-x-rp", 50, 160),
    ("en-us+f4", 40, 150),
    ("en-us+m5", 55, 180),
]
parts = []
for j, v in enumerate(voices):
    for w in ("hey toaster", "open sesame"):
        parts += [(w, say(w, *v)), ("", noise(2.0, 0.002, seed=j))]
audio, ends = compose([("", noise(1.0, 0.002, seed=99))] + parts)
audio = np.concatenate([audio, np.zeros(16000, np.float32)])
truth = sorted((t, w) for w, ts in ends.items() for t in ts)
for hold in (0.2, 0.3, 0.4):
    sp.settings = DetectorSettings(max_hold_seconds=hold)
    st = sp.new_stream()
    lat, hits, times_err = [], 0, []
    for i in range(0, len(audio), 160):
        for d in st.process(audio[i : i + 160]):
            match = [t for t, w in truth if w == d.keyword and abs(t - d.time_s) < 1.0]
            if match:
                hits += 1
                lat.append(st.time_s - match[0])
                times_err.append(d.time_s - match[0])
    print(
        f"hold {hold}: {hits}/{len(truth)} hits, emission after word end median {np.median(lat) * 1000:.0f} ms "
        f"(max {max(lat) * 1000:.0f}), time_s error median {np.median(np.abs(times_err)) * 1000:.0f} ms"
    )
