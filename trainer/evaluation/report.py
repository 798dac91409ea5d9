"""Tables (terminal and markdown), plots and the dated ``BENCHMARKS.md`` section.

Figures go to the results folder as ``results.md`` + ``results.json`` + PNGs on every run;
``BENCHMARKS.md`` only grows when asked (``--write-benchmarks``, under its final "Latest runs" heading),
with the date, the machine and the exact command, so every number there can be reproduced and dated.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainer import benchmarks_file
from trainer.evaluation.streaming import FA_TARGETS, FRR_TARGETS


def machine() -> str:
    """CPU model (lscpu), core count, OS and Python: what a timing in the report depends on."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return (
        f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def command_line(argv: Sequence[str] | None = None) -> str:
    return "kws-eval " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def pct(x: float, ci: float | None = None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100 * x:.1f}" if ci is None else f"{100 * x:.1f} ± {100 * ci:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def fewshot_rows(summaries: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per task, one column per method (accuracy % ± 95% CI), in first-seen order."""
    methods = list(dict.fromkeys(s["method"] for s in summaries))
    tasks = list(dict.fromkeys(s["task"] for s in summaries))
    by = {(s["task"], s["method"]): s for s in summaries}
    rows = []
    for task in tasks:
        any_s = next(s for s in summaries if s["task"] == task)
        cells = [pct(by[(task, m)]["accuracy"], by[(task, m)]["ci"]) if (task, m) in by else "" for m in methods]
        rows.append([task, *cells, pct(any_s["chance"]), str(any_s["episodes"])])
    return ["task", *methods, "chance", "episodes"], rows


def fewshot_difference_rows(summaries: Sequence[dict], ours: str = "ours") -> tuple[list[str], list[list[str]]]:
    """Ours minus each other method, accuracy points per task (positive: ours ahead), on the same episodes."""
    methods = [m for m in dict.fromkeys(s["method"] for s in summaries) if m != ours]
    tasks = list(dict.fromkeys(s["task"] for s in summaries))
    by = {(s["task"], s["method"]): s["accuracy"] for s in summaries}
    rows = []
    for task in tasks:
        if (task, ours) in by:
            cells = [f"{100 * (by[(task, ours)] - by[(task, m)]):+.1f}" if (task, m) in by else "" for m in methods]
            rows.append([task, *cells])
    return ["task", *(f"ours - {m}" for m in methods)], rows


def open_set_rows(summaries: Sequence[dict], target_frr: float = 0.05) -> tuple[list[str], list[list[str]]]:
    rows = []
    for s in summaries:
        for point in s.get("open_set", []):
            if abs(point["target_frr"] - target_frr) < 1e-9:
                rows.append(
                    [
                        s["task"],
                        s["method"],
                        pct(s["accuracy"], s["ci"]),
                        f"{point['threshold']:.3f}",
                        pct(point["known_accuracy"], point["known_accuracy_ci"]),
                        pct(point.get("far_unknown"), point.get("far_unknown_ci")),
                        pct(point.get("far_noise"), point.get("far_noise_ci")),
                    ]
                )
    header = [
        "task",
        "method",
        "closed-set acc.",
        "threshold",
        "known acc. (accepted, right)",
        "FAR unknown",
        "FAR noise",
    ]
    return header, rows


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _stream_sweeps(result: dict) -> list[tuple[str, dict]]:
    """(label, sweep) of every detector on the stream: ours with both threshold schemes, then each baseline."""
    sweeps = [
        ("ours, one global threshold", result["global"]),
        ("ours, enrollment-calibrated + offset", result["calibrated"]),
    ]
    return sweeps + [(f"{b['label']}, one global threshold", b["global"]) for b in result.get("baselines", [])]


def _fa_targets(result: dict) -> list[float]:
    """The false-alarm rates a stream's sweeps report FRR at (noise streams and talk streams differ)."""
    sweep = result.get("global") or result.get("calibrated") or {}
    return [float(a) for a in sweep.get("frr_at_fa", {})] or list(FA_TARGETS)


def stream_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """FRR at fixed FA/hour and FA/hour at fixed FRR: ours (global and per-keyword thresholds), then each baseline."""
    targets = _fa_targets(result)
    rows = [
        [name] + [pct(s["frr_at_fa"][a]) for a in targets] + [_num(s["fa_at_frr"][f]) for f in FRR_TARGETS]
        for name, s in _stream_sweeps(result)
    ]
    header = ["detector"] + [f"FRR % @ {a:g} FA/h" for a in targets] + [f"FA/h @ {100 * f:g}% FRR" for f in FRR_TARGETS]
    return header, rows


def _ratio(numerator: float, denominator: float) -> str:
    if numerator is None or denominator is None or not (np.isfinite(numerator) and np.isfinite(denominator)):
        return "n/a"
    if denominator == 0:
        return "ours 0" if numerator > 0 else "both 0"
    return f"{numerator / denominator:.1f}x"


def stream_comparison_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Each baseline against ours as shipped (calibrated): FRR points more at equal FA/h, FA/h ratio at equal FRR."""
    ours = result["calibrated"]
    targets = _fa_targets(result)
    rows = []
    for b in result.get("baselines", []):
        theirs = b["global"]
        more = []
        for a in targets:
            x, y = theirs["frr_at_fa"][a], ours["frr_at_fa"][a]
            more.append("n/a" if x is None or y is None else f"{100 * (x - y):+.1f}")
        rows.append([b["label"], *more, *(_ratio(theirs["fa_at_frr"][f], ours["fa_at_frr"][f]) for f in FRR_TARGETS)])
    header = (
        ["baseline vs ours"]
        + [f"FRR points more @ {a:g} FA/h" for a in targets]
        + [f"FA/h ratio @ {100 * f:g}% FRR" for f in FRR_TARGETS]
    )
    return header, rows


def stream_baseline_lines(result: dict) -> list[str]:
    """Markdown lines on the baselines streamed beside ours: how each ran, then the comparison table."""
    lines = []
    baselines = result.get("baselines", [])
    if baselines:
        lines += [
            "",
            "The baselines ran on the same stream with the takes the device accepted (`trainer/evaluation/"
            "stream_baselines.py`), each as its own detector does, scored by the same replay:",
            "",
        ]
        lines += [
            f"- {b['label']}: {b['detector']}; {b['windows_scored']} windows scored in {b['processing_seconds']:.0f} s"
            for b in baselines
        ]
        lines += ["", markdown_table(*stream_comparison_rows(result))]
    for skipped in result.get("baselines_skipped", []):
        label, _, reason = skipped.partition(": ")
        lines += ["", f"{label} not streamed: {reason}."]
    lines += [
        "",
        "Not streamed: the teacher (~550 M MACs per second of audio; a training-time tool, not a device detector).",
    ]
    return lines


def plot_det(result: dict, path: Path, title: str) -> None:
    """DET curve: FRR against false alarms per hour (log); ours with both threshold schemes, then each baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for label, s in _stream_sweeps(result):
        fa = np.maximum(np.asarray(s["fa_per_hour"], float), 1e-2)
        ax.step(fa, 100 * np.asarray(s["frr"], float), where="post", label=label)
    point = result["calibrated_at_offset_0"]
    ax.plot(
        max(point["fa_per_hour"], 1e-2),
        100 * point["frr"],
        "o",
        color="black",
        label=f"ours as enrolled (offset 0): FRR {100 * point['frr']:.1f}%, {point['fa_per_hour']:.2f} FA/h",
    )
    ax.set_xscale("log")
    ax.set_xlim(1e-2 * 0.8, 1e3)
    ax.set_ylim(0, 100)
    ax.set_xlabel("false alarms per hour (per keyword; 0 drawn at 0.01)")
    ax.set_ylabel("false-reject rate (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)  # below: curves stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_scores(positives: np.ndarray, negatives: np.ndarray, noise: np.ndarray, path: Path, title: str) -> None:
    """Peak score per keyword occurrence vs per non-keyword word vs every noise-only hop (densities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    everything = np.concatenate([np.ravel(x) for x in (positives, negatives, noise)])
    low, high = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
    bins = np.linspace(low, high + 1e-6, 61)
    for data, label, colour in (
        (noise, f"noise-only hops (n={len(noise)})", "tab:gray"),
        (negatives, f"non-keyword words, peak (n={len(negatives)})", "tab:red"),
        (positives, f"keyword occurrences, peak (n={len(positives)})", "tab:green"),
    ):
        if len(data):
            ax.hist(data, bins=bins, density=True, alpha=0.5, label=label, color=colour)
    ax.set_xlabel("smoothed cosine score against the keyword's prototype")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def to_jsonable(value):
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(data), indent=1) + "\n")


def today() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


CARD_SECTION = "## Measured few-shot accuracy"


def update_model_card(card: Path, section: str) -> bool:
    """Replace the model card's measured section (or add it) with ``section``; False when there is no card.

    ``make export`` rewrites the card from the manifest and cannot know accuracy on unseen words;
    ``make eval`` measures it and writes it here, so the card never carries a typed-in figure.
    """
    if not card.is_file():
        return False
    head = card.read_text().split(CARD_SECTION)[0].rstrip()
    card.write_text(f"{head}\n\n{section.rstrip()}\n")
    return True


def append_benchmarks(path: Path, section: str) -> None:
    """Append a dated section under the file's ``## Latest runs`` heading (creating the file and heading if needed)."""
    benchmarks_file.append_section(
        path, section, "# Benchmarks\n\nDated measurements; newest last. Each section names its command and machine.\n"
    )


def talk_keyword_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Per keyword on the talk stream: as enrolled (FRR, false alarms, FA/h and its bound, worst source), then
    its own FRR at each false-alarm rate with its threshold swept alone."""
    targets = _fa_targets(result)
    rows = []
    for name, r in result["per_keyword"].items():
        worst = next(iter(r["fa_sources"]), "-")
        rows.append(
            [name, pct(r["frr"]), str(r["false_alarms"]), _num(r["fa_per_hour"]), _num(r["fa_per_hour_upper95"]), worst]
            + [pct(r["frr_at_fa"][a]) for a in targets]
        )
    header = ["keyword", "FRR % as enrolled", "false alarms", "FA/h", "FA/h 95% upper", "most from"]
    return header + [f"own FRR % @ {a:g} FA/h" for a in targets], rows


def talk_lines(result: dict) -> list[str]:
    """The markdown section of the real-talk stream."""
    c, point = result["config"], result["as_enrolled"]
    spread = point["spread"]
    sources = ", ".join(f"{k} {v}" for k, v in point["fa_sources"].items()) or "none"
    languages = ", ".join(f"{s.split(':')[-1]} {v['hours']:.2f} h" for s, v in sorted(result["talk_sources"].items()))
    lines = [
        "",
        "### Real-talk false alarms",
        "",
        f"{len(result['keywords'])} personal keywords (FSDD digits, each enrolled by one speaker from "
        f"{c['enroll_takes']} takes with `Spotter.enroll`), {result['target_occurrences']} of their other takes "
        f"spliced into {result['talk_hours']:.2f} h of real continuous talk ({result['talk_files']} files of the "
        f"evaluation part of `real_speech`, languages no training or bank heard: {languages}), "
        f"{result['no_pause_occurrences']} of them straight after talk with no pause, and "
        f"{result['own_voice_words']} other words of the enrolling speakers as negatives; "
        f"{result['stream_hours']:.2f} h stream, {result['negative_hours_per_keyword']:.2f} keyword-free hours per "
        f"keyword. The device's detector in {c['chunk_seconds']:g} s chunks (real-time factor "
        f"{result['realtime_factor']:.3f}); hit: a detection within [start, end + {c['tolerance_seconds']:g} s]. "
        f"FRR at a false-alarm rate: the best over one global threshold, and over one offset from every keyword's "
        f"enrolled threshold (pooled over keywords). Talk guard: the {result['guard'].get('talk_files_checked', 0)} "
        "talk files and clip ids the model's bank and training list hold no evaluation talk.",
        "",
        markdown_table(*stream_rows(result)),
        "",
        f"As enrolled: FRR {100 * point['frr']:.1f}%, {point['false_alarms']} false alarms in "
        f"{point['keyword_hours']:.1f} keyword-hours = {point['fa_per_hour']:.2f} FA/h per keyword "
        f"(95% upper bound {point['fa_per_hour_upper95']:.2f}); across keywords {spread['min']:.2f} to "
        f"{spread['max']:.2f} FA/h (median {spread['median']:.2f}; {spread['above_1_per_hour']} above 1/h, "
        f"{spread['above_0_5_per_hour']} above 0.5/h; worst `{spread['worst']}`). False alarms came from: {sources}.",
        "",
        markdown_table(*talk_keyword_rows(result)),
    ]
    return lines + own_speech_lines(result) + stream_baseline_lines(result)


def own_speech_lines(result: dict) -> list[str]:
    """What enrollment's ``--speech`` (the user's own other words) did on the same pass, if it was measured."""
    mine = result.get("with_own_speech")
    if not mine or not mine["keywords_moved"]:
        return []
    plain = result["as_enrolled"]
    own_before = plain["fa_sources"].get("own-voice", 0)
    own_after = mine["fa_sources"].get("own-voice", 0)
    rose = sum(
        1
        for name in mine["keywords_moved"]
        if mine["per_keyword"][name]["threshold"] > result["per_keyword"][name]["threshold"] + 1e-4
    )
    return [
        "",
        f"With `--speech` (each keyword enrolled again from the same takes plus {mine['speech_seconds']:g} s of its "
        f"speaker's further other words, none of them in the stream; {len(mine['keywords_moved'])} of "
        f"{len(result['keywords'])} keywords had enough; it raised {rose} threshold{'' if rose == 1 else 's'}, "
        f"the rest were already above it or capped under the takes): "
        f"FRR {100 * plain['frr']:.1f}% -> {100 * mine['frr']:.1f}%, "
        f"{plain['fa_per_hour']:.2f} -> {mine['fa_per_hour']:.2f} FA/h per keyword (95% upper "
        f"{mine['fa_per_hour_upper95']:.2f}), false alarms on the speakers' own other words {own_before} -> "
        f"{own_after}, worst keyword {plain['spread']['max']:.2f} -> {mine['spread']['max']:.2f} FA/h "
        f"({mine['spread']['above_1_per_hour']} above 1/h).",
    ]
