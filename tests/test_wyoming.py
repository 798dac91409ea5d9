"""The Wyoming wake-word server, end to end: a real server process driven by the wyoming client library.

One keyword ("hey toaster") is enrolled from espeak-ng takes of one voice; the test
streams come from another voice, with the keyword between other words, over noise.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wyoming", reason="the Wyoming server needs `pip install wyoming`")

from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event, async_read_event, async_write_event  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.wake import Detect  # noqa: E402

from device import Spotter  # noqa: E402
from device.about import package_version  # noqa: E402
from device.audio import read_wav, resample  # noqa: E402
from device.settings import default_model_path  # noqa: E402
from device.store import KeywordStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = default_model_path()  # $KWS_MODEL or firmware_models/encoder.tflite
RATE = 16000
KEYWORD = "hey toaster"

if not MODEL.is_file():
    pytest.skip(f"no encoder at {MODEL} (train and export one, or set KWS_MODEL)", allow_module_level=True)
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (it speaks the test words)", allow_module_level=True)


def _speak(folder: Path, text: str, voice: str = "en-us", speed: int = 150, pitch: int = 50) -> np.ndarray:
    path = folder / f"{voice}_{speed}_{pitch}_{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text], check=True)
    return read_wav(path, RATE)


def _scene(folder: Path, parts: list[str], voice: str, seed: int) -> np.ndarray:
    """The phrases in order with pauses between them, over quiet noise, as float32 at 16 kHz."""
    pause = np.zeros(int(0.3 * RATE), np.float32)
    pieces = [pause]
    for text in parts:
        pieces += [_speak(folder, text, voice), pause]
    audio = np.concatenate(pieces + [pause])
    noise = np.random.default_rng(seed).standard_normal(len(audio)).astype(np.float32)
    return audio + 0.003 * noise  # about -50 dBFS


def _pcm16(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2").tobytes()


def _as_48k_stereo(samples: np.ndarray) -> bytes:
    """16 kHz mono -> interleaved 48 kHz stereo 16-bit, the channels slightly different."""
    up = resample(samples, RATE, 48000)
    return _pcm16(np.stack([up, 0.9 * up], axis=1).reshape(-1))


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("speech")
    takes = []
    for i, (speed, pitch) in enumerate([(130, 40), (150, 50), (170, 60), (140, 70), (160, 30)]):
        path = folder / f"take{i + 1}.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", str(speed), "-p", str(pitch), "-w", str(path), KEYWORD], check=True
        )
        takes.append(path)
    return {
        "takes": takes,
        "keyword": _scene(folder, ["please listen", KEYWORD, "thank you very much"], "en-us+f3", 1),
        "other": _scene(folder, ["the weather is nice today", "and the coffee is warm"], "en-us+f3", 2),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory, audio) -> Path:
    folder = tmp_path_factory.mktemp("store")
    Spotter(store_dir=folder, model_path=MODEL).enroll(KEYWORD, audio["takes"])
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``python -m device.wyoming_server`` on a free loopback port, its log in a file."""

    def __init__(self, store: Path, log_path: Path, options: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "device.wyoming_server", "--uri", f"tcp://127.0.0.1:{self.port}"]
        command += ["--store", str(store), "--model", str(MODEL), *options]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start listening:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    running = Server(store, tmp_path_factory.mktemp("log") / "server.log")
    yield running
    running.stop()


async def _describe(port: int) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), 10)
        assert event is not None and Info.is_type(event.type), event
        return Info.from_event(event)


async def _events_until_closed(client: AsyncTcpClient) -> list[Event]:
    events = []
    while (event := await asyncio.wait_for(client.read_event(), 10)) is not None:
        events.append(event)
    return events


