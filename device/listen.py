"""``kws listen``: the always-on daemon, microphone in, keyword events out.

Why it is built this way:

* The audio callback (PortAudio's thread) only copies blocks into a queue; the
  main thread runs the detector, so a slow encoder run never stalls the device.
* A microphone can vanish (USB unplugged, Bluetooth dropped) and come back. An
  error, a stream that stops, or no audio for a few seconds counts as lost: the
  stream is closed and reopened with exponential back-off (0.5 s doubling to
  30 s), forever, and the daemon says so when the device is back.
* The keyword store can change under a running daemon (``kws enroll`` in another
  shell): its version is polled every ~2 s and the detector's keyword list is
  swapped in place, without restarting the audio stream.
* SIGINT/SIGTERM stop it cleanly (exit 0) so systemd and Ctrl-C are both fine.

Events go to stdout, one JSON object per line with ``--json``
(``{"keyword", "time_s", "score", "timestamp"}``), a human line otherwise; logs go
to stderr. ``--on-detect CMD`` runs a shell command per event without waiting
for it, with ``KWS_KEYWORD``, ``KWS_SCORE`` and ``KWS_TIME`` in its environment.

The hooks are bounded, because a daemon runs for months and a hook can hang (a
network call, a lock): at most ``max_hooks`` (4) run at once, and an event that
finds them all running is logged and its hook skipped (the event itself is still
printed); finished hooks are reaped as the daemon goes. Each hook is its own process
group, so on exit the ones still running, with whatever they started, get SIGTERM
and, ``hook_grace_seconds`` (2 s) later, SIGKILL: nothing is left behind a stopped
daemon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from device.audio import AudioError, Resampler
from device.clips import DEFAULT_MARGIN, DEFAULT_MAX_CLIPS, ClipSaver
from device.detector import Detection, DetectorSettings
from device.microphone import (
    BLOCK_SECONDS,
    MicrophoneError,
    PortAudioMissingError,
    close_quietly,
    fake_input_path,
    open_input_stream,
)
from device.spotter import Spotter
from device.store import KeywordStore, StoreError, store_version

log = logging.getLogger("kws.listen")

StreamOpener = Callable[..., tuple[Any, int]]  # open_input_stream(callback, rate, device, block_seconds, refresh=)


@dataclass
class ListenOptions:
    device: int | str | None = None
    on_detect: str | None = None
    json: bool = False
    block_seconds: float = BLOCK_SECONDS
    reload_seconds: float = 2.0  # how often the store's version is checked
    stall_seconds: float = 3.0  # no audio for this long: the device is gone
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_seconds: float = 10.0  # a stream that ran this long resets the back-off
    queue_seconds: float = 30.0  # audio buffered between the callback and the detector before dropping
    max_hooks: int = 4  # --on-detect commands running at once; an event beyond that skips its hook
    hook_grace_seconds: float = 2.0  # on exit: SIGTERM to running hooks, SIGKILL after this long
    debug: bool = False  # print live scores that come within DEBUG_MARGIN of their threshold to stderr
    save_dir: Path | None = None  # --save: keep clips of detections and near misses here (device.clips)
    save_margin: float = DEFAULT_MARGIN  # a near miss scores within this under its threshold
    save_max: int = DEFAULT_MAX_CLIPS  # the newest clips kept in save_dir


# `kws listen --debug` prints a hop's score when it is at least its threshold minus this: near misses, not the floor.
DEBUG_MARGIN = 0.2


def describe_keywords(keywords: list, thresholds: Sequence[float]) -> str:
    """Each keyword with the threshold this run uses (its sensitivity applied) and its prototype count."""
    if not keywords:
        return "none"
    return ", ".join(
        f"{k.name!r} (threshold {t:.3f}, {len(k.prototypes)} prototype{'' if len(k.prototypes) == 1 else 's'})"
        for k, t in zip(keywords, thresholds, strict=True)
    )


class Listener:
    """Runs one spotter on the microphone until stopped; see the module docstring."""

    def __init__(
        self,
        spotter: Spotter,
        options: ListenOptions | None = None,
        out: TextIO | None = None,
        opener: StreamOpener = open_input_stream,
    ) -> None:
        self.spotter = spotter
        self.options = options or ListenOptions()
        self.out = out or sys.stdout
        self._opener = opener
        self._stop = threading.Event()
        self._stop_reason = ""
        rate = spotter.sample_rate
        self._queue: queue.Queue[np.ndarray] = queue.Queue(
            maxsize=max(1, round(self.options.queue_seconds / self.options.block_seconds))
        )
        self._dropped = 0  # blocks the callback could not queue (written by the audio thread)
        self._dropped_reported = 0
        self._last_audio = 0.0
        self._rate = rate
        self.saver = (
            ClipSaver(
                self.options.save_dir,
                rate,
                self.options.save_margin,
                self.options.save_max,
                refractory_seconds=spotter.settings.refractory_seconds,
            )
            if self.options.save_dir is not None
            else None
        )
        watching = self.options.debug or self.saver is not None
        self.detector = spotter.new_stream(on_hop=self._on_hop if watching else None)
        self._time_offset = 0.0  # stream time before the last reconnect, so event times keep increasing
        self._store_version = store_version(spotter.store.folder)
        self._children: list[subprocess.Popen] = []
        self.events: list[dict] = []  # every event emitted, for embedding programs and tests
        self.reconnects = 0
        self._ever_opened = False

    # -- control ---------------------------------------------------------------------------------

    def stop(self, reason: str = "requested") -> None:
        """Ask the loop to finish (thread-safe; signal handlers call this)."""
        self._stop_reason = reason
        self._stop.set()

    def _install_signals(self) -> dict:
        previous = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, lambda n, _frame: self.stop(signal.Signals(n).name))
        return previous

    # -- main loop -------------------------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Listen until SIGINT/SIGTERM or :meth:`stop`; return the exit code (0)."""
        self._log_startup()
        previous = self._install_signals() if install_signals else {}
        try:
            self._loop()
        finally:
            if self.saver is not None:
                self.saver.flush()  # the clips still waiting for their last half second
            self._stop_hooks()
            for number, handler in previous.items():
                signal.signal(number, handler)
        log.info("stopped (%s)", self._stop_reason or "done")
        return 0

    def _log_startup(self) -> None:
        encoder = self.spotter.encoder
        m = encoder.manifest
        log.info(
            "model %s (%s, sha256 %s..., %.2f s window, %d-dim embeddings), runtime %s",
            encoder.model_path,
            m.name,
            m.sha256[:12],
            m.window_seconds,
            m.embedding_size,
            encoder.runtime,
        )
        log.info(
            "store %s: keywords %s",
            self.spotter.store.folder,
            describe_keywords(self.detector.keywords, self.detector.thresholds),
        )
        if not self.detector.keywords:
            log.warning("no keywords enrolled yet: enroll one with `kws enroll NAME`; it is picked up without restart")
        if fake_input_path():
            log.info("input: %s (KWS_FAKE_INPUT test hook, not a microphone)", fake_input_path())

    def _loop(self) -> None:
        delay = self.options.backoff_initial
        lost_since: float | None = None
        while not self._stop.is_set():
            retrying = lost_since is not None
            try:
                stream, rate = self._opener(
                    self._callback, self._rate, self.options.device, self.options.block_seconds, refresh=retrying
                )
            except PortAudioMissingError:
                raise
            except (MicrophoneError, AudioError, OSError) as error:
                if lost_since is None:
                    lost_since = time.monotonic()
                log.warning("cannot open the microphone (%s); retrying in %g s", error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.options.backoff_max)
                continue
            device = self.options.device if self.options.device is not None else "default"
            if lost_since is None:
                log.info(
                    "microphone opened: device %s, %d Hz, %.0f ms blocks",
                    device,
                    rate,
                    1000 * self.options.block_seconds,
                )
            else:
                waited = time.monotonic() - lost_since
                state = "is back" if self._ever_opened else "opened"
                log.info("microphone %s after %.1f s: device %s, %d Hz", state, waited, device, rate)
            self._ever_opened = True
            lost_since = None
            opened_at = time.monotonic()
            resampler = Resampler(rate, self._rate) if rate != self._rate else None
            try:
                reason = self._pump(stream, resampler)
            except (MicrophoneError, OSError) as error:
                reason = str(error)
            except Exception as error:  # sounddevice.PortAudioError and friends from a dying stream
                if type(error).__name__ != "PortAudioError":
                    raise
                reason = str(error)
            finally:
                close_quietly(stream)
            if self._stop.is_set():
                break
            self.reconnects += 1
            lost_since = time.monotonic()
            if lost_since - opened_at >= self.options.stable_seconds:
                delay = self.options.backoff_initial  # it worked for a while: a fresh loss, not a flapping device
            log.warning("microphone lost (%s); reopening in %g s", reason, delay)
            self._time_offset += self.detector.time_s
            self.detector.reset()
            if self.saver is not None:
                self.saver.reset(self._time_offset)
            self._drain()
            self._stop.wait(delay)
            delay = min(delay * 2, self.options.backoff_max)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: copy and hand over, nothing else."""
        self._last_audio = time.monotonic()
        if status:
            log.debug("audio status: %s", status)
        try:
            self._queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self._dropped += 1

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _pump(self, stream: Any, resampler: Resampler | None) -> str:
        """Feed the detector until stopped (returns "") or the stream is lost (returns why)."""
        self._last_audio = time.monotonic()
        next_reload = time.monotonic() + self.options.reload_seconds
        while not self._stop.is_set():
            try:
                block = self._queue.get(timeout=0.2)
            except queue.Empty:
                if not stream.active:
                    return "the stream stopped"
                silent_for = time.monotonic() - self._last_audio
                if silent_for > self.options.stall_seconds:
                    return f"no audio for {silent_for:.1f} s"
                block = None
            if block is not None:
                samples = resampler.process(block) if resampler else block
                for detection in self.detector.process(samples):
                    self._emit(detection)
                if self.saver is not None:
                    self.saver.feed(samples)
            if self._dropped != self._dropped_reported:
                log.warning("detector fell behind: dropped %d audio blocks", self._dropped - self._dropped_reported)
                self._dropped_reported = self._dropped
            now = time.monotonic()
            if now >= next_reload:
                next_reload = now + self.options.reload_seconds
                self._maybe_reload()
                self._reap()
        return ""

    # -- store reload ----------------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        folder = self.spotter.store.folder
        version = store_version(folder)
        if version == self._store_version:
            return
        self._store_version = version
        try:
            store = KeywordStore(folder)
            store.check_encoder(self.spotter.encoder.sha256)
        except StoreError as error:
            log.error("keyword store changed but cannot be used (%s); keeping the previous keywords", error)
            return
        self.spotter.store = store
        keywords = list(store.keywords.values())
        self.detector.set_keywords(keywords)
        log.info(
            "keyword store changed: keywords %s",
            describe_keywords(keywords, self.detector.thresholds),
        )

    # -- events ----------------------------------------------------------------------------------

    def _on_hop(self, now: float, scores: np.ndarray, thresholds: np.ndarray) -> None:
        """Every detector hop: ``--debug`` lines and ``--save`` near misses."""
        if self.options.debug:
            self._debug_hop(now, scores, thresholds)
        if self.saver is not None:
            self.saver.hop(now, [k.name for k in self.detector.keywords], scores, thresholds)

    def _debug_hop(self, now: float, scores: np.ndarray, thresholds: np.ndarray) -> None:
        """``--debug``: one stderr line per keyword scoring within ``DEBUG_MARGIN`` of its threshold this hop."""
        for keyword, score, threshold in zip(self.detector.keywords, scores, thresholds, strict=True):
            if score >= threshold - DEBUG_MARGIN:
                mark = "  PASS" if score >= threshold else ""
                print(
                    f"debug  t={self._time_offset + now:.2f} s  {keyword.name!r}  score {score:.3f}  "
                    f"threshold {threshold:.3f}{mark}",
                    file=sys.stderr,
                    flush=True,
                )

    def _emit(self, detection: Detection) -> None:
        event = {
            "keyword": detection.keyword,
            "time_s": round(self._time_offset + detection.time_s, 3),
            "score": round(detection.score, 4),
            "timestamp": round(time.time(), 3),
        }
        self.events.append(event)
        if self.saver is not None:
            index = [k.name for k in self.detector.keywords].index(detection.keyword)
            self.saver.detection(
                detection.keyword, detection.score, float(self.detector.thresholds[index]), detection.time_s
            )
        if self.options.json:
            line = json.dumps(event)
        else:
            clock = time.strftime("%H:%M:%S", time.localtime(event["timestamp"]))
            line = f"{clock}  detected {event['keyword']!r}  score {event['score']:.3f}  (t={event['time_s']:.2f} s)"
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.stop("stdout closed")
            return
        if self.options.on_detect:
            self._run_hook(event)

    def _run_hook(self, event: dict) -> None:
        """Start the --on-detect command for ``event`` unless ``max_hooks`` of them are still running."""
        self._reap()
        if len(self._children) >= self.options.max_hooks:
            log.warning(
                "--on-detect: %d commands still running; skipping the one for %r at %.2f s",
                len(self._children),
                event["keyword"],
                event["time_s"],
            )
            return
        env = dict(
            os.environ,
            KWS_KEYWORD=event["keyword"],
            KWS_SCORE=f"{event['score']:.4f}",
            KWS_TIME=f"{event['time_s']:.3f}",
        )
        try:
            # Its own process group (session): on exit killpg reaches what the shell started too.
            self._children.append(subprocess.Popen(self.options.on_detect, shell=True, env=env, start_new_session=True))
        except OSError as error:
            log.error("--on-detect command could not start: %s", error)

    def _reap(self) -> None:
        running = []
        for child in self._children:
            code = child.poll()
            if code is None:
                running.append(child)
            elif code != 0:
                log.warning("--on-detect command exited with status %d", code)
        self._children = running

    def _stop_hooks(self) -> None:
        """SIGTERM the process groups of hooks still running, SIGKILL those left after the grace period; reap all."""
        self._reap()
        if not self._children:
            return
        log.info("stopping %d --on-detect commands still running", len(self._children))
        for child in self._children:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + self.options.hook_grace_seconds
        for child in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.0, deadline - time.monotonic()))
            # Also after the shell exited: what it started may still run in its group (killpg then
            # reaches them; a group with no process left is simply gone).
            _signal_group(child, signal.SIGKILL)
            child.wait()
        self._children = []


def _signal_group(child: subprocess.Popen, number: signal.Signals) -> None:
    """Send ``number`` to the hook's process group (its pid: it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, number)


def listen(
    store_dir: Path, model_path: Path, settings: DetectorSettings, options: ListenOptions, out: TextIO | None = None
) -> int:
    """Build the spotter (refusing a store made by another encoder) and run the daemon."""
    spotter = Spotter(store_dir, model_path, settings)
    return Listener(spotter, options, out).run()
