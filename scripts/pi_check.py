#!/usr/bin/env python3
"""`make pi-check`: prove the device runtime gives the same answers on aarch64 (Raspberry Pi) as on x86.

It runs one real enrollment and one detection over a wav file with the shipped int8
encoder, through the repo's ``device`` package, twice: natively on this x86 host and
on an emulated Raspberry Pi CPU (``qemu-aarch64-static``), then compares the results.

The emulated Pi is built offline from the package registries only, and cached under
``build/pi/`` so reruns take seconds to prepare:

* ``sysroot/``: Debian bookworm's arm64 ``python3.11`` (the Python of Raspberry Pi OS
  Bookworm) and the C libraries it needs, fetched with a private apt configuration
  (no ``dpkg --add-architecture`` on the host) and unpacked with ``dpkg -x``;
* ``site-packages/``: aarch64 wheels (``manylinux_2_17``..``_2_36``, cp311) of the
  device extra in pyproject.toml (numpy, ai-edge-litert, sounddevice, ...) at the
  versions installed on the host, so any difference is the architecture's;
* ``root-<cpu>/``: the sysroot plus a ``/proc/cpuinfo`` and ``/sys/devices/system/cpu``
  of the Pi with that CPU. qemu-user shows guests the *host's* /proc/cpuinfo (x86),
  which crashes the ``cpuinfo`` library inside ai-edge-litert >= 2.2 on aarch64; with
  ``-L`` qemu reads these files from the prefix instead, as a real Pi would show them.

Pass criteria: identical detection events (keyword and time; scores within 1e-3),
thresholds within 1e-3, encoder outputs within two int8 steps and cosine >= 0.999.

Exit status: 0 PASS, 1 FAIL (a mismatch), 77 SKIP (the emulated Pi could not be
prepared here: no qemu-aarch64-static, no apt/dpkg, no espeak-ng, or no registry).

Usage: python scripts/pi_check.py [--cpus cortex-a53,cortex-a72,cortex-a76] [--cache build/pi]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "firmware_models" / "encoder.tflite"
WAKE_WORD = "hey toaster"
EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77

# Debian bookworm arm64 packages: the interpreter (python3.11-minimal), its standard
# library, and the shared libraries those and the wheels link against.
DEBIAN_PACKAGES = [
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
]
DEBIAN_SOURCES = """\
deb [arch=arm64] {mirror}/debian bookworm main
deb [arch=arm64] {mirror}/debian bookworm-updates main
deb [arch=arm64] {mirror}/debian-security bookworm-security main
"""
GLIBC_MINORS = range(17, 37)  # manylinux_2_17 .. manylinux_2_36 (bookworm's glibc is 2.36)

# The emulated CPUs: qemu's model, and what /proc/cpuinfo says on that Pi.
PI_CPUS = {
    "cortex-a53": ("Raspberry Pi Zero 2 W Rev 1.0", "0xd03", "0x0", "4", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a72": ("Raspberry Pi 4 Model B Rev 1.4", "0xd08", "0x0", "3", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": (
        "Raspberry Pi 5 Model B Rev 1.0",
        "0xd0b",
        "0x4",
        "1",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
    ),
}
DEFAULT_CPUS = ",".join(PI_CPUS)  # Pi Zero 2 W, Pi 4, Pi 5

SCORE_TOLERANCE = 1e-3
# Requantisation rounds differently in the ARM and x86 kernels; a one-step difference in an inner layer
# can reach the output as two after seven blocks (measured: 14 of 9,792 outputs, cosine 0.99995, events
# and scores identical). Events, scores and cosine are what a user meets; the step bound catches drift.
MAX_INT8_STEPS = 2
MIN_COSINE = 0.999


class Unavailable(RuntimeError):
    """The emulated Pi cannot be prepared on this machine (exit 77, not a failure)."""


def log(message: str) -> None:
    print(f"pi-check: {message}", flush=True)


def run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a preparation step; any failure means the emulation is unavailable here."""
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        raise Unavailable(f"{what} failed: {detail.strip()[-600:]}") from error


# -- preparing the emulated Pi (cached under build/pi/) ------------------------------------------------


