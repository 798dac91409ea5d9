"""N-way K-shot classification episodes: the few-shot figure of merit, closed and open set.

An episode rehearses enrollment: ``ways`` words, ``shots`` support takes each make the
prototypes (mean of unit embeddings, as ``device.enroll`` does), queries are classified by
best cosine. Two speaker regimes, because they answer different questions:

- ``same``: support and queries from one speaker (a user enrolling their own voice; FSDD has
  50 takes of each digit per speaker);
- ``cross``: queries from other speakers than the support. With ``support="speaker"`` one
  speaker gives all supports (FSDD: a user enrolling, others querying); with ``"mixed"``
  (Speech Commands, nearly one clip per speaker) each word's support is drawn freely and its
  queries come only from speakers absent from that support. ``"auto"`` picks ``speaker``
  when the data allows it for the shot count; callers comparing shot counts on one dataset
  should fix it (see :func:`support_mode`), or 1-shot and 5-shot would differ in kind.

Open set adds the device's real problem: ``unknown_queries`` clips of words outside the
episode and ``noise_queries`` background-noise windows, all of which should be rejected by
a threshold on the best score. Episodes are seeded index arithmetic over an
:class:`~trainer.evaluation.data.ItemBank`, so every method sees the same episodes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from trainer.evaluation.data import NOISE_WORD
from trainer.evaluation.metrics import mean_ci, threshold_at_frr

OPEN_SET_FRR = (0.01, 0.05, 0.10, 0.20)  # operating points of the open-set sweep
DEFAULT_OPEN_FRR = 0.05


@dataclass(frozen=True)
class FewShotConfig:
    ways: int = 10
    shots: int = 5
    queries: int = 5  # per word, at most (fewer when the data has fewer)
    episodes: int = 400
    mode: str = "cross"  # same | cross
    seed: int = 0
    # cross mode: "speaker" (all supports by one speaker), "mixed" (each word's supports by any speakers,
    # its queries by others) or "auto" ("speaker" when the data allows it for this shot count)
    support: str = "auto"
    unknown_queries: int = 0  # open set: clips of words outside the episode
    noise_queries: int = 0  # open set: background-noise windows
    # Queries (not supports) pass through this sample rate first, e.g. 8000: enrolled on a wide-band
    # microphone, heard through a telephone-band channel. 0: as recorded.
    query_rate: int = 0

    @property
    def open_set(self) -> bool:
        return self.unknown_queries > 0 or self.noise_queries > 0


@dataclass(frozen=True)
class Episode:
    """Item indices of one episode. ``query_labels`` index ``words``; unknown and noise carry none."""

    words: tuple[str, ...]
    support: np.ndarray  # [ways, shots]
    query: np.ndarray  # [n]
    query_labels: np.ndarray  # [n] in 0..ways-1
    unknown: np.ndarray  # [u]
    noise: np.ndarray  # [z]

    @property
    def all_queries(self) -> np.ndarray:
        return np.concatenate([self.query, self.unknown, self.noise]).astype(np.int64)

    def with_queries_from(self, offset: int) -> Episode:
        """The same episode with every query read ``offset`` items further on (a transformed copy of the bank)."""
        return replace(self, query=self.query + offset, unknown=self.unknown + offset, noise=self.noise + offset)


class EpisodeSampler:
    """Seeded episodes over item labels; raises at construction when the data cannot hold them."""

    def __init__(self, words: np.ndarray, speakers: np.ndarray, config: FewShotConfig) -> None:
        self.config = config
        self.words = np.asarray(words)
        self.speakers = np.asarray(speakers)
        self.by_word: dict[str, np.ndarray] = {}
        self.by_word_speaker: dict[tuple[str, str], np.ndarray] = {}
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (w, s) in enumerate(zip(self.words, self.speakers, strict=True)):
            if w != NOISE_WORD:
                groups[(w, s)].append(i)
        for key, ix in groups.items():
            self.by_word_speaker[key] = np.array(ix)
        for w in sorted({w for w, _ in groups}):
            self.by_word[w] = np.nonzero(self.words == w)[0]
        self.noise = np.nonzero(self.words == NOISE_WORD)[0]
        self._plan()

    def _speaker_words(self, minimum: int) -> dict[str, list[str]]:
        """Speakers -> words they say at least ``minimum`` times."""
        out: dict[str, list[str]] = defaultdict(list)
        for (w, s), ix in sorted(self.by_word_speaker.items()):
            if len(ix) >= minimum:
                out[s].append(w)
        return out

    def _plan(self) -> None:
        c = self.config
        if c.mode not in ("same", "cross"):
            raise ValueError(f"mode must be same or cross, got {c.mode!r}")
        need = c.shots + 1 if c.mode == "same" else c.shots
        per_speaker = self._speaker_words(need)
        self.speaker_pool = {s: ws for s, ws in per_speaker.items() if len(ws) >= c.ways}
        if c.mode == "cross":  # the one-speaker support needs other speakers' takes to query
            self.speaker_pool = {
                s: [w for w in ws if len(self.by_word[w]) > len(self.by_word_speaker[(w, s)])]
                for s, ws in self.speaker_pool.items()
            }
            self.speaker_pool = {s: ws for s, ws in self.speaker_pool.items() if len(ws) >= c.ways}
        if c.support not in ("auto", "speaker", "mixed"):
            raise ValueError(f"support must be auto, speaker or mixed, got {c.support!r}")
        if c.mode == "cross" and c.support == "speaker" and not self.speaker_pool:
            raise ValueError(f"no speaker has {c.shots} takes of {c.ways} words (with other speakers to query)")
        self.one_speaker_support = bool(self.speaker_pool) and not (c.mode == "cross" and c.support == "mixed")
        if c.mode == "same" and not self.one_speaker_support:
            raise ValueError(
                f"same-speaker {c.shots}-shot episodes need a speaker with >= {c.shots + 1} takes of "
                f"{c.ways} words; this data has none"
            )
        self.word_pool = sorted(w for w, ix in self.by_word.items() if len(ix) > c.shots)
        if not self.one_speaker_support and len(self.word_pool) < c.ways:
            raise ValueError(f"need {c.ways} words with more than {c.shots} clips; found {len(self.word_pool)}")
        if c.unknown_queries and len(self.by_word) <= c.ways:
            raise ValueError(f"open set needs words outside the {c.ways}-way episode; the data has {len(self.by_word)}")
        if c.noise_queries and len(self.noise) == 0:
            raise ValueError("open set with noise queries needs noise items in the bank")

    def sample(self, rng: np.random.Generator) -> Episode:
        """One episode (retrying the rare draw where a word has no eligible query left)."""
        for _ in range(100):
            episode = self._try_sample(rng)
            if episode is not None:
                return episode
        raise RuntimeError("could not draw an episode with queries for every word; too little data")

    def _try_sample(self, rng: np.random.Generator) -> Episode | None:
        c = self.config
        if self.one_speaker_support:
            speakers = sorted(self.speaker_pool)
            speaker = speakers[rng.integers(len(speakers))]
            candidates = self.speaker_pool[speaker]
        else:
            speaker, candidates = None, self.word_pool
        words = [candidates[i] for i in sorted(rng.choice(len(candidates), c.ways, replace=False))]
        supports, queries, labels = [], [], []
        for label, word in enumerate(words):
            if speaker is not None:
                own = rng.permutation(self.by_word_speaker[(word, speaker)])
                support = own[: c.shots]
                pool = (
                    own[c.shots :]
                    if c.mode == "same"
                    else self.by_word[word][self.speakers[self.by_word[word]] != speaker]
                )
            else:
                everyone = self.by_word[word]
                support = rng.choice(everyone, c.shots, replace=False)
                pool = everyone[~np.isin(self.speakers[everyone], self.speakers[support])]
            if len(pool) == 0:
                return None
            query = rng.choice(pool, min(c.queries, len(pool)), replace=False)
            supports.append(support)
            queries.append(query)
            labels.append(np.full(len(query), label))
        unknown = np.zeros(0, np.int64)
        if c.unknown_queries:
            used = set(words)
            others = [w for w in self.by_word if w not in used]
            picked = rng.choice(len(others), c.unknown_queries, replace=True)
            unknown = np.array([rng.choice(self.by_word[others[i]]) for i in picked], dtype=np.int64)
        noise = rng.choice(self.noise, c.noise_queries, replace=False) if c.noise_queries else np.zeros(0, np.int64)
        return Episode(
            tuple(words),
            np.stack(supports).astype(np.int64),
            np.concatenate(queries).astype(np.int64),
            np.concatenate(labels).astype(np.int64),
            unknown,
            np.asarray(noise, dtype=np.int64),
        )


def support_mode(words: np.ndarray, speakers: np.ndarray, ways: int, shots: int) -> str:
    """``speaker`` if one-speaker support is possible at ``shots`` (the largest a comparison uses), else ``mixed``."""
    config = FewShotConfig(ways=ways, shots=shots, mode="cross", support="auto")
    return "speaker" if EpisodeSampler(words, speakers, config).one_speaker_support else "mixed"


def sample_episodes(words: np.ndarray, speakers: np.ndarray, config: FewShotConfig) -> list[Episode]:
    """``config.episodes`` episodes; episode ``i`` depends only on ``(seed, i)`` so runs are repeatable."""
    sampler = EpisodeSampler(words, speakers, config)
    return [sampler.sample(np.random.default_rng([config.seed, i])) for i in range(config.episodes)]


class Scorer(Protocol):
    """Scores queries against an episode's words; higher means more alike."""

    label: str

    def prepare(self, episodes: Sequence[Episode]) -> None: ...

    def scores(self, support: np.ndarray, queries: np.ndarray) -> np.ndarray: ...


