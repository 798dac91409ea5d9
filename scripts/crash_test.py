"""Crash injection for the keyword store: SIGKILL a process changing it at random moments, then check it.

    python scripts/crash_test.py --kills 300          # `make crash-test`

A child process drives the real code on real spoken takes (espeak-ng): ``Spotter.enroll``
(new keywords and re-enrollments), ``--add``, ``Spotter.remove``, and ``kws reembed`` after
the keywords were turned into another encoder's (another sha256, prototypes of half the
size, as a model change leaves them). Before each change it reports the state the change
should leave and after it the state it left. The parent kills it at a random moment, opens
the store as the next process would, and checks that it loads (from the current file, not
the backup), that it holds either the state before the interrupted change or the one after
it, that every keyword's take folder exists and holds as many takes as the keyword counts
(the backup's keywords too), and that no orphan folder or temporary file survives the open.

Why a separate process and SIGKILL: the store's promise is about what is on disk when a
writer stops at an arbitrary instruction, which no exception inside one process can show.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from device.store import BACKUP_FILE, STORE_FILE, TAKES_FOLDER, TEMPORARY_FILES, KeywordStore, read_keywords  # noqa: E402

MODEL = ROOT / "firmware_models" / "encoder.tflite"
WORDS = ("hey toaster", "open sesame", "lights on")
# One speaker at natural variations of pitch and speed: five takes to enroll, two more to --add.
VOICES = [("en-us", 40, 150), ("en-us", 50, 165), ("en-us", 60, 175), ("en-us", 45, 140), ("en-us", 55, 185)]
MORE_VOICES = [("en-us", 52, 155), ("en-us", 48, 170)]
OTHER_ENCODER = "f" * 64


def speak_takes(folder: Path) -> dict[str, list[Path]]:
    """Seven wav takes of every word (espeak-ng at 22.05 kHz; the store resamples as for any wav)."""
    takes = {}
    for word in WORDS:
        paths = []
        for i, (voice, pitch, speed) in enumerate(VOICES + MORE_VOICES):
            path = folder / f"{word.replace(' ', '_')}_{i}.wav"
            if not path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(path), word]
                subprocess.run(command, check=True, capture_output=True)
            paths.append(path)
        takes[word] = paths
    return takes


def state(store: KeywordStore) -> dict[str, int]:
    """What the checks compare: each keyword's name and take count."""
    return {k.name: k.takes for k in store.keywords.values()}


# -- the child: changes the store until it is killed ----------------------------------------------------------


def child(store_dir: Path, takes_dir: Path, model: Path, seed: int) -> None:
    """Change the store forever, printing ``begin <expected state>`` and ``done <state>`` around each change."""
    from dataclasses import replace

    from device.cli import main
    from device.enroll import MAX_TAKES
    from device.spotter import Spotter

    takes = speak_takes(takes_dir)
    rng = random.Random(seed)
    spotter = Spotter(store_dir, model, check_store=False)

    def report(kind: str, names: dict[str, int]) -> None:
        print(kind, json.dumps(names, sort_keys=True), flush=True)

    report("ready", state(spotter.store))
    while True:
        now = state(spotter.store)
        stale = any(k.encoder_sha256 != spotter.encoder.sha256 for k in spotter.store.keywords.values())
        choices = ["enroll"] * 3 + (["add", "remove", "age"] if now else [])
        operation = "reembed" if stale else rng.choice(choices)
        name = rng.choice(sorted(now)) if now and operation != "enroll" else rng.choice(WORDS)
        if operation == "add" and now[name] + len(MORE_VOICES) > MAX_TAKES:
            operation = "enroll"
        if operation == "enroll":
            report(f"begin:{operation}", now | {name: len(VOICES)})
            spotter.enroll(name, takes[name][: len(VOICES)], replace=True)  # a new word or a re-enrollment
        elif operation == "add":
            report(f"begin:{operation}", now | {name: now[name] + len(MORE_VOICES)})
            spotter.enroll(name, takes[name][len(VOICES) :], add=True)
        elif operation == "remove":
            report(f"begin:{operation}", {n: t for n, t in now.items() if n != name})
            spotter.remove(name)
        elif operation == "age":  # as a model change leaves them: another encoder's, of another size
            report(f"begin:{operation}", now)
            aged = [
                replace(k, encoder_sha256=OTHER_ENCODER, prototypes=[p[::2] for p in k.prototypes], stats={})
                for k in spotter.store.keywords.values()
            ]
            spotter.store.put_many([(k, None) for k in aged])
        else:
            report(f"begin:{operation}", now)
            with open("/dev/null", "w") as quiet:
                status = main(["--store", str(store_dir), "--model", str(model), "reembed"], out=quiet)
            if status != 0:
                raise SystemExit(f"kws reembed failed with status {status}")
            spotter = Spotter(store_dir, model)
        report("done", state(spotter.store))


# -- the parent: kills and checks --------------------------------------------------------------------------


