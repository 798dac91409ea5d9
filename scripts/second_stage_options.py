"""Second-stage options on the real-talk stream: does a look at the negative bank cut false alarms on talk?

Issue #23 asks for a second look before firing, chosen by measurement. This script runs the
talk stream of ``kws-eval talk`` once (the device's enrollment and detector, every hop's
embedding kept), then re-scores offline every hop that passes a first threshold a little
under each keyword's own (``--gate``), with options that know more than one prototype:

- ``nn``: the keyword's cosine minus the window's best cosine over the negative bank (the
  window must be closer to the keyword than to any other thing the bank holds);
- ``cohort``: the keyword's cosine minus the window's mean cosine over its 10 nearest bank
  windows (adaptive score normalisation, as speaker verification uses).

Both are smoothed over the detector's 2 hops like the first stage and swept with one global
second threshold; the first stage alone, calibrated (+ offset) and global, is the reference.
It writes ``second_stage.md``/``.json`` and a DET plot to ``--out``.

    .venv/bin/python scripts/second_stage_options.py --talk-minutes 0 --out docs/experiments/second_stage
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.detector import DetectorSettings  # noqa: E402
from trainer.evaluation import report  # noqa: E402
from trainer.evaluation.data import default_model_path, read_clips, shared_data  # noqa: E402
from trainer.evaluation.streaming import count, replay, sweep, threshold_grid  # noqa: E402
from trainer.evaluation.suite import AudioCache, run_talk_stream  # noqa: E402
from trainer.evaluation.talk import TALK_FA_TARGETS, TalkStreamConfig  # noqa: E402

COHORT = 10
CHUNK = 2048


def bank_statistics(embeddings: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per hop: the best cosine over the bank and the mean of the ``COHORT`` best (NaN where no embedding)."""
    bank = bank.astype(np.float32)
    best, cohort = np.full(len(embeddings), np.nan), np.full(len(embeddings), np.nan)
    for start in range(0, len(embeddings), CHUNK):
        e = embeddings[start : start + CHUNK].astype(np.float32)
        ok = ~np.isnan(e).any(axis=1)
        if not ok.any():
            continue
        sims = e[ok] @ bank.T
        top = np.partition(sims, -COHORT, axis=1)[:, -COHORT:]
        idx = np.nonzero(ok)[0] + start
        best[idx], cohort[idx] = top.max(axis=1), top.mean(axis=1)
    return best, cohort


def keyword_cosines(embeddings: np.ndarray, prototypes: list[np.ndarray]) -> np.ndarray:
    """``[H, K]``: each hop's best cosine over each keyword's prototypes (-1 where no embedding)."""
    e = np.nan_to_num(embeddings.astype(np.float32), nan=0.0)
    out = np.stack([(e @ p.T).max(axis=1) for p in prototypes], axis=1)
    out[np.isnan(embeddings[:, 0])] = -1.0
    return out


def smoothed(x: np.ndarray, hops: int) -> np.ndarray:
    """Mean over the last ``hops`` hops, as the detector smooths (the first hops over what exists)."""
    out = np.copy(x)
    for lag in range(1, hops):
        out[lag:] += x[:-lag]
        out[:lag] += x[:lag]
    return out / hops


