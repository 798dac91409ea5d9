"""Wyoming wake-word server: Home Assistant's protocol over the few-shot detector.

    python -m device.wyoming_server --uri tcp://0.0.0.0:10400 --store ~/.local/share/kws
    kws serve --uri tcp://0.0.0.0:10400            # the same, from the command line tool

It speaks the events ``wyoming-openwakeword`` (1.8.2, ``handler.py``) speaks, so Home
Assistant's Wyoming integration adds it unchanged:

* ``describe`` -> ``info`` with one wake program whose models are the enrolled keywords.
* ``detect`` (optional ``names``) -> listen only for those keywords from now on.
* ``audio-start`` -> a fresh stream (detector state, resampler, "detected" flag).
* ``audio-chunk`` (any rate / width / channels) -> a ``detection`` (name, timestamp = the
  chunk's timestamp in ms) every time a keyword fires. Like openWakeWord the stream keeps
  going after a detection (a satellite keeps streaming and re-arms with ``detect``); the
  detector's refractory period keeps one utterance to one detection.
* ``audio-stop`` -> ``not-detected`` if nothing fired since ``audio-start``, then the
  connection is closed, as openWakeWord does.

Names match by :func:`device.enroll.keyword_key` (case, ``_`` or space, Unicode
normalisation do not matter), the same rule that keeps enrolled names apart.

Where openWakeWord would drop the connection with an exception we answer instead: an
unknown name in ``detect`` is logged and ignored (one naming only unknown words also gets an
``error`` event, code ``unknown-wake-word``; the stream goes on, so a word enrolled meanwhile
fires), an unsupported audio format gets an
``error`` event (once per format) and its chunks are dropped, an unreadable event gets an
``error`` event and the connection is closed. Nothing a client sends stops the server.

What one client can make the server hold is bounded, so neither a broken client nor a
flood of connections can starve the others or Home Assistant:

* Memory: an event's payload may be at most ``MAX_PAYLOAD_BYTES`` (256 KiB: 8 s of 16 kHz
  16-bit mono, 1.4 s of 48 kHz stereo; clients send ~2 KiB chunks) and its JSON data at
  most ``MAX_DATA_BYTES``. A larger event is read past in small pieces, never held,
  answered with an ``error`` event (code ``too-large``) and dropped; the connection goes on.
  A chunk reaches the detector one second of its audio at a time, so the float arrays
  made from it stay small whatever its format. Beyond that a client holds the stream
  reader's buffer (asyncio pauses reading past 128 KiB, so TCP pushes back) and its
  detector state.
* Time: a connection on which no complete event arrives for ``--idle-timeout`` seconds
  (60 by default), whether it sends nothing or stalls half-way through an event, is
  closed; so is one that does not read what we send for that long.
* Connections: at most ``--max-connections`` (64 by default) at once. One more closes the
  connection that has waited longest for its next event, if that has been more than
  ``EVICTABLE_IDLE_SECONDS`` (a streaming client sends every ~0.1 s); otherwise the new
  one gets an ``error`` event (code ``too-many-connections``) and is closed. Either is
  logged. So file descriptors stay far under systemd's default limit of 1,024 and a real
  client is served even while hundreds of idle connections keep arriving.

Every client gets its own detector state; all share one encoder. The detector work of a
chunk runs in a worker thread so a slow client never holds up the event loop (and so
never another client). The keyword store is polled every couple of seconds and a changed
store is picked up without a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.server import AsyncEventHandler, AsyncServer, AsyncStdioServer
from wyoming.wake import Detect, Detection, NotDetected

from device.about import DISTRIBUTION, NotInstalledError, package_version, project_url
from device.audio import AudioError, Resampler, pcm_to_float, to_mono
from device.detector import Detection as KeywordDetection
from device.detector import DetectorSettings, StreamingDetector
from device.encoder import Encoder
from device.enroll import keyword_key
from device.interpreter import NoInterpreterError
from device.manifest import ModelError
from device.spotter import Spotter
from device.store import Keyword, KeywordStore, StoreError, store_version

log = logging.getLogger("device.wyoming_server")  # not "__main__" under python -m

PROGRAM = DISTRIBUTION
POLL_SECONDS = 2.0
RATES = (4000, 192000)  # accepted client sample rates (Hz)
MAX_CHANNELS = 32
DEFAULT_URI = "tcp://0.0.0.0:10400"
MAX_PAYLOAD_BYTES = 256 * 1024  # one event's payload (an audio-chunk's audio); see the module docstring
MAX_DATA_BYTES = 64 * 1024  # one event's JSON data (Wyoming's are a few hundred bytes)
SKIP_BYTES = 64 * 1024  # an oversized event is read past this much at a time
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds without a complete event before a connection is closed
DEFAULT_MAX_CONNECTIONS = 64
EVICTABLE_IDLE_SECONDS = 1.0  # at the connection cap, a connection idle this long makes room for a new one


def _about() -> tuple[str, Attribution]:
    """The installed version and the attribution Home Assistant shows, from the package's metadata."""
    try:
        return package_version(), Attribution(name=DISTRIBUTION, url=project_url())
    except NotInstalledError as error:
        log.warning("%s: info reports version 'unknown'", error)
        return "unknown", Attribution(name=DISTRIBUTION, url="")