def stamped(folder: Path, key: str) -> bool:
    """True when ``folder`` was completed for exactly ``key`` (see :func:`stamp`)."""
    marker = folder / ".complete"
    return marker.is_file() and marker.read_text() == key


def stamp(folder: Path, key: str) -> None:
    (folder / ".complete").write_text(key)


def prepare_sysroot(cache: Path) -> Path:
    """Debian bookworm's arm64 python3.11 and its libraries, unpacked in ``cache/sysroot``."""
    sysroot = cache / "sysroot"
    mirror = os.environ.get("PI_CHECK_DEBIAN_MIRROR", "http://deb.debian.org")
    key = json.dumps([mirror, DEBIAN_PACKAGES])
    if stamped(sysroot, key):
        return sysroot
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise Unavailable(f"`{tool}` is needed to fetch Debian's arm64 python3.11 (a Debian/Ubuntu host)")
    apt = cache / "apt"
    shutil.rmtree(apt, ignore_errors=True)
    for sub in ("lists/partial", "cache/archives/partial", "etc/empty", "debs"):
        (apt / sub).mkdir(parents=True)
    (apt / "status").touch()
    (apt / "etc/sources.list").write_text(DEBIAN_SOURCES.format(mirror=mirror))
    settings = {
        "APT::Architecture": "arm64",
        "APT::Architectures": "arm64",
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else "",
        "Dir::State": apt,
        "Dir::State::Lists": apt / "lists",
        "Dir::State::status": apt / "status",
        "Dir::Cache": apt / "cache",
        "Dir::Etc::SourceList": apt / "etc/sources.list",
        "Dir::Etc::SourceParts": apt / "etc/empty",
        "Dir::Etc::Preferences": apt / "etc/empty/none",
        "Dir::Etc::PreferencesParts": apt / "etc/empty",
        "Debug::NoLocking": "true",
        "Acquire::Languages": "none",
    }
    options = [f"-o{name}={value}" for name, value in settings.items() if value != ""]
    log("fetching Debian bookworm arm64 python3.11 (private apt lists, host untouched)")
    update = run(["apt-get", "-q", *options, "update"], "apt-get update (arm64 lists)")
    if not any((apt / "lists").glob("*_Packages*")):  # apt-get update exits 0 when every fetch failed
        last = (update.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"could not fetch Debian's arm64 package lists from {mirror} (offline?): {last}")
    run(["apt-get", "-q", *options, "download", *DEBIAN_PACKAGES], "apt-get download", cwd=apt / "debs")
    shutil.rmtree(sysroot, ignore_errors=True)
    sysroot.mkdir()
    for deb in sorted((apt / "debs").glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(sysroot)], f"dpkg -x {deb.name}")
    if not (sysroot / "usr/bin/python3.11").is_file():
        raise Unavailable("the arm64 packages unpacked without usr/bin/python3.11")
    shutil.rmtree(apt, ignore_errors=True)  # package lists and .debs: not needed again
    stamp(sysroot, key)
    return sysroot


