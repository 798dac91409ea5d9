"""EfficientWord-Net, the published few-shot hotword engine, as an evaluation embedder (the peer).

EfficientWord-Net (PyPI ``efficientword-net`` 1.0.5, Apache-2.0) enrolls a hotword from a few
recordings and matches 1.5 s windows against them with a ResNet-50 trained with ArcFace loss.
It lives in its own virtual environment (``scripts/install_peer.sh``, ``.eval_venvs/efficientword``)
so none of its dependencies mix with ours; this module is both sides of that boundary:

- in our venv, :func:`embed_clips` writes the clips to a temporary ``.npz``, runs this same file
  with the peer venv's Python (``python -I peer.py embed``; isolated, so nothing of ours is on
  its path), one worker process per core, one ONNX thread each, and reads the embeddings back;
  :func:`measure_costs` times both models per window and per second of audio;
- in the peer venv (``__main__``), only the standard library, numpy and the package itself are
  imported.

Preprocessing is the package's own, exactly as ``eff_word_net.generate_reference`` builds a
hotword reference from a recording: the float32 [-1, 1] clip at 16 kHz, ``fixPaddingIssues``
(strip leading/trailing exact zeros; crop a random 1.5 s if longer, else zero-pad to 1.5 s at a
random offset), then ``audioToVector`` (log filterbank: 64 mels, 25 ms frames every 10 ms,
512-point FFT, no pre-emphasis or window -> ``[1, 1, 149, 64]`` -> ONNX -> 2048-dim, already unit
length). The random offset comes from Python's ``random``; it is seeded with the CRC-32 of the
clip's samples, so a clip embeds the same way in every run and every worker. Support and
queries are all embedded this way (a query here is a clip, as a reference recording is);
prototype = mean of the support embeddings, cosine, as for every method. The package itself
scores a window by the *best* cosine over the reference embeddings, not their mean.

The harness hands over 16 kHz audio as decoded by ``trainer.pipeline.load_audio``; the package
would resample an 8 kHz FSDD file by linear interpolation instead. Same audio for every method
was the rule chosen here.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_LABEL = "EfficientWord-Net"
PEER_PACKAGE = "efficientword-net"
PEER_VERSION = "1.0.5"
# the model Resnet50_Arc_loss loads (use_quantized_model is fixed to False; the qint8 file is never used)
PEER_MODEL_FILE = "models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"
PEER_WINDOW_SECONDS = 1.5
PEER_HOP_SECONDS = 0.75  # its mic demo and `single_word_test` slide the 1.5 s window by 0.75 s
PEER_EMBEDDING_SIZE = 2048
RATE = 16000
README_FIGURES = (
    "EfficientWord-Net in the same README (trimmed and centred in 1.5 s there): FSDD 5-shot same 98.1, cross 79.2; "
    "SC 1/3/5-shot 75.6/88.7/91.4"
)
METHOD_NOTE = (
    f"{PEER_LABEL}: every clip (support and query) preprocessed as the package builds a hotword reference "
    "(`fixPaddingIssues`: edge zeros stripped, zero-padded at a random offset or randomly cropped to 1.5 s, "
    "seeded per clip; 64 log filterbanks) -> its ResNet-50 ArcFace ONNX model -> 2048-dim; prototype = mean, "
    "cosine, like every method (its own engine takes the best cosine over the reference takes)"
)


# -----------------------------------------------------------------------------------------------
# our side
# -----------------------------------------------------------------------------------------------


def default_venv() -> Path:
    """``$KWS_PEER_VENV`` or ``.eval_venvs/efficientword`` in the checkout (what ``make install-peer`` makes)."""
    return Path(os.environ.get("KWS_PEER_VENV", REPO_ROOT / ".eval_venvs" / "efficientword"))


def _python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def model_file(venv: str | Path) -> Path | None:
    """The ONNX model the package loads, inside the venv; None when absent."""
    found = sorted(Path(venv).glob(f"lib/python*/site-packages/eff_word_net/{PEER_MODEL_FILE}"))
    return found[0] if found else None


def unavailable(venv: str | Path | None = None) -> str | None:
    """Why the peer cannot run (one line), or None when its venv and model are in place. No subprocess."""
    venv = Path(venv) if venv is not None else default_venv()
    if not _python(venv).is_file():
        return f"no EfficientWord-Net venv at {venv} (make install-peer)"
    if model_file(venv) is None:
        return f"{venv} has no eff_word_net/{PEER_MODEL_FILE} (make install-peer)"
    return None


class PeerError(RuntimeError):
    """The peer's worker process failed."""


