"""The baselines, streamed: MFCC + DTW and EfficientWord-Net's engine on the same audio as ours.

A few-shot table compares clips one by one; a wake word lives in hours of audio. So the
baselines run on the very stream, with the very takes, that ours was enrolled from and scored
on, each as its own kind of detector runs, and their traces go through the same replay and
scoring (``streaming.sweep``: FRR against false alarms per hour; one global threshold, since
neither calibrates per keyword).

- **MFCC + DTW**, the classic personal wake word: the stream's MFCCs (the device's log-mel +
  DCT, 13 coefficients) less a causal 3 s running mean (the streaming form of the per-utterance
  mean the few-shot baseline removes), a 1.215 s window every 0.1 s like ours, score = minus the
  least cost per cell of a slope-limited subsequence DTW (the word may begin and end anywhere in
  the window) against any of the keyword's takes, each processed as the stream is
  (:func:`dtw_template`).
- **EfficientWord-Net**, its engine's loop ported beside ours (``eff_word_net.engine.
  HotwordDetector`` with the settings of the package's microphone demo): 1.5 s windows every
  0.75 s; score = the best ``(cos + 1) / 2`` over the reference takes; after a detection, none
  for 2 s (``relaxation_time``). Twice: as shipped, where ``scoreFrame`` skips a window whose
  first 0.1 s reaches a fifth of its peak (the word began before the window; in a noisy room
  the noise alone often does), and with ``unsafe=True``, the package's switch that scores every
  window. The embeddings are its own model's, in its own venv (``peer.embed_clips``, references
  built as ``generate_reference`` builds them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from device.frontend import FrontendConfig, LogMelStream
from device.noise import coloured_noise
from device.vad import speech_bounds
from trainer.augment import active_power
from trainer.evaluation import peer
from trainer.evaluation.dtw import DTW_LABEL, NUM_CEPS, dct_matrix, subsequence_dtw_windows
from trainer.evaluation.forked import fork_imap, shared
from trainer.evaluation.streaming import FA_TARGETS, RATE, KeywordPlan, KeywordWindows, Trace, sweep, threshold_grid

DTW_MEAN_SECONDS = 3.0  # the running cepstral mean looks this far back
DTW_HOP_SECONDS = 0.1
DTW_TEMPLATE_SNR_DB = 15.0
PEER_GATE_SECONDS = 0.1
PEER_GATE_LEVEL = 0.2
PEER_RELAXATION_SECONDS = 2.0  # the package's single_word_test default


@dataclass
class BaselineTrace:
    """One baseline's pass over the stream: its scores per window and how its detector behaves."""

    label: str
    detector: str  # one line for the report: window, hop, score, refractory
    trace: Trace
    refractory: float


def running_mean_removed(features: np.ndarray, frames: int) -> np.ndarray:
    """``features`` less the mean of the ``frames`` frames up to and including each one (causal)."""
    sums = np.cumsum(np.vstack([np.zeros((1, features.shape[1])), features.astype(np.float64)]), axis=0)
    t = np.arange(1, len(features) + 1)
    lo = np.maximum(0, t - frames)
    means = (sums[t] - sums[lo]) / (t - lo)[:, None]
    return (features - means).astype(np.float32)


def stream_ceps(audio: np.ndarray, frontend: FrontendConfig, mean_seconds: float = DTW_MEAN_SECONDS) -> np.ndarray:
    """``[frames, 13]`` stream MFCCs on the device's frames (frame ``i`` starts at ``i`` hops), running mean removed."""
    # fed a minute at a time (the streaming frontend gives the same frames for any chunking): one
    # call over hours of audio would frame and FFT all of it at once, tens of gigabytes
    mel = LogMelStream(frontend)
    dct = dct_matrix(frontend.num_mels, NUM_CEPS)
    block = 60 * frontend.sample_rate
    samples = np.asarray(audio, np.float32)
    ceps = np.concatenate(
        [mel.feed(samples[i : i + block]) @ dct for i in range(0, len(samples), block)]
        or [np.zeros((0, NUM_CEPS), np.float32)]
    )
    frames = max(1, round(mean_seconds * frontend.sample_rate / frontend.hop_samples))
    return running_mean_removed(ceps, frames)


