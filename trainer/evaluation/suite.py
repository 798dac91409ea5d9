"""Running evaluations: build the item bank once, score every method on the same episodes, stream.

The CLI (``trainer.evaluation.cli``) only parses arguments; everything that decides what
is measured lives here, so ``kws-eval all`` and the single commands share one code path.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.detector import DetectorSettings
from device.manifest import load_manifest
from trainer.datasets import Clip
from trainer.evaluation import guard
from trainer.evaluation.data import ItemBank, load_audios, noise_windows, through_rate
from trainer.evaluation.dtw import DTWScorer, mfcc
from trainer.evaluation.embedders import EmbedderSpec, embed_all
from trainer.evaluation.fewshot import EmbeddingScorer, FewShotConfig, evaluate, sample_episodes
from trainer.evaluation.localwake import localwake_traces
from trainer.evaluation.report import pct
from trainer.evaluation.stream_baselines import dtw_trace, peer_traces, summarise_baseline
from trainer.evaluation.streaming import (
    FA_TARGETS,
    KeywordPlan,
    KeywordWindows,
    StreamConfig,
    StreamItem,
    Trace,
    build_stream,
    choose_negatives,
    keyword_windows,
    plan_keywords,
    run_detector,
    score_distributions,
    summarise,
)
from trainer.evaluation.talk import (
    TALK_FA_TARGETS,
    TalkPiece,
    TalkStreamConfig,
    build_talk_stream,
    choose_talk,
    own_speech_recordings,
    own_voice_items,
    summarise_talk,
    with_thresholds,
)
from trainer.real_speech import assert_talk_disjoint, talk_files

log = logging.getLogger(__name__)


class AudioCache:
    """Decoded clips by path, so a run that uses FSDD for few-shot and streaming decodes it once."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self._audio: dict[Path, np.ndarray] = {}

    def get(self, clips: Sequence[Clip], desc: str = "decoding") -> list[np.ndarray]:
        missing = list(dict.fromkeys(c.path for c in clips if c.path not in self._audio))
        if missing:
            for path, audio in zip(missing, load_audios(missing, self.workers, desc), strict=True):
                self._audio[path] = audio
        return [self._audio[c.path] for c in clips]


@dataclass(frozen=True)
class Method:
    """A column of the tables: an embedder, or the DTW baseline (``spec`` None)."""

    label: str
    spec: EmbedderSpec | None = None


def check_models(methods: Sequence[Method], clips: Sequence[Clip], claims_unseen_words: bool) -> dict:
    """Run the leakage guard against every encoder's manifest (the teacher and DTW trained on none of ours)."""
    checked = {}
    for method in methods:
        if method.spec is not None and method.spec.kind == "encoder":
            training = load_manifest(method.spec.path).training
            checked[method.label] = guard.check(clips, training, method.spec.path, claims_unseen_words)
    return checked


def make_bank(
    name: str, clips: Sequence[Clip], cache: AudioCache, noise: Sequence[np.ndarray], noise_count: int, seed: int
) -> ItemBank:
    audio = cache.get(clips, f"decoding {name}")
    windows = noise_windows(noise, noise_count, 1.0, np.random.default_rng([seed, 7])) if noise_count else []
    return ItemBank.from_clips(name, clips, audio, windows)