async def _stream(
    port: int,
    pcm: bytes,
    rate: int = RATE,
    width: int = 2,
    channels: int = 1,
    names: list[str] | None = None,
    seed: int = 0,
    before: tuple[Event, ...] = (),
) -> list[Event]:
    """detect, audio-start, the audio in random 20-100 ms chunks, audio-stop; every event sent back."""
    rng = np.random.default_rng(seed)
    frame = width * channels
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in before:
            await client.write_event(event)
        await client.write_event(Detect(names=names).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels, timestamp=0).event())
        position = 0
        while position < len(pcm):
            size = int(rng.integers(rate // 50, rate // 10 + 1)) * frame
            chunk = AudioChunk(
                rate, width, channels, pcm[position : position + size], timestamp=position // frame * 1000 // rate
            )
            await client.write_event(chunk.event())
            position += size
            await asyncio.sleep(0)  # let concurrent clients interleave
        await client.write_event(AudioStop().event())
        return await _events_until_closed(client)


def _types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


def test_describe_lists_the_enrolled_words(server):
    info = asyncio.run(_describe(server.port))
    (program,) = info.wake
    assert program.name == "fewshot-kws" and program.installed
    assert program.version == package_version() and program.attribution.name == "fewshot-kws"
    assert [(m.name, m.phrase, m.installed) for m in program.models] == [(KEYWORD, KEYWORD, True)]
    # Enrolled without --language: no language is claimed for it (it is whatever the user spoke).
    assert program.models[0].languages == [] and "5 takes" in program.models[0].description


def test_a_detect_naming_only_unknown_words_tells_the_client(server, audio):
    events = asyncio.run(_stream(server.port, _pcm16(audio["keyword"]), names=["hey jasper"]))
    assert _types(events) == ["error", "not-detected"], f"{events}\n{server.log()}"
    assert events[0].data["code"] == "unknown-wake-word"
    assert "'hey jasper'" in events[0].data["text"] and KEYWORD in events[0].data["text"]


def test_the_keyword_gives_one_detection(server, audio):
    # The name as Home Assistant or openWakeWord users may spell it, and one that is not enrolled.
    events = asyncio.run(_stream(server.port, _pcm16(audio["keyword"]), names=["hey_toaster", "no such word"]))
    assert _types(events) == ["detection"], f"{events}\n{server.log()}"
    assert events[0].data["name"] == KEYWORD
    assert 0 < events[0].data["timestamp"] <= len(audio["keyword"]) * 1000 // RATE


def test_other_words_give_not_detected(server, audio):
    events = asyncio.run(_stream(server.port, _pcm16(audio["other"])))
    assert _types(events) == ["not-detected"], f"{events}\n{server.log()}"


def test_two_clients_at_once_get_their_own_answers(server, audio):
    async def both():
        return await asyncio.gather(
            _stream(server.port, _as_48k_stereo(audio["keyword"]), rate=48000, channels=2, seed=1),
            _stream(server.port, _pcm16(audio["other"]), seed=2),
        )

    keyword_events, other_events = asyncio.run(both())
    assert [(e.type, e.data.get("name")) for e in keyword_events] == [("detection", KEYWORD)], server.log()
    assert _types(other_events) == ["not-detected"], server.log()


def test_bad_clients_leave_the_server_serving_the_others(server, audio):
    pcm = _pcm16(audio["keyword"])

    async def garbage_line() -> list[dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"this is not json\n")
        await writer.drain()
        events = []
        while (event := await asyncio.wait_for(async_read_event(reader), 10)) is not None:
            events.append(event)
        writer.close()
        return events

    async def leaves_mid_stream() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await async_write_event(AudioStart(rate=RATE, width=2, channels=1).event(), writer)
        await async_write_event(AudioChunk(RATE, 2, 1, pcm[: len(pcm) // 2]).event(), writer)
        writer.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 9')
        writer.close()  # mid-header, then mid-stream

    async def scenario():
        bad_format = AudioChunk(rate=16000, width=5, channels=1, audio=b"\0" * 100).event()
        no_rate = AudioChunk(rate=0, width=2, channels=1, audio=b"\0" * 100).event()
        results = await asyncio.gather(
            garbage_line(),
            leaves_mid_stream(),
            _stream(server.port, pcm, before=(bad_format, no_rate, bad_format)),
        )
        return results[0], results[2]

    garbage_events, format_events = asyncio.run(scenario())
    assert [(e.type, e.data.get("code")) for e in garbage_events] == [("error", "bad-event")]
    # Each unusable format is refused once, then the good audio on the same connection is served.
    assert [(e.type, e.data.get("code")) for e in format_events] == [
        ("error", "unsupported-audio-format"),
        ("error", "unsupported-audio-format"),
        ("detection", None),
    ], server.log()
    time.sleep(0.2)
    assert server.process.poll() is None, server.log()
    events = asyncio.run(_stream(server.port, pcm, seed=5))
    assert [(e.type, e.data.get("name")) for e in events] == [("detection", KEYWORD)], server.log()
    assert "Traceback" not in server.log()


def test_a_changed_store_is_picked_up_and_sigterm_stops_cleanly(store, audio, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    running = Server(copy, tmp_path / "server.log")
    try:
        assert [m.name for m in asyncio.run(_describe(running.port)).wake[0].models] == [KEYWORD]
        # Another keyword, enrolled by another process while the server runs (the takes of "hey toaster",
        # so the enrollment cannot fail on a weak model: only the store change matters here).
        Spotter(store_dir=copy, model_path=MODEL).enroll("second word", audio["takes"], language="de")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            models = asyncio.run(_describe(running.port)).wake[0].models
            names = [m.name for m in models]
            if "second word" in names:
                break
            time.sleep(0.3)
        assert sorted(names) == sorted([KEYWORD, "second word"]), running.log()
        assert {m.name: m.languages for m in models} == {KEYWORD: [], "second word": ["de"]}
        # A store made with another encoder is refused, and the server keeps the keywords it has.
        changed = KeywordStore(copy)
        changed.keywords["second word"].encoder_sha256 = "0" * 64
        changed.save()
        deadline = time.monotonic() + 10
        while "cannot be used" not in running.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "were enrolled with a different encoder" in running.log()
        assert sorted(m.name for m in asyncio.run(_describe(running.port)).wake[0].models) == sorted(names)
    finally:
        status = running.stop()
    assert status == 0, running.log()
    assert "SIGTERM: stopping" in running.log() and "stopped" in running.log()


def test_48k_stereo_chunks_detect_like_16k_mono(store, audio):
    """The per-client conversion (bytes -> mono float at 16 kHz) changes nothing that matters."""
    from device.wyoming_server import PcmConverter

    spotter = Spotter(store_dir=store, model_path=MODEL)

    def run(pcm: bytes, rate: int, channels: int, seed: int) -> list:
        converter, detector = PcmConverter(rate, 2, channels, RATE), spotter.new_stream()
        rng, position, found = np.random.default_rng(seed), 0, []
        while position < len(pcm):
            size = int(rng.integers(rate // 50, rate // 10)) * 2 * channels + int(rng.integers(0, 4))  # mid-frame cuts
            found += detector.process(converter.convert(pcm[position : position + size]))
            position += size
        found += detector.process(np.concatenate([converter.flush(), np.zeros(RATE, np.float32)]))
        return found

    mono = run(_pcm16(audio["keyword"]), RATE, 1, 3)
    stereo = run(_as_48k_stereo(audio["keyword"]), 48000, 2, 4)
    assert [d.keyword for d in mono] == [d.keyword for d in stereo] == [KEYWORD]
    # The event is the first 0.1 s hop over the threshold; with the threshold close to the word's peak score,
    # resampling's tiny changes can move that crossing by a hop or two, never to another word.
    assert abs(mono[0].time_s - stereo[0].time_s) <= 0.25


def _peak_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


async def _send_raw(writer: asyncio.StreamWriter, header: dict, payload: bytes) -> None:
    writer.write(json.dumps(header).encode() + b"\n")
    view = memoryview(payload)
    for start in range(0, len(view), 1 << 20):
        writer.write(view[start : start + (1 << 20)])
        await writer.drain()


def test_a_chunk_over_the_cap_is_dropped_with_an_error_and_memory_stays_bounded(server, audio):
    """32 MiB in one audio-chunk is read past, not held; the largest accepted chunk (256 KiB of 8-bit audio at
    4 kHz: 65 s at the model's rate) is served; then the keyword on the same connection is still detected."""
    from device.wyoming_server import MAX_PAYLOAD_BYTES

    pcm = _pcm16(audio["keyword"])

    async def scenario() -> list[Event]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await async_write_event(AudioStart(rate=RATE, width=2, channels=1).event(), writer)
        data = {"rate": RATE, "width": 2, "channels": 1}
        await _send_raw(writer, {"type": "audio-chunk", "data": data, "payload_length": 32 << 20}, bytes(32 << 20))
        largest = np.full(MAX_PAYLOAD_BYTES, 128, np.uint8).tobytes()  # 8-bit silence
        await async_write_event(AudioChunk(rate=4000, width=1, channels=1, audio=largest).event(), writer)
        for start in range(0, len(pcm), 3200):
            await async_write_event(AudioChunk(RATE, 2, 1, pcm[start : start + 3200]).event(), writer)
        await async_write_event(AudioStop().event(), writer)
        events = []
        while (event := await asyncio.wait_for(async_read_event(reader), 20)) is not None:
            events.append(event)
        writer.close()
        return events

    events = asyncio.run(scenario())
    assert [(e.type, e.data.get("code") or e.data.get("name")) for e in events] == [
        ("error", "too-large"),
        ("detection", KEYWORD),
    ], server.log()
    assert "audio-chunk event too large" in server.log()
    assert _peak_mb(server.process.pid) < 120, server.log()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> list[Event]:
    """The events until the server closes the connection (TimeoutError if it does not within ``seconds``)."""
    events = []
    async with asyncio.timeout(seconds):
        while (event := await async_read_event(reader)) is not None:
            events.append(event)
    return events


def test_idle_stalled_and_surplus_connections_are_closed(store, tmp_path):
    """--idle-timeout 1.5 --max-connections 2: an idle and a half-sent connection are closed; a third is
    refused while both are fresh; once they have idled for over a second, a new client is served instead."""
    running = Server(store, tmp_path / "server.log", ("--idle-timeout", "1.5", "--max-connections", "2"))

    async def scenario() -> None:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", running.port)
        await asyncio.sleep(0.05)
        half_reader, half_writer = await asyncio.open_connection("127.0.0.1", running.port)
        half_writer.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, ')
        half_writer.write(b'"payload_length": 3200}\n' + bytes(100))  # 100 of the 3200 bytes, then nothing
        await half_writer.drain()
        await asyncio.sleep(0.1)
        surplus_reader, surplus_writer = await asyncio.open_connection("127.0.0.1", running.port)
        refused = await _closed_within(surplus_reader, 3)
        assert [(e.type, e.data.get("code")) for e in refused] == [("error", "too-many-connections")]
        await asyncio.sleep(1.0)  # both held connections now idle for over a second
        info = await asyncio.wait_for(_describe(running.port), 5)  # makes room by closing the idlest one
        assert [m.name for m in info.wake[0].models] == [KEYWORD]
        assert await _closed_within(idle_reader, 0.5) == []  # the one evicted
        assert await _closed_within(half_reader, 2.0) == []  # the stalled event timed out
        fresh_reader, fresh_writer = await asyncio.open_connection("127.0.0.1", running.port)
        began = time.monotonic()
        assert await _closed_within(fresh_reader, 4.0) == []  # sends nothing: closed after the idle timeout
        assert 1.0 < time.monotonic() - began < 4.0
        for writer in (idle_writer, half_writer, surplus_writer, fresh_writer):
            writer.close()

    try:
        asyncio.run(scenario())
        time.sleep(0.2)
        assert running.process.poll() is None
    finally:
        status = running.stop()
    log = running.log()
    assert status == 0, log
    assert "refused: 2 connections open (--max-connections)" in log
    assert "closing its connection: 2 connections open and it was the longest idle" in log
    assert log.count("no complete event for 1.5 s; closing its connection") == 2, log
    assert "Traceback" not in log


def test_the_bench_measures_kws_serve_under_its_limits(store, tmp_path):
    """trainer.bench's row: a real `kws serve`, the two chunks, then idle connections (200 here, 1,500 in the bench)."""
    from trainer.bench import server_limits_bench

    limits = server_limits_bench(MODEL, store, tmp_path, connections=200)
    assert limits.chunk_events == "error(too-large), not-detected", limits
    assert limits.chunk_peak_mb < 120 and limits.flood_fds < 100, limits
    assert limits.served_s < 5, limits