class LockedEncoder:
    """The one shared :class:`Encoder`, with its interpreter runs serialised by a lock.

    A TFLite interpreter is not thread-safe and the detector work runs in worker threads.
    A lock rather than an interpreter per worker: one ``invoke`` of the shipped encoder
    takes ~0.13 ms on a desktop core (a few ms on a Pi), once per 100 ms hop per client, so
    the lock is rarely contended, and the rest of a chunk's work (resampling, log-mel,
    scoring) still runs in parallel outside it. Per-worker interpreters would multiply
    memory and threads on a Raspberry Pi for no gain.
    """

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._encoder.embed_frames(frames)

    def embed_utterance(self, samples: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._encoder.embed_utterance(samples)


class PcmConverter:
    """Wyoming PCM of one format -> mono float32 at the model's rate, across chunk boundaries.

    A streaming :class:`Resampler` (its state carries over between chunks, so chunk edges
    leave no clicks) and a byte remainder (a chunk may end inside a sample frame).
    """

    def __init__(self, rate: int, width: int, channels: int, target_rate: int) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rate, width, channels)):
            raise AudioError(f"rate, width and channels must be integers, got {rate!r}, {width!r}, {channels!r}")
        if width not in (1, 2, 3, 4):
            raise AudioError(f"unsupported sample width {width} bytes (supported: 1, 2, 3, 4)")
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioError(f"unsupported channel count {channels} (supported: 1..{MAX_CHANNELS})")
        if not RATES[0] <= rate <= RATES[1]:
            raise AudioError(f"unsupported sample rate {rate} Hz (supported: {RATES[0]}..{RATES[1]})")
        self.format = (rate, width, channels)
        self._frame_bytes = width * channels
        self._pending = b""
        self._resampler = Resampler(rate, target_rate)

    def convert(self, audio: bytes) -> np.ndarray:
        data = self._pending + audio
        usable = len(data) - len(data) % self._frame_bytes
        self._pending = data[usable:]
        _, width, channels = self.format
        return self._resampler.process(to_mono(pcm_to_float(data[:usable], width, channels)))

    def pieces(self, audio: bytes) -> Iterator[np.ndarray]:
        """``audio`` converted one second (of the client's audio) at a time.

        Why: a chunk of 256 KiB of 8-bit audio at 4 kHz is 65 s at the model's rate; as one
        array its log-mel would take tens of MB. Slices keep the arrays at a second of audio,
        and the detector gives the same detections whatever the slicing.
        """
        step = self.format[0] * self._frame_bytes
        for start in range(0, len(audio), step):
            yield self.convert(audio[start : start + step])

    def flush(self) -> np.ndarray:
        return self._resampler.flush()


class ProtocolError(ValueError):
    """Bytes from a client that are not a Wyoming event."""


class OversizedEvent(ValueError):
    """An event larger than the server accepts; it was read past, so the connection can go on."""


