"""A wav file that pretends to be a microphone: the test and demo hook behind ``KWS_FAKE_INPUT``.

Why: the daemon and the recording side of ``kws enroll`` are only worth testing
end to end, microphone included, and CI machines (and most developer laptops in a
container) have no microphone. ``WavInputStream`` is a drop-in stand-in for the
subset of ``sounddevice.InputStream`` that :mod:`device.microphone` uses.

Environment variables (read by :func:`device.microphone.open_input_stream`)::

    KWS_FAKE_INPUT=/path/file.wav   read this file instead of the microphone (any rate, any channels)
    KWS_FAKE_INPUT_SPEED=10         play it 10x faster than real time (default 1: real time)
    KWS_FAKE_INPUT_LOOP=1           loop the file forever instead of ending

At the end of the file (without ``KWS_FAKE_INPUT_LOOP``) the stream ends the way
an unplugged USB microphone does: callbacks stop and ``active`` turns False. So
``kws listen`` exercises its reconnect path (log, back off, reopen) and a reopened
stream plays the file again from the start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from device.audio import read_wav

log = logging.getLogger(__name__)

ENV_PATH = "KWS_FAKE_INPUT"
ENV_SPEED = "KWS_FAKE_INPUT_SPEED"
ENV_LOOP = "KWS_FAKE_INPUT_LOOP"


class _NoStatus:
    """Stand-in for ``sounddevice.CallbackFlags`` with no flag set (falsy, prints empty)."""

    input_overflow = False
    input_underflow = False

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return ""


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class WavInputStream:
    """Plays a wav file into ``callback(indata[frames, channels], frames, time_info, status)`` from a thread.

    Accepts the keyword arguments of ``sounddevice.InputStream`` that matter here
    (``samplerate``, ``channels``, ``dtype``, ``blocksize``, ``callback``, ``device``,
    ``finished_callback``) and ignores the rest. Blocks are paced at
    ``blocksize / samplerate / speed`` seconds on an absolute schedule, so the
    stream neither drifts nor bursts.
    """

    def __init__(
        self,
        samplerate: float | None = None,
        blocksize: int | None = None,
        device: Any = None,
        channels: int | None = None,
        dtype: str | None = "float32",
        callback: Callable[..., None] | None = None,
        finished_callback: Callable[[], None] | None = None,
        *,
        path: str | Path | None = None,
        speed: float | None = None,
        loop: bool | None = None,
        **_ignored: Any,
    ) -> None:
        path = path or os.environ.get(ENV_PATH)
        if not path:
            raise ValueError(f"WavInputStream needs a path (or ${ENV_PATH})")
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"WavInputStream only produces float32, not {dtype}")
        self.path = Path(path)
        self.samplerate = float(samplerate or 16000)
        self.channels = int(channels or 1)
        self.dtype = "float32"
        self.blocksize = int(blocksize or round(0.05 * self.samplerate))
        self.device = device
        self.latency = 0.0
        self.speed = float(speed if speed is not None else os.environ.get(ENV_SPEED) or 1.0)
        if self.speed <= 0:
            raise ValueError(f"{ENV_SPEED} must be positive, got {self.speed}")
        self.loop = env_flag(ENV_LOOP) if loop is None else loop
        self._callback = callback
        self._finished_callback = finished_callback
        self._audio = read_wav(self.path, int(self.samplerate))  # AudioError names the file
        self._position = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = False
        self.closed = False

    @property
    def active(self) -> bool:
        return self._active

    @property
    def stopped(self) -> bool:
        return not self._active

    def start(self) -> None:
        if self.closed:
            raise RuntimeError("stream is closed")
        if self._active:
            return
        self._stop.clear()
        self._active = True
        self._thread = threading.Thread(target=self._run, name="fake-input", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._active = False

    abort = stop

    def close(self) -> None:
        self.stop()
        self.closed = True

    def __enter__(self) -> WavInputStream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def _next_block(self) -> np.ndarray | None:
        if self._position >= len(self._audio):
            if not self.loop or len(self._audio) == 0:
                return None
            self._position = 0
        block = self._audio[self._position : self._position + self.blocksize]
        self._position += len(block)
        if len(block) < self.blocksize:  # a real device always delivers whole blocks
            block = np.concatenate([block, np.zeros(self.blocksize - len(block), np.float32)])
        return np.repeat(block[:, None], self.channels, axis=1).astype(np.float32)

    def _run(self) -> None:
        period = self.blocksize / self.samplerate / self.speed
        started = time.monotonic()
        count = 0
        try:
            while not self._stop.is_set():
                block = self._next_block()
                if block is None:
                    log.debug("fake input %s: end of file", self.path)
                    break
                now = time.monotonic()
                info = SimpleNamespace(inputBufferAdcTime=now, currentTime=now, outputBufferDacTime=0.0)
                if self._callback is not None:
                    self._callback(block, self.blocksize, info, _NoStatus())
                count += 1
                delay = started + count * period - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
        except Exception as error:  # sounddevice's CallbackStop/CallbackAbort, or a bug in the callback
            log.debug("fake input callback ended the stream: %r", error)
        finally:
            self._active = False
            if self._finished_callback is not None:
                self._finished_callback()
