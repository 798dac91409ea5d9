"""Tables (terminal and markdown), plots and the dated ``BENCHMARKS.md`` section.

Figures go to the results folder as ``results.md`` + ``results.json`` + PNGs on every run;
``BENCHMARKS.md`` only grows when asked (``--write-benchmarks``), with the date, the machine
and the exact command, so every number there can be reproduced and dated.
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


def stream_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """FRR at fixed FA/hour and FA/hour at fixed FRR, for a global threshold and per-keyword thresholds."""
    rows = []
    for name, key in (("one global threshold", "global"), ("enrollment-calibrated + offset", "calibrated")):
        s = result[key]
        rows.append(
            [name] + [pct(s["frr_at_fa"][a]) for a in FA_TARGETS] + [_num(s["fa_at_frr"][f]) for f in FRR_TARGETS]
        )
    header = (
        ["thresholds"] + [f"FRR % @ {a:g} FA/h" for a in FA_TARGETS] + [f"FA/h @ {100 * f:g}% FRR" for f in FRR_TARGETS]
    )
    return header, rows


def plot_det(result: dict, path: Path, title: str) -> None:
    """DET curve: FRR against false alarms per hour (log), both threshold schemes, calibrated point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, key in (("one global threshold", "global"), ("calibrated + offset", "calibrated")):
        s = result[key]
        fa = np.maximum(np.asarray(s["fa_per_hour"], float), 1e-2)
        ax.step(fa, 100 * np.asarray(s["frr"], float), where="post", label=label)
    point = result["calibrated_at_offset_0"]
    ax.plot(
        max(point["fa_per_hour"], 1e-2),
        100 * point["frr"],
        "o",
        color="black",
        label=f"as enrolled (offset 0): FRR {100 * point['frr']:.1f}%, {point['fa_per_hour']:.2f} FA/h",
    )
    ax.set_xscale("log")
    ax.set_xlim(1e-2 * 0.8, 1e3)
    ax.set_ylim(0, 100)
    ax.set_xlabel("false alarms per hour (per keyword; 0 drawn at 0.01)")
    ax.set_ylabel("false-reject rate (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
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
    """Append a dated section (creating the file with a title if needed)."""
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nDated measurements; newest last. Each section names its command and machine.\n"
        )
    with open(path, "a") as handle:
        handle.write("\n" + section.rstrip() + "\n")
