"""N-way K-shot episode sampling over clip indices, with open-set "unknown" queries.

An episode is what the device does at enrollment and detection, rehearsed: a few
support takes per word build prototypes, queries must land near their own word's
prototype, and open-set queries (other words, noise) must land near none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeConfig:
    ways: int = 10
    shots: int = 5
    queries: int = 5
    unknown_queries: int = 10  # clips of words outside the episode
    noise_queries: int = 5  # windows of background noise / silence
    sentence_queries: int = 0  # windows of unlabelled continuous speech (trainer.sentences), open-set

    @property
    def clips_per_word(self) -> int:
        return self.shots + self.queries

    @property
    def size(self) -> int:
        """Windows per episode: supports, queries, unknown words, sentence windows, noise."""
        return self.ways * self.clips_per_word + self.unknown_queries + self.sentence_queries + self.noise_queries

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Episode:
    """Clip indices of one episode; noise queries are made by the pipeline, not drawn from clips."""

    words: list[str]
    support: np.ndarray  # [ways, shots]
    query: np.ndarray  # [ways, queries]
    unknown: np.ndarray  # [unknown_queries]


class EpisodeSampler:
    """Draws episodes from clips labelled by word; support and query clips never overlap.

    ``focus_words`` (for instance the words people recorded, among thousands of TTS words) fill
    each of an episode's ways with probability ``focus_fraction`` instead of their share of the
    vocabulary; the other ways come from the remaining words.
    """

    def __init__(
        self,
        labels: Sequence[str],
        config: EpisodeConfig,
        focus_words: Collection[str] = (),
        focus_fraction: float = 0.0,
    ) -> None:
        self.config = config
        by_word: dict[str, list[int]] = defaultdict(list)
        for index, word in enumerate(labels):
            by_word[word].append(index)
        self.by_word = {w: np.asarray(ix) for w, ix in by_word.items()}
        self.eligible = sorted(w for w, ix in self.by_word.items() if len(ix) >= config.clips_per_word)
        if len(self.eligible) <= config.ways:
            raise ValueError(
                f"need more than {config.ways} words with >= {config.clips_per_word} clips each "
                f"for {config.ways}-way episodes (plus unknown words); found {len(self.eligible)}"
            )
        focus = set(focus_words)
        self.focus = [w for w in self.eligible if w in focus]
        self.rest = [w for w in self.eligible if w not in focus]
        self.focus_fraction = focus_fraction if self.focus and self.rest else 0.0

    def sample(self, rng: np.random.Generator) -> Episode:
        c = self.config
        if self.focus_fraction > 0:
            focused = min(rng.binomial(c.ways, self.focus_fraction), len(self.focus))
            focused = max(focused, c.ways - len(self.rest))
            words = [self.focus[i] for i in rng.choice(len(self.focus), size=focused, replace=False)]
            words += [self.rest[i] for i in rng.choice(len(self.rest), size=c.ways - focused, replace=False)]
        else:
            words = [self.eligible[i] for i in rng.choice(len(self.eligible), size=c.ways, replace=False)]
        picks = np.stack([rng.choice(self.by_word[w], size=c.clips_per_word, replace=False) for w in words])
        others = [w for w in self.by_word if w not in set(words)]
        unknown_words = rng.choice(len(others), size=c.unknown_queries, replace=True)
        unknown = np.array([rng.choice(self.by_word[others[i]]) for i in unknown_words], dtype=np.int64)
        return Episode(words, picks[:, : c.shots], picks[:, c.shots :], unknown)
