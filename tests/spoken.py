"""Test speech: espeak-ng phrases at 16 kHz, cached per process (every test reuses the same takes)."""

import os
import subprocess
from functools import cache
from pathlib import Path

import numpy as np

from device.audio import read_wav

RATE = 16000


@cache
def _say(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"kws-say-{os.getpid()}-{abs(hash((text, voice, pitch, speed)))}.wav"
    try:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(out), text],
            check=True,
            capture_output=True,
        )
        audio = read_wav(out, RATE)
    finally:
        out.unlink(missing_ok=True)
    return (audio * (0.5 / max(1e-6, float(np.abs(audio).max())))).astype(np.float32)


def say(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160) -> np.ndarray:
    """espeak-ng speech peak-normalised to 0.5 (a fresh copy: callers may modify it)."""
    return _say(text, voice, pitch, speed).copy()