def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def device_requirements() -> list[str]:
    """The device extra of pyproject.toml, each pinned to the version installed on the host where it is."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["device"]
    pinned = []
    for requirement in extra:
        spec, _, marker = requirement.partition(";")
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)
        installed = distribution_version(name)
        pinned.append(
            (f"{name}=={installed}" if installed else spec.strip()) + (f"; {marker.strip()}" if marker else "")
        )
    return pinned


def prepare_wheels(cache: Path) -> Path:
    """aarch64 cp311 wheels of the device extra, pinned to the host's versions, in ``cache/site-packages``.

    pip evaluates the extra's environment markers on the host (x86_64, Python 3.11), which
    agrees with a 64-bit Pi on Python 3.11 for every marker the extra has.
    """
    site = cache / "site-packages"
    requirements = device_requirements()
    key = json.dumps(requirements)
    if stamped(site, key):
        return site
    shutil.rmtree(site, ignore_errors=True)
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in GLIBC_MINORS]
    log(f"fetching aarch64 wheels: {', '.join(r.split(';')[0] for r in requirements)}")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    command += ["--target", str(site), "--only-binary=:all:", *platforms, "--platform=manylinux2014_aarch64"]
    command += ["--python-version=3.11", "--implementation=cp", "--abi=cp311", *requirements]
    try:
        run(command, "pip install (aarch64 wheels)")
    except Unavailable as error:
        # Offline, or the registry has no aarch64 wheel (then a Pi could not install the extra either)?
        # pip says "from versions: none" for both; ask it for the first requirement on this host.
        probe = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps"]
        reachable = subprocess.run([*probe, requirements[0].split(";")[0]], capture_output=True).returncode == 0
        if not reachable:
            raise
        raise RuntimeError(f"no aarch64 wheels for the device extra: {error}") from error
    stamp(site, key)
    return site


def prepare_root(cache: Path, sysroot: Path, cpu: str) -> Path:
    """``cache/root-<cpu>``: the sysroot (symlinked) plus that Pi's /proc/cpuinfo and /sys cpu lists."""
    model, part, variant, revision, features = PI_CPUS[cpu]
    root = cache / f"root-{cpu}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for entry in sysroot.iterdir():
        if not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry.resolve())
    cores = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n"
        for i in range(4)
    ]
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("\n".join(cores) + f"\nRevision\t: 0\nModel\t\t: {model}\n")
    cpus = root / "sys/devices/system/cpu"
    cpus.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text("0-3\n")
    return root


def espeak(text: str, path: Path, voice: str, speed: int, pitch: int) -> None:
    run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text], "espeak-ng")


def prepare_audio(cache: Path) -> tuple[list[Path], Path]:
    """Four takes of the wake word (en-us, varied speed and pitch) and a stream in another voice (en-us+m3)."""
    import numpy as np

    from device.audio import read_wav, write_wav

    folder = cache / "audio"
    takes = [folder / f"take_{i + 1}.wav" for i in range(4)]
    stream = folder / "stream.wav"
    if stamped(folder, "v2"):
        return takes, stream
    if shutil.which("espeak-ng") is None:
        raise Unavailable("espeak-ng is needed to speak the test audio (apt-get install espeak-ng)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.wav"
        for path, (speed, pitch) in zip(takes, [(140, 50), (160, 45), (150, 60), (170, 55)], strict=True):
            espeak(WAKE_WORD, raw, "en-us", speed, pitch)
            write_wav(path, np.concatenate([np.zeros(4000), read_wav(raw), np.zeros(4000)]))
        script = ["good morning", WAKE_WORD, "what a lovely day", "turn the kettle on please", WAKE_WORD, "thanks"]
        pieces = [np.zeros(16000, np.float32)]
        for text in script:
            espeak(text, raw, "en-us+m3", 150, 40)
            pieces += [read_wav(raw), np.zeros(20000, np.float32)]
    speech = np.concatenate(pieces)
    noise = np.random.default_rng(0).normal(0.0, 0.003, len(speech)).astype(np.float32)  # a quiet room
    write_wav(stream, np.clip(speech + noise, -1, 1))
    stamp(folder, "v2")
    return takes, stream


# -- the run itself (on x86 natively, or on the emulated Pi) ------------------------------------------


def worker(takes: list[str], stream: str, out: str) -> None:
    """Enroll the wake word, detect over the stream, embed every stream window; write JSON to ``out``."""
    import numpy as np

    from device import Spotter
    from device.audio import read_wav
    from device.frontend import log_mel
    from device.interpreter import interpreter_class

    _, runtime = interpreter_class()
    with tempfile.TemporaryDirectory() as store:
        spotter = Spotter(store_dir=store, model_path=MODEL)
        keyword = spotter.enroll(WAKE_WORD, takes, keep_takes=False)
        events = spotter.detect_file(stream)
    encoder = spotter.encoder
    output_index = encoder.interpreter.get_output_details()[0]["index"]
    frames = log_mel(read_wav(stream), encoder.manifest.frontend)
    raw, unit, started = [], [], time.perf_counter()
    starts = range(0, len(frames) - encoder.window_frames + 1, 10)  # every 100 ms hop
    for start in starts:
        unit.append(encoder.embed_frames(frames[start : start + encoder.window_frames]))
        raw.append(encoder.interpreter.get_tensor(output_index)[0].astype(int).tolist())
    seconds = (time.perf_counter() - started) / max(1, len(starts))
    result = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtime": runtime,
        "runtime_version": distribution_version(runtime.split(".")[0]),
        "enrollment": {
            "threshold": keyword.threshold,
            "prototypes": keyword.prototypes,
            "take_embeddings": keyword.stats["embeddings"],
        },
        "events": [{"keyword": e.keyword, "time_s": e.time_s, "score": e.score} for e in events],
        "windows": {"int8": raw, "unit": [[float(x) for x in u] for u in unit]},
        "seconds_per_window": seconds,
    }
    Path(out).write_text(json.dumps(result))


