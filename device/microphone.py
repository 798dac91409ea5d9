"""The microphone: opening an input stream, listing devices, recording enrollment takes.

Why one module: ``kws listen`` and ``kws enroll`` (recording) open the microphone
the same way, with the same clear errors when PortAudio or a device is missing,
and both honour the ``KWS_FAKE_INPUT`` test hook (:mod:`device.fake_input`).
``sounddevice`` is imported lazily: detecting in files must work on a machine
without PortAudio.

Recording a take is end-pointed by energy, like the enrollment checks: the take
starts when the level rises clearly above the room's noise floor (measured before
the first prompt) and stops after ~0.6 s of silence, or after ~3 s at most.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from device.audio import Resampler
from device.fake_input import ENV_PATH, WavInputStream

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.05


class MicrophoneError(RuntimeError):
    """The microphone cannot be opened or stopped delivering audio; the message says why."""


class PortAudioMissingError(MicrophoneError):
    """PortAudio (or the ``sounddevice`` package) is not installed: retrying will not help."""


def sounddevice_module() -> Any:
    """Import ``sounddevice``, turning its missing-library errors into :class:`PortAudioMissingError`."""
    try:
        import sounddevice
    except ImportError as error:
        raise PortAudioMissingError(
            f"the sounddevice package is not installed ({error}); `pip install 'fewshot-kws[device]'`"
        ) from error
    except OSError as error:  # sounddevice raises OSError when libportaudio is missing
        raise PortAudioMissingError(
            f"PortAudio is not available ({error}); install it with `sudo apt install libportaudio2`"
        ) from error
    return sounddevice


def fake_input_path() -> str | None:
    """The wav file standing in for the microphone, when ``KWS_FAKE_INPUT`` is set."""
    return os.environ.get(ENV_PATH) or None


def parse_device(value: str | int | None) -> int | str | None:
    """``--device`` as sounddevice wants it: an index, a name substring, or None for the default."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    value = value.strip()
    if value in ("", "default"):
        return None
    return int(value) if value.isdigit() else value


def input_devices() -> list[dict]:
    """Input-capable devices as dicts (index, name, channels, rate, default); raises :class:`MicrophoneError`."""
    sd = sounddevice_module()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as error:
        raise MicrophoneError(f"cannot list audio devices: {error}") from error
    found = []
    for index, info in enumerate(devices):
        if info["max_input_channels"] > 0:
            found.append(
                {
                    "index": index,
                    "name": info["name"],
                    "channels": int(info["max_input_channels"]),
                    "rate": int(info["default_samplerate"]),
                    "default": index == default_in,
                }
            )
    return found


def refresh_devices(sd: Any) -> None:
    """Make PortAudio enumerate the devices again.

    PortAudio lists devices once, when it is initialised, so a microphone plugged
    back in (maybe under another index) stays invisible to a running daemon until
    this is done. Only call it while no stream is open.
    """
    try:
        sd._terminate()
        sd._initialize()
    except (AttributeError, sd.PortAudioError) as error:
        log.debug("could not re-initialise PortAudio: %s", error)


def open_input_stream(
    callback: Callable[..., None],
    samplerate: int,
    device: int | str | None = None,
    block_seconds: float = BLOCK_SECONDS,
    refresh: bool = False,
) -> tuple[Any, int]:
    """Open and start a mono float32 input stream; return it and the rate it really runs at.

    The model's rate is asked for first; a device that refuses it (some USB
    microphones only do 44.1/48 kHz without ALSA's plug layer) is opened at its
    own default rate, and the caller resamples. ``refresh`` re-enumerates the
    devices first (for a retry after the device vanished). ``KWS_FAKE_INPUT`` swaps
    in a :class:`~device.fake_input.WavInputStream`.
    """

    def start(stream_class: Callable, rate: int):
        stream = stream_class(
            samplerate=rate,
            channels=1,
            dtype="float32",
            blocksize=round(block_seconds * rate),
            callback=callback,
            device=device,
        )
        stream.start()
        return stream, rate

    if fake_input_path():
        return start(WavInputStream, samplerate)
    sd = sounddevice_module()
    if refresh:
        refresh_devices(sd)
    if device is None and sd.default.device[0] < 0:
        raise MicrophoneError("no default input device (is a microphone plugged in? see `kws devices`)")
    rates = [samplerate]
    try:
        default_rate = int(sd.query_devices(device, "input")["default_samplerate"])
        if default_rate != samplerate:
            rates.append(default_rate)
    except (sd.PortAudioError, ValueError) as error:
        name = device if device is not None else "(default)"
        raise MicrophoneError(f"no usable input device {name}: {error}") from error
    last_error: Exception | None = None
    for rate in rates:
        try:
            return start(sd.InputStream, rate)
        except (sd.PortAudioError, ValueError) as error:
            last_error = error
            log.debug("opening input at %d Hz failed: %s", rate, error)
    raise MicrophoneError(f"cannot open input device {device if device is not None else '(default)'}: {last_error}")