async def _skip(reader: asyncio.StreamReader, count: int) -> None:
    """Read and drop ``count`` bytes, a little at a time, so they are never all in memory."""
    while count > 0:
        count -= len(await reader.readexactly(min(count, SKIP_BYTES)))


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """One Wyoming event, None at a clean end of stream, :class:`ProtocolError` on garbage.

    Like ``wyoming.event.async_read_event``, except that the library's version turns an
    unreadable header into a silent end of stream; this one says what was wrong. An event
    with more than ``MAX_DATA_BYTES`` of data or ``MAX_PAYLOAD_BYTES`` of payload is read
    past and raises :class:`OversizedEvent`.
    """
    try:
        line = await reader.readline()
    except ValueError as error:  # a line longer than the reader's limit
        raise ProtocolError(f"event header too long ({error})") from error
    if not line:
        return None
    try:
        header = json.loads(line)
        if not isinstance(header, dict) or not isinstance(header.get("type"), str):
            raise ValueError("not a JSON object with a 'type'")
        data = header.get("data") or {}
        data_length = int(header.get("data_length") or 0)
        payload_length = int(header.get("payload_length") or 0)
        if not isinstance(data, dict) or data_length < 0 or payload_length < 0:
            raise ValueError("bad 'data', 'data_length' or 'payload_length'")
    except (ValueError, TypeError) as error:
        raise ProtocolError(f"unreadable event header {line[:60]!r}: {error}") from error
    if data_length > MAX_DATA_BYTES or payload_length > MAX_PAYLOAD_BYTES:
        await _skip(reader, data_length + payload_length)
        raise OversizedEvent(
            f"{header['type']} event too large ({data_length} bytes of data, {payload_length} of payload; "
            f"at most {MAX_DATA_BYTES} and {MAX_PAYLOAD_BYTES}): dropped"
        )
    if data_length:
        raw = await reader.readexactly(data_length)
        try:
            extra = json.loads(raw)
        except ValueError as error:
            raise ProtocolError(f"unreadable event data: {error}") from error
        if not isinstance(extra, dict):
            raise ProtocolError("event data is not a JSON object")
        data.update(extra)
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


