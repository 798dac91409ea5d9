#!/usr/bin/env python3
"""`make demo`: enroll a new wake word from four takes, then find it in a noisy stream.

The takes and the stream are spoken by espeak-ng (offline TTS) with *different*
voices, so what you see is a word learned from one speaker being detected in
another's voice, between other words, under background noise at 10 dB SNR.
Everything goes through the real `kws` command line on the shipped encoder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from device.audio import read_wav, write_wav  # noqa: E402

WAKE_WORD = "hey toaster"
MODEL = REPO / "firmware_models" / "encoder.tflite"
OUT = REPO / "build" / "demo"


def speak(text: str, path: Path, voice: str, speed: int, pitch: int) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text], check=True)
    return read_wav(path)


def background_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """The shared recordings of a running tap and dishes if present, else generated pink noise."""
    shared = REPO.parent / "shared" / "data" / "background_noise"
    files = [shared / "running_tap.wav", shared / "doing_the_dishes.wav"]
    if all(f.is_file() for f in files):
        noise = np.concatenate([read_wav(f) for f in files])
    else:
        spectrum = np.fft.rfft(rng.standard_normal(int(seconds * 16000)))
        spectrum /= np.sqrt(np.arange(1, len(spectrum) + 1))
        noise = np.fft.irfft(spectrum)
    return np.resize(noise, int(seconds * 16000)).astype(np.float32)


def build_stream(folder: Path, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Other phrases and the wake word (twice) in a second voice, with gaps, mixed at 10 dB SNR."""
    script = ["good morning", WAKE_WORD, "what a lovely day", "turn the kettle on please", WAKE_WORD, "thank you"]
    pieces, ends, t = [np.zeros(16000, np.float32)], [], 1.0
    for i, text in enumerate(script):
        audio = speak(text, folder / f"stream_{i}.wav", "en-gb+m3", 150, 40)
        pieces += [audio, np.zeros(int(16000 * rng.uniform(1.0, 2.0)), np.float32)]
        t += len(audio) / 16000
        if text == WAKE_WORD:
            ends.append(t)
        t += len(pieces[-1]) / 16000
    speech = np.concatenate(pieces)
    noise = background_noise(len(speech) / 16000, rng)
    active = speech[np.abs(speech) > 0.01]
    noise *= np.sqrt(np.mean(active**2) / np.mean(noise**2) / 10.0)  # 10 dB SNR over the speech
    return np.clip(speech + noise, -1, 1), ends


def kws(*args: str) -> str:
    command = [sys.executable, "-m", "device.cli", "--store", str(OUT / "store"), "--model", str(MODEL), *args]
    print("$ kws " + " ".join(args), flush=True)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    print(result.stdout, end="")
    if result.returncode != 0:
        sys.exit(f"demo: `kws {args[0]}` failed:\n{result.stderr}")
    return result.stdout


def main() -> int:
    if not MODEL.is_file():
        sys.exit("demo: no model in firmware_models/ yet: run `make export` first")
    if shutil.which("espeak-ng") is None:
        sys.exit("demo: espeak-ng is needed to speak the demo takes: run `make install-system`")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        takes = []
        for i, (speed, pitch) in enumerate([(140, 50), (160, 45), (150, 60), (170, 55)]):
            path = OUT / f"take_{i + 1}.wav"
            audio = speak(WAKE_WORD, folder / f"raw_{i}.wav", "en-us", speed, pitch)
            write_wav(path, np.concatenate([np.zeros(4000), audio, np.zeros(4000)]))
            takes.append(str(path))
        stream, ends = build_stream(folder, rng)
    stream_path = OUT / "noisy_stream.wav"
    write_wav(stream_path, stream)
    print(
        f"Enrolling '{WAKE_WORD}' from {len(takes)} takes (voice en-us), then listening to a "
        f"{len(stream) / 16000:.1f} s stream in another voice (en-gb) with kitchen noise at 10 dB SNR.\n"
    )
    kws("enroll", WAKE_WORD, *takes)
    print()
    kws("detect", str(stream_path))
    print(f"\nThe wake word really ends at: {', '.join(f'{t:.2f} s' for t in ends)}")
    print(f"Files: {OUT}/ (takes, stream, keyword store)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