def close_quietly(stream: Any) -> None:
    """Stop and close a stream that may already be dead (an unplugged device raises on close)."""
    if stream is None:
        return
    try:
        stream.stop()
    except Exception as error:  # PortAudioError on a vanished device
        log.debug("stopping the stream: %s", error)
    try:
        stream.close()
    except Exception as error:
        log.debug("closing the stream: %s", error)


def level_db(block: np.ndarray) -> float:
    """RMS level of a block in dBFS (floor -120)."""
    return 10.0 * math.log10(float(np.mean(np.square(block, dtype=np.float64))) + 1e-12)


@dataclass
class Endpointer:
    """Energy end-pointing of one take, fed block by block.

    Speech starts at the first block ``on_db`` above the noise floor (and above
    ``min_speech_db``); the take ends after ``silence_seconds`` of blocks below the
    lower ``off`` level, or ``max_seconds`` after speech started.
    """

    floor_db: float
    block_seconds: float = BLOCK_SECONDS
    on_db: float = 15.0
    off_db: float = 8.0
    min_speech_db: float = -50.0
    silence_seconds: float = 0.6
    max_seconds: float = 3.0
    started: bool = False
    done: bool = False
    _speech_blocks: int = 0
    _quiet_blocks: int = 0

    @property
    def on_level(self) -> float:
        return max(self.floor_db + self.on_db, self.min_speech_db)

    @property
    def off_level(self) -> float:
        return max(self.floor_db + self.off_db, self.min_speech_db - 6.0)

    def feed(self, level: float) -> None:
        if self.done:
            return
        if not self.started:
            self.started = level >= self.on_level
            if not self.started:
                return
        self._speech_blocks += 1
        self._quiet_blocks = 0 if level >= self.off_level else self._quiet_blocks + 1
        quiet_for = self._quiet_blocks * self.block_seconds
        self.done = quiet_for >= self.silence_seconds or self._speech_blocks * self.block_seconds >= self.max_seconds


class TakeRecorder:
    """Records end-pointed takes from one open microphone stream (a context manager).

    The stream stays open between takes so takes follow each other without a gap
    to reopen the device; a little audio before speech starts is kept (pre-roll)
    so the onset of the word is not cut.
    """

    def __init__(
        self,
        samplerate: int,
        device: int | str | None = None,
        meter: bool | None = None,
        out: TextIO | None = None,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        self.samplerate = samplerate
        self.device = device
        self.block_seconds = block_seconds
        self.out = out or sys.stderr
        self.meter = self.out.isatty() if meter is None else meter
        self.floor_db = -90.0
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        self._stream: Any = None
        self._resampler: Resampler | None = None

    def __enter__(self) -> TakeRecorder:
        self._stream, rate = open_input_stream(self._callback, self.samplerate, self.device, self.block_seconds)
        if rate != self.samplerate:
            self._resampler = Resampler(rate, self.samplerate)
        self.calibrate()
        return self

    def __exit__(self, *exc: object) -> None:
        close_quietly(self._stream)
        self._stream = None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self._queue.put(indata[:, 0].copy())

    def _block(self, timeout: float = 2.0) -> np.ndarray:
        try:
            block = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise MicrophoneError(f"the microphone delivered no audio for {timeout:.0f} s (unplugged?)") from None
        return self._resampler.process(block) if self._resampler else block

    def calibrate(self, seconds: float = 0.5) -> float:
        """Measure the room's noise floor (the quietest tenth of ``seconds`` of audio): keep quiet."""
        levels = [level_db(self._block()) for _ in range(max(1, round(seconds / self.block_seconds)))]
        self.floor_db = float(np.percentile(levels, 10))
        log.info("noise floor %.0f dBFS", self.floor_db)
        return self.floor_db

    def record(self, max_seconds: float = 3.0, silence_seconds: float = 0.6, wait_seconds: float = 8.0) -> np.ndarray:
        """One take: wait up to ``wait_seconds`` for speech, then record until silence or ``max_seconds``."""
        endpointer = Endpointer(
            self.floor_db, self.block_seconds, silence_seconds=silence_seconds, max_seconds=max_seconds
        )
        preroll: deque[np.ndarray] = deque(maxlen=max(1, round(0.3 / self.block_seconds)))
        blocks: list[np.ndarray] = []
        waited = 0.0
        while not endpointer.done:
            block = self._block()
            level = level_db(block)
            self._show(level, endpointer.started)
            endpointer.feed(level)
            if endpointer.started:
                if not blocks:
                    blocks.extend(preroll)
                blocks.append(block)
            else:
                preroll.append(block)
                waited += self.block_seconds
                if waited >= wait_seconds:
                    self._end_meter()
                    return np.concatenate(list(preroll))  # enrollment's check calls it silent
        self._end_meter()
        return np.concatenate(blocks).astype(np.float32)

    def _show(self, level: float, speaking: bool) -> None:
        if not self.meter:
            return
        width = 30
        filled = int(np.clip((level + 70.0) / 70.0, 0.0, 1.0) * width)
        mark = "rec" if speaking else "   "
        self.out.write(f"\r  {mark} [{'#' * filled}{'-' * (width - filled)}] {level:6.1f} dBFS")
        self.out.flush()

    def _end_meter(self) -> None:
        if self.meter:
            self.out.write("\r" + " " * 60 + "\r")
            self.out.flush()
