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

from trainer.datasets import spoken_text


@dataclass(frozen=True)
class EpisodeConfig:
    ways: int = 10
    shots: int = 5
    queries: int = 5
    unknown_queries: int = 10  # clips of words outside the episode
    noise_queries: int = 5  # windows of background noise / silence
    sentence_queries: int = 0  # windows of unlabelled continuous speech (trainer.sentences), open-set
    one_take_ways: float = 0.0  # share of ways enrolled from one take augmented `shots` times, queried by other voices
    confusable_episodes: float = 0.0  # share of episodes whose words and unknowns share spelling with an anchor word

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

    Two harder kinds of episode rehearse what the device finds hard, both off by default (and
    then the draws are exactly those of the plain sampler, so older runs stay repeatable):

    - a *one-take way* repeats one clip as every support (the pipeline augments each copy
      afresh): the device's user enrolls with one voice, and the prototype must still
      reach the word said by other voices, which is what the queries are;
    - a *confusable episode* takes an anchor word, then fills the other ways and the
      unknown queries with words spelt like it (same first or last three letters: "nine",
      "line", "ninety"), because most false alarms are a similar word, not a random one.
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
        # Spelling neighbours among all words (any word can be an unknown query); the eligible ones can be ways.
        self.neighbours = _spelling_neighbours(self.eligible, set(self.by_word)) if config.confusable_episodes else {}
        self.eligible_set = set(self.eligible)

    def sample(self, rng: np.random.Generator) -> Episode:
        c = self.config
        confusable = c.confusable_episodes > 0 and rng.random() < c.confusable_episodes
        words = self._confusable_words(rng) if confusable else self._words(rng, c.ways)
        picks = np.stack([self._picks(word, rng) for word in words])
        others = self._unknown_words(words, spelt_alike=confusable)
        unknown_words = rng.choice(len(others), size=c.unknown_queries, replace=True)
        unknown = np.array([rng.choice(self.by_word[others[i]]) for i in unknown_words], dtype=np.int64)
        return Episode(words, picks[:, : c.shots], picks[:, c.shots :], unknown)

    def _words(self, rng: np.random.Generator, count: int, exclude: Collection[str] = ()) -> list[str]:
        focus = [w for w in self.focus if w not in exclude]
        rest = [w for w in self.rest if w not in exclude]
        if self.focus_fraction > 0:
            focused = min(rng.binomial(count, self.focus_fraction), len(focus))
            focused = max(focused, count - len(rest))
            words = [focus[i] for i in rng.choice(len(focus), size=focused, replace=False)]
            return words + [rest[i] for i in rng.choice(len(rest), size=count - focused, replace=False)]
        pool = [w for w in self.eligible if w not in exclude]
        return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]

    def _confusable_words(self, rng: np.random.Generator) -> list[str]:
        anchor = self._words(rng, 1)[0]
        near = [w for w in self.neighbours[anchor] if w in self.eligible_set]
        chosen = [near[i] for i in rng.choice(len(near), size=min(len(near), self.config.ways - 1), replace=False)]
        words = [anchor, *chosen]
        return words + self._words(rng, self.config.ways - len(words), exclude=set(words))

    def _unknown_words(self, words: list[str], spelt_alike: bool) -> list[str]:
        """Words outside the episode: with ``spelt_alike``, those spelt like its words where there are any."""
        taken = set(words)
        near = sorted({n for w in words for n in self.neighbours.get(w, ()) if n not in taken}) if spelt_alike else []
        return near or [w for w in self.by_word if w not in taken]

    def _picks(self, word: str, rng: np.random.Generator) -> np.ndarray:
        """Support then query clip indices of one way: distinct clips, or one take repeated as every support."""
        c = self.config
        clips = self.by_word[word]
        if c.one_take_ways > 0 and rng.random() < c.one_take_ways:
            chosen = rng.choice(clips, size=1 + c.queries, replace=False)
            return np.concatenate([np.repeat(chosen[:1], c.shots), chosen[1:]])
        return rng.choice(clips, size=c.clips_per_word, replace=False)


def _spelling(word: str) -> str:
    """The letters of a label without its language prefix: ``en_night`` and ``night`` spell alike."""
    return spoken_text(word).replace(" ", "")


def _spelling_neighbours(anchors: Sequence[str], words: Collection[str]) -> dict[str, list[str]]:
    """For each anchor, the other words that share its first three or its last three letters.

    Spelling stands in for sound: cheap, needs no phonemiser, and catches the rhymes and
    shared onsets ("nine"/"line", "seven"/"several") that make up most confusions.
    """
    by_key: dict[str, set[str]] = defaultdict(set)
    for word in words:
        for key in _spelling_keys(word):
            by_key[key].add(word)
    return {a: sorted(set().union(*(by_key[k] for k in _spelling_keys(a))) - {a}) for a in anchors}


def _spelling_keys(word: str) -> list[str]:
    letters = _spelling(word)
    return ["^" + letters[:3], letters[-3:] + "$"] if len(letters) >= 3 else []