def dtw_template(take: np.ndarray, frontend: FrontendConfig) -> np.ndarray:
    """A take's MFCC template, processed exactly as the stream is: the same running mean over the same kind of lead.

    In the stream a word follows seconds of room noise, so its running mean is mostly the
    room's; a clean take normalised by its own mean would sit elsewhere (measured: noise-only
    windows then matched the templates better than the keywords did). So the take's speech
    follows 3 s of pink noise at 15 dB SNR (the device's enrollment mixes in the same noise at
    10-20 dB) and only its speech frames are kept.
    """
    take = np.asarray(take, np.float32)
    start, end = speech_bounds(take, frontend.sample_rate) or (0, len(take))
    speech = take[start:end]
    lead = int(DTW_MEAN_SECONDS * frontend.sample_rate)
    audio = np.concatenate([np.zeros(lead, np.float32), speech])
    noise = coloured_noise(len(audio), np.random.default_rng(len(speech)), exponent=1.0)
    audio += noise * np.float32(np.sqrt(active_power(speech) / 10 ** (DTW_TEMPLATE_SNR_DB / 10)))
    return stream_ceps(audio, frontend)[lead // frontend.hop_samples :]


def _worker_distances(job: tuple[np.ndarray, int, int]) -> np.ndarray:
    template, window, hop = job
    return subsequence_dtw_windows(template, shared(), window, hop)


def _distances(templates: Sequence[np.ndarray], frames: np.ndarray, window: int, hop: int, workers: int = 0):
    """Each template's distances to every window, templates spread over forked processes (0: every core)."""
    workers = min(workers or os.cpu_count() or 1, len(templates))
    jobs = [(t, window, hop) for t in templates]
    computed = fork_imap(_worker_distances, jobs, frames, workers)
    return list(tqdm(computed, total=len(jobs), desc=f"{DTW_LABEL} stream", unit="take", leave=False))


def dtw_trace(
    audio: np.ndarray,
    plans: Sequence[KeywordPlan],
    frontend: FrontendConfig,
    window_frames: int,
    refractory: float,
    hop_seconds: float = DTW_HOP_SECONDS,
    workers: int = 0,
) -> BaselineTrace:
    """Score every hop's window against every keyword's takes with subsequence DTW (``refractory`` as ours)."""
    started = time.perf_counter()
    ceps = stream_ceps(audio, frontend)
    frame_seconds = frontend.hop_samples / frontend.sample_rate
    hop = max(1, round(hop_seconds / frame_seconds))
    ends = np.arange(window_frames, len(ceps) + 1, hop)  # what subsequence_dtw_windows scores
    scores = np.full((len(ends), len(plans)), -np.inf)
    takes = [(k, dtw_template(take, frontend)) for k, plan in enumerate(plans) for take in plan.enrolled]
    templates = [template for _, template in takes]
    for (k, _), distances in zip(takes, _distances(templates, ceps, window_frames, hop, workers), strict=True):
        np.maximum(scores[:, k], -distances, out=scores[:, k])
    detector = (
        f"{frontend.samples_for_frames(window_frames) / frontend.sample_rate:.3f} s window every "
        f"{hop * frame_seconds:g} s, score = minus the least "
        f"slope-limited subsequence-DTW cost per cell against a take, {DTW_MEAN_SECONDS:g} s running cepstral "
        f"mean (templates: the take after {DTW_MEAN_SECONDS:g} s of pink noise at {DTW_TEMPLATE_SNR_DB:g} dB SNR), "
        f"{len(takes)} takes, {refractory:g} s refractory"
    )
    trace = Trace(
        times=ends * frame_seconds,
        scores=scores,
        names=[p.name for p in plans],
        thresholds=np.zeros(len(plans)),
        encoder_runs=len(ends),
        seconds=time.perf_counter() - started,
    )
    return BaselineTrace(DTW_LABEL, detector, trace, refractory)


def peer_gate(window: np.ndarray) -> bool:
    """True when the package's ``scoreFrame`` would skip the window (sound already in its first 0.1 s)."""
    peak = float(window.max())
    if peak <= 0.0:
        return True
    return float(np.max(window[: int(PEER_GATE_SECONDS * RATE)] / peak)) > PEER_GATE_LEVEL


def peer_scores(window_embeddings: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The engine's ``scoreVector``: best ``(cos + 1) / 2`` over the reference embeddings, per window."""
    return ((window_embeddings @ references.T + 1.0) / 2.0).max(axis=1)


def peer_traces(venv, audio: np.ndarray, plans: Sequence[KeywordPlan], workers: int = 0) -> list[BaselineTrace]:
    """EfficientWord-Net's engine over the stream, as shipped (its gate on) and with ``unsafe=True`` (gate off).

    Both come from one pass: every window is embedded once, and the gated variant scores
    the windows its gate skips as 0 (the engine returns None for them: they cannot fire).
    """
    started = time.perf_counter()
    window, hop = int(peer.PEER_WINDOW_SECONDS * RATE), int(peer.PEER_HOP_SECONDS * RATE)
    starts = np.arange(0, len(audio) - window + 1, hop)
    gated = np.array([peer_gate(audio[s : s + window]) for s in starts], dtype=bool)
    embeddings = peer.embed_clips(
        venv, [audio[s : s + window] for s in starts], workers, f"{peer.PEER_LABEL} stream windows"
    )
    takes = [take for plan in plans for take in plan.enrolled]
    references = peer.embed_clips(venv, takes, workers, f"{peer.PEER_LABEL} references")  # one call for all keywords
    bounds = np.cumsum([0, *(len(plan.enrolled) for plan in plans)])
    scores = np.zeros((len(starts), len(plans)))
    for k in range(len(plans)):
        scores[:, k] = peer_scores(embeddings, references[bounds[k] : bounds[k + 1]])
    seconds = time.perf_counter() - started
    common = (
        f"{peer.PEER_WINDOW_SECONDS:g} s window every {peer.PEER_HOP_SECONDS:g} s, score = best (cos + 1) / 2 "
        f"over the takes, {PEER_RELAXATION_SECONDS:g} s relaxation"
    )
    traces = []
    for label, detector, these in (
        (
            f"{peer.PEER_LABEL} (its gate)",
            f"{common}; its gate skipped {int(gated.sum())} of {len(starts)} windows (sound in the first 0.1 s)",
            np.where(gated[:, None], 0.0, scores),
        ),
        (f"{peer.PEER_LABEL} (no gate)", f"{common}; `unsafe=True`: every window scored", scores),
    ):
        trace = Trace(
            times=(starts + window) / RATE,
            scores=these,
            names=[p.name for p in plans],
            thresholds=np.zeros(len(plans)),
            encoder_runs=len(starts),
            seconds=seconds,
        )
        traces.append(BaselineTrace(label, detector, trace, PEER_RELAXATION_SECONDS))
    return traces


def summarise_baseline(
    baseline: BaselineTrace, windows: Sequence[KeywordWindows], fa_targets: Sequence[float] = FA_TARGETS
) -> dict:
    """The baseline's FRR / false-alarm sweep over one global threshold, and how it ran."""
    trace = baseline.trace
    # Each baseline fires on the first window over its threshold, as its engine does (hold_hops=0).
    grid = threshold_grid(trace, windows)
    result = sweep(trace, windows, grid, baseline.refractory, fa_targets=fa_targets, hold_hops=0)
    return {
        "label": baseline.label,
        "detector": baseline.detector,
        "refractory_seconds": baseline.refractory,
        "windows_scored": trace.encoder_runs,
        "processing_seconds": round(trace.seconds, 1),
        "global": result,
    }