class WakeService:
    """What every client shares: the encoder, the current keywords and the store watcher."""

    def __init__(
        self,
        store_dir: Path,
        model_path: Path,
        settings: DetectorSettings,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.store_dir = store_dir
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._store_version = store_version(store_dir)  # read before loading, so no change is missed
        self.spotter = Spotter(store_dir=store_dir, model_path=model_path, settings=settings)
        self.spotter.encoder = LockedEncoder(self.spotter.encoder)  # new_stream() hands this to every detector
        self.generation = 0  # bumped after each store swap; streams compare it between chunks
        self.clients: dict[asyncio.Task, WakeHandler] = {}  # open connections, awaited at shutdown

    @property
    def sample_rate(self) -> int:
        return self.spotter.sample_rate

    def admit(self, task: asyncio.Task, handler: WakeHandler) -> bool:
        """Count a new connection in, making room at the cap by closing the longest-idle one if it may be.

        False (the caller refuses it) when every open connection sent an event within
        ``EVICTABLE_IDLE_SECONDS``: those are clients at work, not ones holding a slot.
        """
        if len(self.clients) >= self.max_connections:
            idlest = min(self.clients.values(), key=lambda h: h.last_event)
            if time.monotonic() - idlest.last_event < EVICTABLE_IDLE_SECONDS:
                return False
            idlest.evict(f"{self.max_connections} connections open and it was the longest idle")
            del self.clients[idlest.task]
        self.clients[task] = handler
        return True

    @property
    def window_samples(self) -> int:
        return self.spotter.encoder.window_samples

    @property
    def names(self) -> list[str]:
        return self.spotter.store.names

    def resolve(self, names: list[str] | None) -> list[str] | None:
        """Requested names -> enrolled names (None: all of them); unknown ones are dropped."""
        if names is None:
            return None
        by_key = {keyword_key(n): n for n in self.spotter.store.keywords}
        return [by_key[keyword_key(n)] for n in names if keyword_key(n) in by_key]

    def keywords_for(self, names: list[str] | None) -> list[Keyword]:
        store = self.spotter.store  # one read: a swap in between cannot mix two stores
        wanted = None if names is None else {keyword_key(n) for n in names}
        return [k for k in store.keywords.values() if wanted is None or keyword_key(k.name) in wanted]

    def new_stream(self, names: list[str] | None) -> tuple[StreamingDetector, int]:
        """A detector over ``names`` (None: all) and the store generation it reflects."""
        generation = self.generation  # read before the store: a race only costs one extra refresh
        return self.spotter.new_stream(self.resolve(names)), generation

    def info(self) -> Info:
        """What ``describe`` answers: one wake model per keyword, with the language the user gave (else none).

        Why no language by default: an enrolled phrase is in whatever language the user spoke,
        which only they know (``kws set NAME --language TAG``); claiming "en" would be a guess.
        """
        encoder = self.spotter.encoder
        version, attribution = _about()
        models = [
            WakeModel(
                name=k.name,
                attribution=attribution,
                installed=True,
                description=f"{k.name} (enrolled from {k.takes} takes)",
                version=k.encoder_sha256[:12],
                languages=[k.language] if k.language else [],
                phrase=k.name,
            )
            for k in self.spotter.store.keywords.values()
        ]
        program = WakeProgram(
            name=PROGRAM,
            attribution=attribution,
            installed=True,
            description=f"Few-shot wake words enrolled on this device (encoder {encoder.sha256[:12]})",
            version=version,
            models=models,
        )
        return Info(wake=[program])

    async def watch_store(self, poll_seconds: float = POLL_SECONDS) -> None:
        """Poll the store's change marker; load a changed store and swap it in whole.

        A store that cannot be used (unreadable, or enrolled with another encoder) is
        refused with a log line and the previous keywords stay in service.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(poll_seconds)
            version = store_version(self.store_dir)
            if version == self._store_version:
                continue
            self._store_version = version
            try:
                store = await loop.run_in_executor(None, KeywordStore, self.store_dir)
                store.check_encoder(self.spotter.encoder.sha256)
            except Exception as error:  # whatever is wrong with the new store, the watcher must live on
                log.error("keyword store changed but cannot be used, keeping the previous keywords: %s", error)
                continue
            self.spotter.store = store
            self.generation += 1
            log.info("keyword store changed: listening for %s", ", ".join(store.names) or "nothing")


@dataclass
class _Stream:
    """One client's audio stream, from audio-start (or its first chunk) to audio-stop."""

    detector: StreamingDetector
    generation: int
    converter: PcmConverter | None = None
    detected: bool = False
    last_detection_s: float = -math.inf
    refused: set = field(default_factory=set)


class WakeHandler(AsyncEventHandler):
    """One client connection (see the module docstring for the events)."""

    def __init__(self, service: WakeService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.service = service
        peer = writer.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "local")
        self.names: list[str] | None = None  # as requested by detect; None: every keyword
        self.stream: _Stream | None = None
        self.last_event = time.monotonic()  # when the last complete event arrived (or the connection opened)
        self.task: asyncio.Task | None = None

    async def write_event(self, event: Event) -> None:
        """Send an event; a client that does not read it within the idle timeout raises TimeoutError."""
        async with asyncio.timeout(self.service.idle_timeout):
            await super().write_event(event)

    def evict(self, reason: str) -> None:
        """Close this connection from outside (its task is cancelled while it waits for an event)."""
        log.warning("client %s: closing its connection: %s", self.client, reason)
        self.task.cancel()

    async def run(self) -> None:
        """The library's loop, plus: garbage, lost and idle connections are logged, never raised."""
        self.task = asyncio.current_task()
        if not self.service.admit(self.task, self):
            await self._refuse()
            return
        log.info("client %s connected", self.client)
        self._is_running = True
        timeout = self.service.idle_timeout
        try:
            while self._is_running:
                try:
                    async with asyncio.timeout(timeout):
                        event = await read_event(self.reader)
                except ProtocolError as error:
                    log.warning("client %s: %s; closing its connection", self.client, error)
                    await self.write_event(Error(text=str(error), code="bad-event").event())
                    break
                except OversizedEvent as error:
                    log.warning("client %s: %s", self.client, error)
                    await self.write_event(Error(text=str(error), code="too-large").event())
                    continue
                except TimeoutError:
                    log.info("client %s: no complete event for %g s; closing its connection", self.client, timeout)
                    break
                self.last_event = time.monotonic()
                if event is None or not await self.handle_event(event):
                    break
                self.last_event = time.monotonic()  # a chunk's detector work is activity too
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            log.info("client %s: connection lost (%s)", self.client, type(error).__name__)
        except TimeoutError:
            log.info("client %s: not reading what we send for %g s; closing its connection", self.client, timeout)
        except Exception:
            log.exception("client %s: unexpected error; closing its connection", self.client)
        finally:
            log.info("client %s disconnected", self.client)
            if self.service.clients.get(self.task) is self:
                del self.service.clients[self.task]
            self.writer.close()

    async def _refuse(self) -> None:
        """Tell a connection over the cap why it is closed (without waiting on it for long), and close it."""
        limit = self.service.max_connections
        log.warning("client %s refused: %d connections open (--max-connections)", self.client, limit)
        text = f"too many connections ({limit} open); try again later"
        try:
            async with asyncio.timeout(1.0):
                await super().write_event(Error(text=text, code="too-many-connections").event())
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(self.service.info().event())
            elif Detect.is_type(event.type):
                await self._detect(Detect.from_event(event))
            elif AudioStart.is_type(event.type):
                await self._start(AudioStart.from_event(event))
            elif AudioChunk.is_type(event.type):
                await self._chunk(AudioChunk.from_event(event))
            elif AudioStop.is_type(event.type):
                await self._stop(AudioStop.from_event(event))
                return False  # as openWakeWord: one stream per connection
            else:
                log.debug("client %s: ignoring %s event", self.client, event.type)
        except (KeyError, TypeError, ValueError) as error:
            log.warning("client %s: bad %s event (%s)", self.client, event.type, error)
            await self.write_event(Error(text=f"bad {event.type} event: {error}", code="bad-event").event())
        return True

    async def _detect(self, detect: Detect) -> None:
        names = detect.names
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"'names' must be a list of strings, got {names!r}")
        names = names or None  # an empty list means "any", as in openWakeWord
        if names is not None:
            known = {keyword_key(k) for k in self.service.names}
            unknown = [n for n in names if keyword_key(n) not in known]
            if unknown:
                have = ", ".join(self.service.names) or "none"
                missing = ", ".join(map(repr, unknown))
                log.warning("client %s: no keyword %s enrolled (have: %s); ignoring", self.client, missing, have)
                if len(unknown) == len(names):  # it would listen for nothing: say so, in case nobody reads our log
                    text = f"no keyword {missing} enrolled (have: {have}); nothing fires until one is enrolled"
                    await self.write_event(Error(text=text, code="unknown-wake-word").event())
        log.info("client %s: listening for %s", self.client, ", ".join(names) if names else "every keyword")
        self.names = names
        if self.stream is not None:
            self.stream.generation = -1  # re-filter the keywords before the next chunk

    async def _start(self, start: AudioStart | None) -> None:
        self.stream = _Stream(*self.service.new_stream(self.names))
        if start is not None:
            log.info(
                "client %s: audio %s Hz, %s bytes, %s channels", self.client, start.rate, start.width, start.channels
            )
            await self._converter(start.rate, start.width, start.channels)

    async def _converter(self, rate: int, width: int, channels: int) -> PcmConverter | None:
        """The stream's converter for this format; a new one when the format changes; None if unusable."""
        stream = self.stream
        if stream.converter is not None and stream.converter.format == (rate, width, channels):
            return stream.converter
        try:
            stream.converter = PcmConverter(rate, width, channels, self.service.sample_rate)
        except AudioError as error:
            if (rate, width, channels) not in stream.refused:
                stream.refused.add((rate, width, channels))
                log.warning("client %s: refusing audio: %s", self.client, error)
                await self.write_event(Error(text=str(error), code="unsupported-audio-format").event())
            return None
        return stream.converter

    async def _chunk(self, chunk: AudioChunk) -> None:
        if self.stream is None:  # no audio-start: the chunk's own format starts the stream
            await self._start(None)
        converter = await self._converter(chunk.rate, chunk.width, chunk.channels)
        if converter is None:
            return
        loop = asyncio.get_running_loop()
        detections = await loop.run_in_executor(None, self._process, converter.pieces(chunk.audio))
        await self._send(detections, chunk.timestamp)

    async def _stop(self, stop: AudioStop) -> None:
        if self.stream is not None and self.stream.converter is not None:
            # The resampler's tail, then a window of silence: a word that ends right at
            # audio-stop still gets a full window before we answer not-detected.
            tail = self._tail(self.stream.converter)
            detections = await asyncio.get_running_loop().run_in_executor(None, self._process, tail)
            await self._send(detections, stop.timestamp)
        if self.stream is None or not self.stream.detected:
            await self.write_event(NotDetected().event())
            log.info("client %s: audio stopped, nothing detected", self.client)
        self.stream = None

    def _tail(self, converter: PcmConverter) -> Iterator[np.ndarray]:
        yield converter.flush()
        yield np.zeros(self.service.window_samples, np.float32)

    def _process(self, pieces: Iterable[np.ndarray]) -> list[KeywordDetection]:
        """Worker thread: this stream's keywords brought up to date, then audio -> detections.

        ``pieces`` is a generator, so the conversion of the audio runs here too, not in the event loop.
        """
        stream = self.stream
        self._refresh_keywords(stream)
        detections = []
        for samples in pieces:
            detections += stream.detector.process(samples)
        if detections:
            stream.detected = True
            stream.last_detection_s = stream.detector.time_s
        return detections

    def _refresh_keywords(self, stream: _Stream) -> None:
        """Apply a changed store (or detect names) between chunks, never during a refractory period.

        ``set_keywords`` restarts score smoothing and refractory state; waiting until no
        keyword fired within the refractory period means it cannot make one utterance fire
        twice, and a word in flight only loses one hop of smoothing, not its detection.
        """
        generation = self.service.generation  # read before the keywords: a race only costs one more refresh
        if stream.generation == generation:
            return
        if stream.detector.time_s - stream.last_detection_s < stream.detector.settings.refractory_seconds:
            return
        keywords = self.service.keywords_for(self.names)
        stream.generation = generation
        if keywords != stream.detector.keywords:
            stream.detector.set_keywords(keywords)
            log.info("client %s: now listening for %s", self.client, ", ".join(k.name for k in keywords) or "nothing")

    async def _send(self, detections: list[KeywordDetection], timestamp: int | None) -> None:
        for found in detections:
            # openWakeWord sends the timestamp (ms) of the chunk that completed the detection.
            ms = timestamp if timestamp is not None else round(found.time_s * 1000)
            await self.write_event(Detection(name=found.keyword, timestamp=ms).event())
            log.info(
                "client %s: detected %r at %.2f s (score %.3f)", self.client, found.keyword, found.time_s, found.score
            )