class EmbeddingScorer:
    """Prototype = normalised mean of the support embeddings; score = cosine (what the device does)."""

    def __init__(self, label: str, embeddings: np.ndarray) -> None:
        self.label = label
        self.embeddings = np.asarray(embeddings, dtype=np.float32)

    def prepare(self, episodes: Sequence[Episode]) -> None:
        return None

    def scores(self, support: np.ndarray, queries: np.ndarray) -> np.ndarray:
        prototypes = self.embeddings[support].mean(axis=1)
        prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True) + 1e-12
        return self.embeddings[queries] @ prototypes.T


@dataclass
class FewShotResult:
    """Per-episode accuracies and, for the open set, pooled best scores; summarised by :meth:`summary`."""

    method: str
    task: str
    config: FewShotConfig
    accuracy: np.ndarray  # [episodes] closed-set accuracy on known queries
    known_best: np.ndarray = field(default_factory=lambda: np.zeros(0))  # best score of each known query
    known_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    known_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unknown_best: np.ndarray = field(default_factory=lambda: np.zeros(0))
    unknown_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    noise_best: np.ndarray = field(default_factory=lambda: np.zeros(0))
    noise_episode: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seconds: float = 0.0

    def open_set_at(self, target_frr: float) -> dict:
        """Threshold rejecting ``target_frr`` of known queries; per-episode accuracy and FAR there (mean, CI)."""
        t = threshold_at_frr(self.known_best, target_frr)
        n = len(self.accuracy)
        ok = self.known_correct & (self.known_best >= t)
        accuracy = _per_episode(ok, self.known_episode, n)
        out = {"target_frr": target_frr, "threshold": round(t, 4)}
        out["known_accuracy"], out["known_accuracy_ci"] = mean_ci(accuracy)
        out["frr"] = float(np.mean(self.known_best < t))
        for name, best, episode in (
            ("unknown", self.unknown_best, self.unknown_episode),
            ("noise", self.noise_best, self.noise_episode),
        ):
            if len(best):
                out[f"far_{name}"], out[f"far_{name}_ci"] = mean_ci(_per_episode(best >= t, episode, n))
        return out

    def summary(self) -> dict:
        mean, ci = mean_ci(self.accuracy)
        out = {
            "method": self.method,
            "task": self.task,
            **asdict(self.config),
            "accuracy": mean,
            "ci": ci,
            "chance": 1.0 / self.config.ways,
            "seconds": round(self.seconds, 2),
        }
        if self.config.open_set:
            out["open_set"] = [self.open_set_at(f) for f in OPEN_SET_FRR]
        return out