def run_fewshot(
    bank: ItemBank,
    tasks: Sequence[tuple[str, FewShotConfig]],
    methods: Sequence[Method],
    workers: int = 0,
    dtw_band: float | None = None,
) -> list[dict]:
    """Every task x every method on identical episodes; returns one summary dict per (task, method).

    Episodes are drawn first, so a task the data cannot hold fails before minutes of embedding.
    A task with ``query_rate`` reads its queries from a copy of the bank passed through that
    rate (appended to the items every method scores), its supports from the bank as recorded.
    """
    audio = list(bank.audio)
    offsets = {0: 0}
    for rate in sorted({config.query_rate for _, config in tasks if config.query_rate}):
        offsets[rate] = len(audio)
        audio += [through_rate(a, rate) for a in tqdm(bank.audio, desc=f"{bank.name} at {rate} Hz", leave=False)]
    episodes = {}
    for task, config in tasks:
        drawn = sample_episodes(bank.words, bank.speakers, config)
        episodes[task] = [e.with_queries_from(offsets[config.query_rate]) for e in drawn]
    scorers, setup = [], {}
    for method in methods:
        started = time.perf_counter()
        if method.spec is None:
            features = [mfcc(a) for a in tqdm(audio, desc=f"MFCC {bank.name}", unit="clip", leave=False)]
            scorers.append(DTWScorer(features, method.label, band=dtw_band, workers=workers))
        else:
            embeddings = embed_all(method.spec, audio, workers, f"embedding {bank.name} ({method.label})")
            scorers.append(EmbeddingScorer(method.label, embeddings))
        setup[method.label] = time.perf_counter() - started
    summaries = []
    for task, config in tasks:
        for scorer in scorers:
            result = evaluate(scorer, episodes[task], config, task)
            summary = result.summary()
            summary["setup_seconds"] = round(setup[scorer.label], 1)
            summaries.append(summary)
            extra = ""
            if config.open_set:
                point = next(p for p in summary["open_set"] if abs(p["target_frr"] - 0.05) < 1e-9)
                far_unknown, far_noise = pct(point.get("far_unknown")), pct(point.get("far_noise"))
                extra = f"  open set @5% FRR: FAR unknown {far_unknown}, noise {far_noise}"
            tqdm.write(
                f"  {task:<42} {scorer.label:<10} {pct(summary['accuracy'], summary['ci']):>12}  "
                f"({result.seconds:.1f} s){extra}"
            )
    return summaries


def fewshot_tasks(
    prefix: str, ways: int, shots: Sequence[int], modes: Sequence[str], base: FewShotConfig, support: str = "auto"
) -> list[tuple[str, FewShotConfig]]:
    tasks = []
    for mode in modes:
        for k in shots:
            config = replace(base, ways=ways, shots=k, mode=mode, support=support)
            open_tag = ", open set" if config.open_set else ""
            rate_tag = f", queries at {config.query_rate / 1000:g} kHz" if config.query_rate else ""
            tasks.append((f"{prefix} {ways}-way {k}-shot {mode}{open_tag}{rate_tag}", config))
    return tasks


def stream_baselines(
    names: Sequence[str],
    audio: np.ndarray,
    enrolled: Sequence[KeywordPlan],
    manifest,
    windows: Sequence[KeywordWindows],
    refractory: float,
    venvs: dict[str, Path] | None = None,
    workers: int = 0,
    fa_targets: Sequence[float] = FA_TARGETS,
) -> list[dict]:
    """Each named baseline (``dtw``, ``peer``, ``localwake``) over the stream with the takes the device accepted.

    ``venvs`` maps a peer's name to its venv (default: where its install script puts it).
    """
    venvs = venvs or {}
    summaries = []
    for name in names:
        if name == "dtw":
            traces = [
                dtw_trace(audio, enrolled, manifest.frontend, manifest.window_frames, refractory, workers=workers)
            ]
        elif name == "peer":
            traces = peer_traces(venvs.get("peer"), audio, enrolled, workers)
        elif name == "localwake":
            traces = localwake_traces(venvs.get("localwake"), audio, enrolled, workers)
        else:
            raise ValueError(f"unknown stream baseline {name!r}: use dtw, peer, localwake")
        summaries += [summarise_baseline(baseline, windows, fa_targets) for baseline in traces]
        tqdm.write(f"  stream baseline {name}: {traces[0].trace.seconds:.0f} s")
    return summaries