class _Announcement:
    """Zeroconf (mDNS) ``_wyoming._tcp`` service, as ``wyoming.zeroconf`` registers it, plus unregistering."""

    def __init__(self, zeroconf, info) -> None:
        self._zeroconf, self._info = zeroconf, info

    @classmethod
    async def start(cls, host: str, port: int) -> _Announcement | None:
        """Register the service; None (with a log line saying why) when it cannot be announced.

        A server bound to one address is announced only on that address's interface (one
        on 127.0.0.1 only to this machine); one bound to every address on every interface,
        at the address other machines reach it at.
        """
        try:
            from zeroconf import InterfaceChoice, IPVersion
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
        except ImportError:
            log.warning(
                "--zeroconf: the `zeroconf` package is not installed (it comes with the device extra: "
                "pip install -e '.[device]', or pip install zeroconf); not announcing"
            )
            return None
        try:
            interfaces: InterfaceChoice | list[str] = InterfaceChoice.All
            if host in ("", "0.0.0.0", "::"):  # find the address other machines reach us at
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect(("224.0.0.251", 1))
                    host = probe.getsockname()[0]
            else:
                host = socket.gethostbyname(host)
                interfaces = [host]
            name = f"{PROGRAM}-{socket.gethostname().split('.')[0]}"
            info = AsyncServiceInfo(
                "_wyoming._tcp.local.",
                f"{name}._wyoming._tcp.local.",
                addresses=[socket.inet_aton(host)],
                port=port,
            )
            zeroconf = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            await zeroconf.async_register_service(info)
        except Exception as error:  # optional: the server works without it
            log.warning("zeroconf announcement failed (%s); serving without it", error)
            return None
        log.info("announced %s on %s:%d via zeroconf", info.name, host, port)
        return cls(zeroconf, info)

    async def close(self) -> None:
        try:
            await self._zeroconf.async_unregister_service(self._info)
            await self._zeroconf.async_close()
        except Exception as error:
            log.warning("zeroconf: could not unregister cleanly (%s)", error)