def _per_episode(flags: np.ndarray, episode: np.ndarray, n: int) -> np.ndarray:
    hits = np.bincount(episode, weights=flags.astype(np.float64), minlength=n)
    counts = np.bincount(episode, minlength=n)
    return hits[counts > 0] / counts[counts > 0]


def evaluate(scorer: Scorer, episodes: Sequence[Episode], config: FewShotConfig, task: str) -> FewShotResult:
    """Score every episode with ``scorer``: closed-set accuracy per episode, open-set best scores pooled."""
    started = time.perf_counter()
    scorer.prepare(episodes)
    accuracy = np.empty(len(episodes))
    pools: dict[str, list[np.ndarray]] = defaultdict(list)
    for e, episode in enumerate(episodes):
        scores = scorer.scores(episode.support, episode.all_queries)
        best = scores.max(axis=1)
        nq, nu = len(episode.query), len(episode.unknown)
        correct = scores[:nq].argmax(axis=1) == episode.query_labels
        accuracy[e] = correct.mean()
        if config.open_set:
            for name, part in (("known", best[:nq]), ("unknown", best[nq : nq + nu]), ("noise", best[nq + nu :])):
                pools[f"{name}_best"].append(part)
                pools[f"{name}_episode"].append(np.full(len(part), e))
            pools["known_correct"].append(correct)
    result = FewShotResult(scorer.label, task, config, accuracy)
    for key, parts in pools.items():
        setattr(result, key, np.concatenate(parts))
    result.seconds = time.perf_counter() - started
    return result