def at_zero(trace, windows, refractory: float, own_thresholds: bool = False) -> dict:
    """The point a device would ship: second threshold 0 (closer to the keyword than to the bank), or, for the
    first stage alone, each keyword's enrolled threshold; pooled FRR and FA/h, and the worst keyword's FA/h."""
    missed = total = false = 0
    worst = 0.0
    for k, w in enumerate(windows):
        threshold = trace.thresholds[k] if own_thresholds else 0.0
        hits, targets, fa = count(replay(trace.times, trace.scores[:, k], threshold, refractory), w)
        missed, total, false = missed + targets - hits, total + targets, false + fa
        worst = max(worst, fa / (w.negative_seconds / 3600.0))
    hours = sum(w.negative_seconds for w in windows) / 3600.0
    return {"frr": missed / total, "fa_per_hour": false / hours, "worst": worst}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--bank", type=Path, help="negative bank (.npy) to compare against (default: the model's)")
    parser.add_argument("--talk-minutes", type=float, default=0.0)
    parser.add_argument("--gate", type=float, nargs="+", default=[0.05, 0.1], help="first stage: threshold minus this")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "second_stage")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = DetectorSettings()
    config = TalkStreamConfig(talk_seconds=60.0 * args.talk_minutes)
    summary, trace, windows = run_talk_stream(
        args.model, read_clips(shared_data("fsdd"), "reserved"), shared_data("real_speech"), AudioCache(2), config,
        settings.refractory_seconds, keep_embeddings=True,
    )  # fmt: skip
    bank = np.load(args.bank or args.model.with_suffix(".negatives.npy"))
    best, cohort = bank_statistics(trace.embeddings, bank)
    cosines = keyword_cosines(trace.embeddings, trace.prototypes)
    points = {
        "ours, first stage only (calibrated + offset)": at_zero(trace, windows, settings.refractory_seconds, True)
    }
    options = {
        "ours, first stage only (calibrated + offset)": summary["calibrated"],
        "ours, first stage only (one global threshold)": summary["global"],
    }
    for name, statistic in (("nn", best), ("cohort", cohort)):
        second = smoothed(cosines - np.nan_to_num(statistic, nan=1.0)[:, None], settings.smoothing_hops)
        for gate in args.gate:
            passes = trace.scores >= (trace.thresholds - gate)[None, :]
            combined = replace(trace, scores=np.where(passes, second, -2.0))
            grid = threshold_grid(combined, windows)
            label = f"second stage {name}, first stage at threshold - {gate:g}"
            options[label] = sweep(combined, windows, grid, settings.refractory_seconds, fa_targets=TALK_FA_TARGETS)
            points[label] = at_zero(combined, windows, settings.refractory_seconds)
    header = ["detector"] + [f"FRR % @ {a:g} FA/h" for a in TALK_FA_TARGETS]
    header += ["FRR % at 0", "FA/h at 0", "worst keyword FA/h at 0"]
    rows = []
    for label, s in options.items():
        p = points.get(label)
        at = [report.pct(p["frr"]), f"{p['fa_per_hour']:.2f}", f"{p['worst']:.2f}"] if p else ["", "", ""]
        rows.append([label] + [report.pct(s["frr_at_fa"][a]) for a in TALK_FA_TARGETS] + at)
    table = report.markdown_table(header, rows)
    point = summary["as_enrolled"]
    text = "\n".join(
        [
            f"# Second-stage options on real talk ({report.today()})",
            "",
            f"- command: `{report.command_line(sys.argv)}`",
            f"- machine: {report.machine()}; {(time.perf_counter() - started) / 60:.1f} min",
            f"- model `{args.model}`, bank `{args.bank or 'the model’s'}` ({len(bank)} windows); talk stream "
            f"{summary['stream_hours']:.2f} h, {summary['target_occurrences']} occurrences of "
            f"{len(summary['keywords'])} keywords; first stage as enrolled: FRR {100 * point['frr']:.1f}%, "
            f"{point['fa_per_hour']:.2f} FA/h",
            "",
            table,
            "",
        ]
    )
    (args.out / "second_stage.md").write_text(text)
    report.write_json(args.out / "second_stage.json", {"options": options, "at_zero": points, "as_enrolled": point})
    plot = {"global": options.pop("ours, first stage only (one global threshold)"), "calibrated": summary["calibrated"]}
    plot |= {"calibrated_at_offset_0": summary["calibrated_at_offset_0"]}
    plot["baselines"] = [{"label": k, "global": v} for k, v in options.items() if k.startswith("second")]
    report.plot_det(plot, args.out / "second_stage_det.png", "second-stage options on real talk")
    print(text)
    print(json.dumps({"seconds": round(time.perf_counter() - started)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