def _centred(samples: np.ndarray) -> np.ndarray:
    """Our own preprocessing instead of the package's: trimmed, centred in 1.5 s, dithered (diagnostics only)."""
    from device.vad import trim_silence
    from device.windowing import centre_in_window

    return centre_in_window(trim_silence(samples, RATE), int(PEER_WINDOW_SECONDS * RATE))


def _run_workers(venv: Path, jobs: list[list[str]], scratch: Path, progress) -> None:
    """Start every worker, relay their ``done N`` lines to ``progress(delta)``, wait, raise on failure."""
    script = str(Path(__file__).resolve())
    procs, readers = [], []

    def relay(stream) -> None:
        seen = 0
        for line in stream:
            if line.startswith("done "):
                count = int(line.split()[1])
                progress(count - seen)
                seen = count

    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(scratch / f"worker{w}.log", "w+b")) for w in range(len(jobs))]
        for job, log in zip(jobs, logs, strict=True):
            proc = subprocess.Popen(
                [str(_python(venv)), "-I", script, *job], stdout=subprocess.PIPE, stderr=log, text=True, cwd="/"
            )
            reader = threading.Thread(target=relay, args=(proc.stdout,), daemon=True)
            reader.start()
            procs.append(proc)
            readers.append(reader)
        try:
            for proc, reader in zip(procs, readers, strict=True):
                proc.wait()
                reader.join()
        finally:  # interrupted: stop the workers this call started
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for proc, log in zip(procs, logs, strict=True):
            if proc.returncode != 0:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
                raise PeerError(f"EfficientWord-Net worker exited {proc.returncode}: " + " | ".join(tail))