def run_worker(label: str, prefix: list[str], python: str, env: dict, takes: list[Path], stream: Path, out: Path):
    """Run :func:`worker` in a child interpreter; return its result and wall time."""
    command = [*prefix, python, str(Path(__file__).resolve()), "--worker", str(out), str(stream)]
    command += [str(t) for t in takes]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the {label} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text()), wall


# -- comparing ------------------------------------------------------------------------------------------


def compare(reference: dict, other: dict) -> tuple[list[str], dict]:
    """Problems (empty: equivalent) and the measured differences of ``other`` against ``reference``."""
    import numpy as np

    problems = []
    a_events, b_events = reference["events"], other["events"]
    events_identical = [(e["keyword"], round(e["time_s"], 3)) for e in a_events] == [
        (e["keyword"], round(e["time_s"], 3)) for e in b_events
    ]
    if not events_identical:
        problems.append(f"detection events differ: {a_events} vs {b_events}")
    score_diff = max((abs(a["score"] - b["score"]) for a, b in zip(a_events, b_events, strict=False)), default=0.0)
    if score_diff > SCORE_TOLERANCE:
        problems.append(f"event scores differ by {score_diff:.2e} > {SCORE_TOLERANCE}")
    threshold_diff = abs(reference["enrollment"]["threshold"] - other["enrollment"]["threshold"])
    if threshold_diff > SCORE_TOLERANCE:
        problems.append(f"enrolled thresholds differ by {threshold_diff:.2e} > {SCORE_TOLERANCE}")

    def unit_diffs(a: list, b: list) -> tuple[float, float]:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return float(np.abs(a - b).max()), float(cosine.min())

    take_diff, take_cosine = unit_diffs(
        reference["enrollment"]["take_embeddings"], other["enrollment"]["take_embeddings"]
    )
    proto_diff, proto_cosine = unit_diffs(reference["enrollment"]["prototypes"], other["enrollment"]["prototypes"])
    window_diff, window_cosine = unit_diffs(reference["windows"]["unit"], other["windows"]["unit"])
    steps = np.abs(np.asarray(reference["windows"]["int8"]) - np.asarray(other["windows"]["int8"]))
    measured = {
        "events_identical": events_identical,
        "max_event_score_diff": score_diff,
        "threshold_diff": threshold_diff,
        "take_embedding_max_abs_diff": take_diff,
        "take_embedding_min_cosine": take_cosine,
        "prototype_max_abs_diff": proto_diff,
        "window_embedding_max_abs_diff": window_diff,
        "window_embedding_min_cosine": window_cosine,
        "window_int8_max_steps": int(steps.max()),
        "window_int8_outputs_differing": int((steps != 0).sum()),
        "window_int8_outputs": int(steps.size),
        "windows": int(steps.shape[0]),
    }
    if steps.max() > MAX_INT8_STEPS:
        problems.append(f"encoder int8 outputs differ by {int(steps.max())} steps > {MAX_INT8_STEPS}")
    for name, cosine in (("take", take_cosine), ("prototype", proto_cosine), ("window", window_cosine)):
        if cosine < MIN_COSINE:
            problems.append(f"{name} embeddings: min cosine {cosine:.5f} < {MIN_COSINE}")
    return problems, measured