async def _run(server: AsyncServer, uri: str, service: WakeService, zeroconf: bool) -> int:
    """Serve until SIGTERM or SIGINT; 0 on a clean stop, 1 if the address cannot be bound."""
    try:
        await server.start(partial(WakeHandler, service))
    except OSError as error:
        log.error("cannot listen on %s: %s", uri, error)
        return 1
    log.info("listening on %s for %s", uri, ", ".join(service.names) or "nothing yet (enroll with `kws enroll`)")
    stopping = asyncio.Event()

    def stop(number: signal.Signals) -> None:
        log.info("%s: stopping", number.name)
        stopping.set()

    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop, number)
    watcher = asyncio.create_task(service.watch_store())
    parsed = urlparse(uri)
    announcement = await _Announcement.start(parsed.hostname or "", parsed.port) if zeroconf else None
    await stopping.wait()
    watcher.cancel()
    if announcement is not None:
        await announcement.close()
    await server.stop()  # closes every connection; their loops end after the chunk in hand
    if service.clients:
        await asyncio.wait(list(service.clients), timeout=5)
    log.info("stopped")
    return 0


def _configure_logging(level: int) -> None:
    """Log lines with a time on a terminal; without one under systemd, whose journal adds its own."""
    time = "" if "JOURNAL_STREAM" in os.environ else "%(asctime)s "
    logging.basicConfig(level=level, format=time + "%(levelname)s %(name)s: %(message)s")