def embed_clips(
    venv: str | Path,
    audio: Sequence[np.ndarray],
    workers: int = 0,
    desc: str = "",
    prep: str = "package",
) -> np.ndarray:
    """``[N, 2048]`` unit embeddings, the package's preprocessing, ``workers`` processes (0: every core).

    ``prep="centred"`` swaps in our trim-and-centre (what the teacher README's peer figures used) to
    tell preprocessing apart from the model; the harness always uses ``"package"``.
    """
    from tqdm import tqdm

    venv = Path(venv)
    reason = unavailable(venv)
    if reason:
        raise PeerError(reason)
    if prep not in ("package", "centred"):
        raise ValueError(f"prep must be package or centred, got {prep!r}")
    clips = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audio]
    if prep == "centred":
        clips = [_centred(a) for a in clips]
    if not clips:
        return np.zeros((0, PEER_EMBEDDING_SIZE), np.float32)
    workers = max(1, min(workers or os.cpu_count() or 1, len(clips) // 8 or 1))
    bounds = np.linspace(0, len(clips), workers + 1).round().astype(int)
    lock = threading.Lock()
    with (
        tempfile.TemporaryDirectory(prefix="kws_peer_") as scratch,
        tqdm(total=len(clips), desc=desc or f"embedding ({PEER_LABEL})", unit="clip", leave=False) as bar,
    ):
        jobs, outputs = [], []
        for w in range(workers):
            part = clips[bounds[w] : bounds[w + 1]]
            offsets = np.cumsum([0, *(len(a) for a in part)]).astype(np.int64)
            source, target = Path(scratch) / f"in{w}.npz", Path(scratch) / f"out{w}.npy"
            np.savez(source, audio=np.concatenate(part), offsets=offsets)
            jobs.append(["embed", str(source), str(target)])
            outputs.append(target)

        def progress(delta: int) -> None:
            with lock:
                bar.update(delta)

        _run_workers(venv, jobs, Path(scratch), progress)
        rows = np.concatenate([np.load(path) for path in outputs])
    if rows.shape != (len(clips), PEER_EMBEDDING_SIZE):
        raise PeerError(f"EfficientWord-Net returned {rows.shape}, expected {(len(clips), PEER_EMBEDDING_SIZE)}")
    return rows.astype(np.float32)


class PeerEmbedder:
    """``embed(samples) -> unit vector`` for one clip at a time (a process start per call: use :func:`embed_clips`)."""

    def __init__(self, venv: str | Path) -> None:
        self.venv = Path(venv)
        reason = unavailable(self.venv)
        if reason:
            raise PeerError(reason)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        return embed_clips(self.venv, [samples], workers=1)[0]


def _ours_costs(model_path: Path, runs: int) -> dict:
    """Our encoder as the detector runs it: one thread, one window per hop, plus the streaming log-mel frontend."""
    from device.detector import DetectorSettings
    from device.encoder import Encoder
    from device.frontend import LogMelStream, log_mel

    encoder = Encoder(model_path, num_threads=1)
    config = encoder.manifest.frontend
    rng = np.random.default_rng(0)
    frames = log_mel((0.05 * rng.standard_normal(encoder.window_samples)).astype(np.float32), config)
    frames = frames[-encoder.window_frames :]
    for _ in range(10):
        encoder.embed_frames(frames)
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.thread_time()
        encoder.embed_frames(frames)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    seconds = 30.0
    audio = (0.05 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    chunk = int(0.1 * RATE)
    LogMelStream(config).feed(audio[: 10 * chunk])  # warm-up
    stream = LogMelStream(config)
    c = time.thread_time()
    for start in range(0, len(audio), chunk):
        stream.feed(audio[start : start + chunk])
    frontend = (time.thread_time() - c) / seconds
    figures = encoder.manifest.figures
    return {
        "window_seconds": encoder.window_samples / RATE,
        "hop_seconds": DetectorSettings().hop_seconds,
        "window_wall_s": float(np.median(wall)),
        "window_cpu_s": float(np.median(cpu)),
        "frontend_cpu_s_per_audio_s": frontend,
        "model_bytes": model_path.stat().st_size,
        "parameters": figures.get("parameters"),
        "macs_per_window": figures.get("macs_per_window"),
    }


def measure_costs(model_path: str | Path, venv: str | Path | None = None, runs: int = 50) -> dict:
    """Compute per window and per second of audio (one thread) and model bytes: ours, the peer, and ratios.

    Per second of audio, each runs as it streams: ours one encoder window per 0.1 s hop plus the
    incremental frontend; the peer one 1.5 s window (features and network) per 0.75 s, as its
    mic demo does. CPU times are the calling thread's (both runtimes run one-thread inference on
    it), so the training job sharing this machine inflates them less than wall times.
    """
    venv = Path(venv) if venv is not None else default_venv()
    reason = unavailable(venv)
    if reason:
        raise PeerError(reason)
    ours = _ours_costs(Path(model_path), runs)
    proc = subprocess.run(
        [str(_python(venv)), "-I", str(Path(__file__).resolve()), "bench", str(runs)],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    if proc.returncode != 0:
        raise PeerError(f"EfficientWord-Net bench exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    ours["second_cpu_s"] = ours["frontend_cpu_s_per_audio_s"] + ours["window_cpu_s"] / ours["hop_seconds"]
    peer["second_cpu_s"] = peer["window_cpu_s"] / peer["hop_seconds"]
    ratios = {
        key: peer[key] / ours[key]
        for key in ("window_wall_s", "window_cpu_s", "second_cpu_s", "model_bytes")
        if ours.get(key)
    }
    return {"ours": ours, "peer": peer, "peer_over_ours": ratios}


def cost_rows(costs: dict) -> tuple[list[str], list[list[str]]]:
    """The speed/size table: one row per figure, columns ours, the peer, peer / ours."""
    ours, peer, ratio = costs["ours"], costs["peer"], costs["peer_over_ours"]

    def ms(x: float) -> str:
        return f"{1e3 * x:.2f}"

    def times(key: str) -> str:
        return f"{ratio[key]:,.0f}x" if ratio.get(key, 0) >= 10 else f"{ratio.get(key, float('nan')):.1f}x"

    rows = [
        ["window / hop when streaming (s)", f"{ours['window_seconds']:.3f} / {ours['hop_seconds']:g}",
         f"{peer['window_seconds']:g} / {peer['hop_seconds']:g}", ""],
        ["compute per window, wall ms (1 thread, median)", ms(ours["window_wall_s"]), ms(peer["window_wall_s"]),
         times("window_wall_s")],
        ["compute per window, CPU ms (1 thread, median)", ms(ours["window_cpu_s"]),
         f"{ms(peer['window_cpu_s'])} ({ms(peer['features_cpu_s'])} features + {ms(peer['network_cpu_s'])} network)",
         times("window_cpu_s")],
        ["CPU ms per second of audio, streaming at its hop", ms(ours["second_cpu_s"]), ms(peer["second_cpu_s"]),
         times("second_cpu_s")],
        ["model bytes", f"{ours['model_bytes']:,}", f"{peer['model_bytes']:,}", times("model_bytes")],
        ["parameters", f"{ours['parameters']:,}" if ours.get("parameters") else "?",
         f"~{peer['model_bytes'] / 4 / 1e6:.1f} M (float32 bytes / 4)", ""],
    ]  # fmt: skip
    return ["", "ours", PEER_LABEL, "peer / ours"], rows


def cost_note(costs: dict) -> str:
    peer = costs["peer"]
    return (
        f"{PEER_LABEL} {peer['version']} (onnxruntime {peer['onnxruntime']}), model `{peer['model_name']}` "
        f"(sha256 `{peer['model_sha256'][:12]}`); ours with the device's LiteRT interpreter. Ours per second: "
        f"log-mel frontend + one window per {costs['ours']['hop_seconds']:g} s hop; the peer's: one window "
        f"(numpy log filterbank + ResNet-50) per {peer['hop_seconds']:g} s, its own streaming hop "
        f"(at our 0.1 s hop it would cost {1e3 * peer['window_cpu_s'] / 0.1:.0f} ms per second). CPU times are the "
        "measuring thread's and the comparison; wall times also count waiting for a core on a loaded machine."
    )


# -----------------------------------------------------------------------------------------------
# the peer's side: run with the peer venv's python, `python -I peer.py embed|bench ...`
# -----------------------------------------------------------------------------------------------


def _load_model(threads: int = 1):
    """The package's ``Resnet50_Arc_loss`` with its ONNX session rebuilt on ``threads`` threads."""
    import onnxruntime as ort
    from eff_word_net import audio_processing

    model = audio_processing.Resnet50_Arc_loss()  # its window, features and model file; warms up once
    path = os.path.join(audio_processing.LIB_FOLDER_LOCATION, PEER_MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    model.onnx_sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    model.input_name = model.onnx_sess.get_inputs()[0].name
    model.output_name = model.onnx_sess.get_outputs()[0].name
    model.model_path = path
    return model


def _embed_one(model, clip: np.ndarray) -> np.ndarray:
    """As ``generate_reference``: ``audioToVector(fixPaddingIssues(clip))``, the random offset seeded by content."""
    random.seed(zlib.crc32(clip.tobytes()))
    vector = np.asarray(model.audioToVector(model.fixPaddingIssues(clip)), dtype=np.float32).reshape(-1)
    return vector / (np.linalg.norm(vector) + 1e-12)


def _serve_embed(source: str, target: str) -> None:
    model = _load_model(1)
    data = np.load(source)
    audio, offsets = data["audio"], data["offsets"]
    out = np.empty((len(offsets) - 1, PEER_EMBEDDING_SIZE), np.float32)
    for i in range(len(out)):
        out[i] = _embed_one(model, audio[offsets[i] : offsets[i + 1]])
        if (i + 1) % 8 == 0 or i + 1 == len(out):
            print(f"done {i + 1}", flush=True)
    np.save(target, out)


def _serve_bench(runs: int) -> None:
    """Median wall and thread-CPU seconds of the package's ``audioToVector`` on one 1.5 s window, one thread."""
    import hashlib
    from importlib.metadata import version

    import onnxruntime as ort

    model = _load_model(1)
    window = (0.05 * np.random.default_rng(0).standard_normal(model.window_frames)).astype(np.float32)
    for _ in range(5):
        model.audioToVector(window)
    wall, cpu, features, network = [], [], [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.thread_time()
        x = model.compute_logfbank_features(window)
        mid = time.thread_time()
        model.onnx_sess.run([model.output_name], {model.input_name: np.float32(np.expand_dims(x, axis=(0, 1)))})
        end = time.thread_time()
        wall.append(time.perf_counter() - w)
        cpu.append(end - c)
        features.append(mid - c)
        network.append(end - mid)
    with open(model.model_path, "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()
    result = {
        "version": version(PEER_PACKAGE),
        "onnxruntime": ort.__version__,
        "model_name": os.path.basename(model.model_path),
        "model_sha256": sha,
        "model_bytes": os.path.getsize(model.model_path),
        "window_seconds": model.window_length,
        "hop_seconds": PEER_HOP_SECONDS,
        "window_wall_s": float(np.median(wall)),
        "window_cpu_s": float(np.median(cpu)),
        "features_cpu_s": float(np.median(features)),
        "network_cpu_s": float(np.median(network)),
        "runs": runs,
    }
    print(json.dumps(result), flush=True)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["embed"] and len(argv) == 3:
        _serve_embed(argv[1], argv[2])
    elif argv[:1] == ["bench"] and len(argv) == 2:
        _serve_bench(int(argv[1]))
    else:
        print("usage: python -I peer.py embed IN.npz OUT.npy | bench RUNS", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