def summarize(m: dict) -> str:
    """One line of the measured differences."""
    return (
        f"{m['window_int8_outputs_differing']} of {m['window_int8_outputs']} int8 encoder outputs differ "
        f"(max {m['window_int8_max_steps']} step) over {m['windows']} windows; unit embeddings max |diff| "
        f"{m['window_embedding_max_abs_diff']:.2e} (enrolled takes {m['take_embedding_max_abs_diff']:.2e}), "
        f"min cosine {min(m['window_embedding_min_cosine'], m['take_embedding_min_cosine']):.6f}; "
        f"events identical: {m['events_identical']}, max score diff {m['max_event_score_diff']:.2e}"
    )


def describe(result: dict) -> str:
    return (
        f"{result['machine']} Python {result['python']}, numpy {result['numpy']}, "
        f"{result['runtime']} {result['runtime_version']}; "
        f"{len(result['events'])} events: "
        + ", ".join(f"{e['keyword']} @ {e['time_s']:.2f} s ({e['score']:.4f})" for e in result["events"])
    )


def check(cpus: list[str], cache: Path) -> int:
    """Prepare, run on x86 and every emulated CPU, compare; the exit status."""
    started = time.perf_counter()
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if qemu is None:
        raise Unavailable("qemu-aarch64-static is not installed (Debian: apt-get install qemu-user-static)")
    if not MODEL.is_file():
        raise Unavailable(f"no model at {MODEL.relative_to(REPO)} (run `make export`)")
    cache.mkdir(parents=True, exist_ok=True)
    lock = (cache / ".lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one pi-check at a time per cache (make pi-check and pytest may overlap)
    takes, stream = prepare_audio(cache)
    sysroot = prepare_sysroot(cache)
    site = prepare_wheels(cache)
    results_dir = cache / "results"
    results_dir.mkdir(exist_ok=True)
    log(f"prepared in {time.perf_counter() - started:.1f} s")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    base_env |= {"PYTHONNOUSERSITE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    reference, wall = run_worker(
        "x86", [], sys.executable, base_env | {"PYTHONPATH": str(REPO)}, takes, stream, results_dir / "x86_64.json"
    )
    log(f"x86_64: {describe(reference)} [{wall:.1f} s]")

    arm_env = base_env | {"PYTHONPATH": f"{REPO}{os.pathsep}{site}"}
    failures, report = 0, {}
    for cpu in cpus:
        root = prepare_root(cache, sysroot, cpu)
        prefix = [qemu, "-cpu", cpu, "-L", str(root)]
        out = results_dir / f"aarch64-{cpu}.json"
        try:
            result, wall = run_worker(cpu, prefix, str(sysroot / "usr/bin/python3.11"), arm_env, takes, stream, out)
        except RuntimeError as error:
            log(f"FAIL {cpu}: {error}")
            failures += 1
            continue
        problems, measured = compare(reference, result)
        report[cpu] = {"problems": problems, **measured, "emulated_seconds": round(wall, 1)}
        log(f"aarch64 {cpu}: {describe(result)} [{wall:.1f} s emulated]")
        log(f"  vs x86: {summarize(measured)}")
        for problem in problems:
            log(f"  mismatch: {problem}")
        failures += bool(problems)
    (results_dir / "comparison.json").write_text(json.dumps(report, indent=2))
    if not reference["events"]:
        log("warning: the x86 run detected nothing, so the event comparison proves little")
    verdict = "FAIL" if failures else "PASS"
    log(
        f"{verdict}: {len(cpus) - failures}/{len(cpus)} emulated Pi CPU(s) match x86 "
        f"({time.perf_counter() - started:.0f} s; results in {results_dir}/)"
    )
    return EXIT_FAIL if failures else EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", default=DEFAULT_CPUS, help=f"emulated CPUs, from {', '.join(PI_CPUS)}")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "pi", help="where to cache (build/pi)")
    parser.add_argument("--worker", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        out, stream, *takes = args.worker
        worker(takes, stream, out)
        return EXIT_PASS
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    unknown = sorted(set(cpus) - set(PI_CPUS))
    if unknown:
        parser.error(f"unknown CPU(s) {unknown}; choose from {', '.join(PI_CPUS)}")
    try:
        return check(cpus, args.cache.resolve())
    except Unavailable as reason:
        log(f"SKIP: cannot emulate a Raspberry Pi here: {reason}")
        return EXIT_SKIP
    except RuntimeError as error:  # the x86 reference run itself failed
        log(f"FAIL: {error}")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