def serve(
    uri: str,
    store_dir: Path,
    model_path: Path,
    settings: DetectorSettings,
    zeroconf: bool = False,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> int:
    """Run the Wyoming server on ``uri`` (``tcp://HOST:PORT`` or ``unix://PATH``) until SIGTERM/SIGINT.

    Returns the exit status of ``kws --help``'s table: 0 after a clean stop, 1 when the
    model, the store or the address cannot be used, 2 for bad input (the URI, a limit, a
    store path that is not a folder); the log says why and what to do.
    """
    _configure_logging(logging.INFO)
    try:
        server = AsyncServer.from_uri(uri)
    except ValueError as error:
        log.error("bad --uri %r: %s", uri, error)
        return 2
    if isinstance(server, AsyncStdioServer):
        log.error("bad --uri %r: serve several clients over tcp://HOST:PORT or unix://PATH, not stdio", uri)
        return 2
    if not (idle_timeout > 0 and math.isfinite(idle_timeout)) or max_connections < 1:
        log.error(
            "--idle-timeout must be > 0 s and --max-connections >= 1, got %g and %d", idle_timeout, max_connections
        )
        return 2
    store_dir = Path(store_dir).expanduser()
    if store_dir.exists() and not store_dir.is_dir():
        log.error("--store %s is a file, not a folder: give the keyword store's folder", store_dir)
        return 2
    if zeroconf and urlparse(uri).scheme != "tcp":
        log.warning("--zeroconf announces tcp:// servers only; not announcing %s", uri)
        zeroconf = False
    try:
        service = WakeService(store_dir, Path(model_path).expanduser(), settings, idle_timeout, max_connections)
    except (ModelError, StoreError, NoInterpreterError, OSError) as error:
        log.error("cannot start: %s", error)
        return 1
    return asyncio.run(_run(server, uri, service, zeroconf))


def main(argv: list[str] | None = None) -> int:
    from device.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m device.wyoming_server", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=DEFAULT_URI, help=f"tcp://HOST:PORT or unix://PATH (default {DEFAULT_URI})")
    parser.add_argument("--store", type=Path, help="keyword store folder (default: from config, ~/.local/share/kws)")
    parser.add_argument("--model", type=Path, help="encoder .tflite (default: from config, $KWS_MODEL, shipped)")
    parser.add_argument("--config", type=Path, help="config.toml (default ~/.config/kws/config.toml if present)")
    parser.add_argument("--zeroconf", action="store_true", help="announce the server on the LAN (_wyoming._tcp)")
    _add_limit_options(parser)
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    if args.debug:
        _configure_logging(logging.DEBUG)
    settings = load_settings(args.config)
    store, model = args.store or settings.store, args.model or settings.model
    return serve(args.uri, store, model, settings.detector, args.zeroconf, args.idle_timeout, args.max_connections)


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    """``--idle-timeout`` and ``--max-connections`` (``kws serve`` has the same; a test keeps their defaults equal)."""
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="S",
        help=f"close a connection with no complete event for S seconds ({DEFAULT_IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"connections served at once; more close the longest-idle or are refused ({DEFAULT_MAX_CONNECTIONS})",
    )


if __name__ == "__main__":
    sys.exit(main())