def run_stream(
    model_path: Path,
    keyword_clips: Sequence[Clip],
    negative_clips: Sequence[Clip],
    noise: Sequence[np.ndarray],
    cache: AudioCache,
    config: StreamConfig,
    refractory: float,
    claims_unseen_words: bool = True,
    baselines: Sequence[str] = (),
    venvs: dict[str, Path] | None = None,
    workers: int = 0,
) -> tuple[dict, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Plan keywords, build the stream, enroll, run the detector, score; returns the summary and score samples.

    ``baselines`` (``dtw``, ``peer``) then run on the same stream with the takes the device accepted.
    """
    rng = np.random.default_rng([config.seed, 2])
    audio = cache.get(keyword_clips, "decoding keyword set")
    words = np.array([c.word for c in keyword_clips])
    speakers = np.array([c.speaker_key for c in keyword_clips])
    plans, used = plan_keywords(words, speakers, audio, config)
    manifest = load_manifest(model_path)
    checked = guard.check([keyword_clips[i] for i in used], manifest.training, model_path, claims_unseen_words)
    keyword_pairs = {(p.word, p.speaker) for p in plans}
    keyword_words = {p.word for p in plans}
    used_set = set(used.tolist())
    same_source = [
        StreamItem(audio[i], c.word, c.speaker_key, "same-source")
        for i, c in enumerate(keyword_clips)
        if i not in used_set
        and (c.word, c.speaker_key) not in keyword_pairs
        and (config.mode == "personal" or c.word not in keyword_words)
    ]
    other_audio = cache.get(negative_clips, "decoding negative words") if negative_clips else []
    others = [
        StreamItem(a, c.word, c.speaker_key, "other-words") for a, c in zip(other_audio, negative_clips, strict=True)
    ]
    targets = [t for p in plans for t in p.targets]
    share = config.same_source_negative_share if others else 1.0
    negatives = choose_negatives([(same_source, share), (others, 1.0 - share)], config.negative_seconds, config, rng)
    items = [*targets, *negatives]
    order = rng.permutation(len(items))
    stream = build_stream([items[i] for i in order], noise, config, rng)
    tqdm.write(
        f"  stream: {stream.seconds / 3600:.2f} h, {len(targets)} keyword occurrences of {len(plans)} keywords, "
        f"{len(negatives)} non-keyword words, {config.snr_db:g} dB SNR"
    )
    trace, enrollment = run_detector(model_path, plans, stream, config.chunk_seconds)
    word_of = {p.name: p.word for p in plans}
    windows = [
        keyword_windows(stream.events, name, word_of[name], stream.seconds + 1.0, config.tolerance_seconds)
        for name in trace.names
    ]
    summary = summarise(trace, windows, stream, config, refractory)
    by_name = {p.name: p for p in plans}
    enrolled = [by_name[name] for name in trace.names]  # the keywords the device enrolled, in the trace's order
    summary["baselines"] = stream_baselines(
        baselines, stream.audio, enrolled, manifest, windows, refractory, venvs, workers
    )
    summary["enrollment"] = enrollment
    summary["guard"] = checked
    summary["negative_sources"] = {
        "same_source": sum(1 for n in negatives if n.source == "same-source"),
        "other_words": sum(1 for n in negatives if n.source == "other-words"),
    }
    distributions = score_distributions(trace, windows, stream.events, config.tolerance_seconds)
    return summary, distributions


def own_speech_thresholds(
    model_path: Path, plans: Sequence[KeywordPlan], speech: dict[str, np.ndarray], names: Sequence[str]
) -> dict[str, float]:
    """Each enrolled keyword's threshold when its takes come with its speaker's own speech (``--speech``).

    The same accepted takes are enrolled again in a temporary store with ``Spotter.enroll(...,
    speech=...)``: exactly what a user's ``kws enroll NAME TAKES --speech FILE`` stores.
    """
    from device.spotter import Spotter

    thresholds = {}
    with tempfile.TemporaryDirectory(prefix="kws-eval-speech-") as store:
        spotter = Spotter(store_dir=store, model_path=model_path, settings=DetectorSettings(best_only=False))
        for plan in plans:
            if plan.name in names and plan.name in speech and plan.enrolled:
                keyword = spotter.enroll(plan.name, plan.enrolled, keep_takes=False, speech=[speech[plan.name]])
                thresholds[plan.name] = float(keyword.threshold)
    return thresholds


def run_talk_stream(
    model_path: Path,
    keyword_clips: Sequence[Clip],
    talk_root: Path,
    cache: AudioCache,
    config: TalkStreamConfig,
    refractory: float,
    baselines: Sequence[str] = (),
    venvs: dict[str, Path] | None = None,
    workers: int = 0,
    keep_embeddings: bool = False,
) -> tuple[dict, Trace, list[KeywordWindows]]:
    """Keywords spliced into the evaluation part of the real-talk corpus, ours and the baselines on it.

    Two guards run first: the keyword takes against the model's training clips (as on the
    noise streams), and the talk the model's negative bank and training used against the
    evaluation talk (``assert_talk_disjoint``): a false-alarm rate on talk the bank holds
    would be a rate on memory.
    """
    manifest = load_manifest(model_path)
    trained_talk = list(manifest.training.get("negative_bank", {}).get("talk_files", []))
    trained_talk += [str(i) for i in guard.training_clip_ids(manifest.training, model_path) or []]
    assert_talk_disjoint(trained_talk, talk_root)
    rng = np.random.default_rng([config.seed, 5])
    audio = cache.get(keyword_clips, "decoding keyword set")
    words = np.array([c.word for c in keyword_clips])
    speakers = np.array([c.speaker_key for c in keyword_clips])
    plan_config = StreamConfig(
        mode=config.mode,
        keywords=config.keywords,
        enroll_takes=config.enroll_takes,
        occurrences=config.occurrences,
        seed=config.seed,
    )
    plans, used = plan_keywords(words, speakers, audio, plan_config)
    checked = guard.check([keyword_clips[i] for i in used], manifest.training, model_path, True)
    taken = set(used.tolist())
    own = own_voice_items(words, speakers, audio, plans, taken, config.own_voice_words, rng)
    # Its own generator: measuring --speech must not re-draw the stream everything else is measured on.
    speech_rng = np.random.default_rng([config.seed, 6])
    own_speech = own_speech_recordings(words, speakers, audio, plans, taken, config.own_speech_seconds, speech_rng)
    files = choose_talk(talk_files(talk_root, "eval"), config.talk_seconds, rng)
    talk = [
        TalkPiece(f, a)
        for f, a in zip(files, load_audios([f.path for f in files], workers, "decoding talk"), strict=True)
    ]
    items = [t for p in plans for t in p.targets] + own
    stream = build_talk_stream(talk, [items[i] for i in rng.permutation(len(items))], config, rng)
    del talk
    tqdm.write(
        f"  talk stream: {stream.seconds / 3600:.2f} h ({len(files)} talk files), "
        f"{sum(len(p.targets) for p in plans)} keyword occurrences of {len(plans)} keywords, {len(own)} own-voice words"
    )
    trace, enrollment = run_detector(model_path, plans, stream, config.chunk_seconds, keep_embeddings)
    word_of = {p.name: p.word for p in plans}
    windows = [
        keyword_windows(stream.events, name, word_of[name], stream.seconds + 1.0, config.tolerance_seconds)
        for name in trace.names
    ]
    summary = summarise_talk(trace, windows, stream, config, refractory)
    speech_thresholds = own_speech_thresholds(model_path, plans, own_speech, trace.names)
    summary["with_own_speech"] = with_thresholds(trace, speech_thresholds, windows, stream.events, refractory)
    summary["with_own_speech"]["speech_seconds"] = config.own_speech_seconds
    by_name = {p.name: p for p in plans}
    enrolled = [by_name[name] for name in trace.names]
    summary["baselines"] = stream_baselines(
        baselines, stream.audio, enrolled, manifest, windows, refractory, venvs, workers, TALK_FA_TARGETS
    )
    summary["enrollment"] = enrollment
    summary["guard"] = {**checked, "talk_files_checked": len(trained_talk)}
    return summary, trace, windows