@dataclass
class Tally:
    """What the kills did to the store."""

    kills: int = 0
    during: dict[str, int] = field(default_factory=dict)  # kills that landed in each kind of change
    corrupt_loads: int = 0  # the store did not load, or loaded only from the backup
    lost_keywords: int = 0  # keywords that no interrupted change can explain the absence of
    lost_takes: int = 0  # keywords whose take folder is missing or holds another number of takes
    neither_state: int = 0  # the store holds neither the state before the interrupted change nor after it
    orphans_cleaned: int = 0  # folders and temporary files left by a kill, deleted by the next open
    orphans_left: int = 0  # ... and ones still there after that open

    def line(self) -> str:
        return (
            f"crash test: {self.kills} kills (during {', '.join(f'{k} {n}' for k, n in sorted(self.during.items()))}), "
            f"{self.corrupt_loads} corrupt loads, "
            f"{self.lost_keywords} lost keywords, {self.lost_takes} lost takes, "
            f"{self.neither_state} states neither old nor new, {self.orphans_left} orphans after reopen "
            f"({self.orphans_cleaned} cleaned)"
        )

    @property
    def failures(self) -> int:
        return self.corrupt_loads + self.lost_keywords + self.lost_takes + self.neither_state + self.orphans_left


def _leftovers(folder: Path) -> set[str]:
    """Take folders no committed version names, and the store's temporary files."""
    named = set()
    for path in (folder / STORE_FILE, folder / BACKUP_FILE):
        if path.exists():
            named |= {k["takes_dir"] for k in json.loads(path.read_text())["payload"]["keywords"] if k["takes_dir"]}
    root = folder / TAKES_FOLDER
    folders = {f"{TAKES_FOLDER}/{p.name}" for p in root.iterdir()} if root.is_dir() else set()
    return (folders - named) | {name for name in TEMPORARY_FILES if (folder / name).exists()}


def _broken(store: KeywordStore) -> int:
    """Keywords (current and backup) whose take folder is missing or does not hold ``takes`` takes."""
    keywords = list(store.keywords.values())
    if store.backup_path.exists():
        keywords += list(read_keywords(store.backup_path).values())
    broken = 0
    for keyword in keywords:
        if keyword.takes_dir is None:
            continue
        folder = store.folder / keyword.takes_dir
        if not folder.is_dir() or len(list(folder.glob("take_*.wav"))) != keyword.takes:
            broken += 1
    return broken


def check(folder: Path, before: dict[str, int], after: dict[str, int] | None, tally: Tally) -> None:
    """Open the store as the next process would and count what is wrong with it."""
    leftovers = _leftovers(folder)
    try:
        store = KeywordStore(folder)
    except Exception as error:  # any failure to load is what this test counts
        print(f"kill {tally.kills}: the store does not load: {error}", file=sys.stderr)
        tally.corrupt_loads += 1
        return
    tally.corrupt_loads += store.recovered_from_backup
    tally.orphans_cleaned += len(leftovers)
    tally.orphans_left += len(_leftovers(folder))
    now = state(store)
    if now != before and now != after:
        print(f"kill {tally.kills}: store {now}, before {before}, after {after}", file=sys.stderr)
        tally.neither_state += 1
    tally.lost_keywords += len(set(before) & set(before if after is None else after) - set(now))
    tally.lost_takes += _broken(store)


def run(kills: int, work: Path, model: Path = MODEL, seed: int = 0, max_delay: float = 0.4) -> Tally:
    """Start, kill and check the child ``kills`` times on one store under ``work``."""
    rng = random.Random(seed)
    takes_dir, store_dir = work / "takes", work / "store"
    speak_takes(takes_dir)
    tally = Tally()
    errors = work / "child.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(store_dir), str(takes_dir), str(model)]
    for kill in range(kills):
        with open(errors, "w") as stderr:
            process = subprocess.Popen(
                [*command, str(seed * 100003 + kill)], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT
            )
        first = process.stdout.readline().split(" ", 1)
        if first[0] == "ready":
            time.sleep(rng.uniform(0, max_delay))
        if first[0] != "ready" or process.poll() is not None:  # it stopped by itself: a bug, not a kill
            process.kill()
            raise RuntimeError(f"the crash-test child failed on its own:\n{errors.read_text()}")
        process.kill()
        lines = [first, *(line.split(" ", 1) for line in process.stdout.read().splitlines())]
        process.wait()
        process.stdout.close()
        before, after, operation = json.loads(first[1]), None, "startup"
        for kind, names in lines:
            if kind.startswith("begin:"):
                after, operation = json.loads(names), kind.split(":", 1)[1]
            elif kind == "done":
                before, after, operation = json.loads(names), None, "between changes"
        tally.kills += 1
        tally.during[operation] = tally.during.get(operation, 0) + 1
        check(store_dir, before, after, tally)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=300, help="how many times to kill the child (300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=MODEL, help="encoder .tflite (the shipped one)")
    parser.add_argument("--child", nargs=3, metavar=("STORE", "TAKES", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("child_seed", nargs="?", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        store_dir, takes_dir, model = map(Path, args.child)
        child(store_dir, takes_dir, model, args.child_seed)
        return 0
    with tempfile.TemporaryDirectory(prefix="kws-crash-") as work:
        tally = run(args.kills, Path(work), args.model, args.seed)
    print(tally.line())
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
