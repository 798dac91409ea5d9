"""Episode sampling and the prototypical loss, against hand-computed cases."""

import importlib.util
import math

import numpy as np
import pytest

from trainer.episodes import EpisodeConfig, EpisodeSampler
from trainer.reserved import is_reserved


def _labels(words: int, clips: int) -> list[str]:
    return [f"word{w}" for w in range(words) for _ in range(clips)]


def test_episode_shapes_and_no_overlap_between_support_and_query():
    config = EpisodeConfig(ways=5, shots=3, queries=2, unknown_queries=4, noise_queries=1)
    labels = _labels(12, 8)
    sampler = EpisodeSampler(labels, config)
    rng = np.random.default_rng(0)
    for _ in range(50):
        episode = sampler.sample(rng)
        assert episode.support.shape == (5, 3) and episode.query.shape == (5, 2) and episode.unknown.shape == (4,)
        assert not set(episode.support.ravel()) & set(episode.query.ravel())
        for row, word in enumerate(episode.words):
            assert {labels[i] for i in episode.support[row]} == {word}
            assert {labels[i] for i in episode.query[row]} == {word}
        assert not {labels[i] for i in episode.unknown} & set(episode.words)
    assert config.size == 5 * 5 + 4 + 1


def test_sampler_needs_enough_words():
    with pytest.raises(ValueError, match="need more than 5 words"):
        EpisodeSampler(_labels(5, 10), EpisodeConfig(ways=5, shots=2, queries=2))


def test_same_seed_same_episode():
    sampler = EpisodeSampler(_labels(20, 10), EpisodeConfig())
    a, b = sampler.sample(np.random.default_rng(3)), sampler.sample(np.random.default_rng(3))
    assert a.words == b.words and np.array_equal(a.support, b.support)


@pytest.mark.parametrize(
    ("text", "reserved"),
    [("go", True), ("hey_go", True), ("Four", True), ("know", True), ("en_close", False), ("toaster", False)],
)
def test_reserved_words(text, reserved):
    assert is_reserved(text) is reserved


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow not installed (trainer extra)")
def test_prototypical_loss_matches_hand_computation():
    import tensorflow as tf

    from trainer.losses import additive_margin_loss, episode_loss

    # 2 ways, 1 shot, 1 query each, plus one open-set query.
    embeddings = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    loss, closed, opened = episode_loss(embeddings, 2, 1, 1, tf.constant(2.0), tf.constant(0.5))

    def ce(logits, label):
        return -(logits[label] - math.log(sum(math.exp(x) for x in logits)))

    expected = (
        ce([2.0, 0.0, 1.0], 0)  # query of word 0
        + ce([1.2, 1.6, 1.0], 1)  # query of word 1
        + ce([1.6, 1.2, 1.0], 2)  # open-set query: label "reject"
    ) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(closed) == 1.0
    assert float(opened) == pytest.approx(2 / 3)

    weights = tf.constant([[2.0, 0.0], [0.0, 1.0]])  # normalised inside
    am = additive_margin_loss(tf.constant([[1.0, 0.0], [0.6, 0.8]]), tf.constant([0, -1]), weights, 4.0, 0.2)
    assert float(am) == pytest.approx(ce([4.0 * (1.0 - 0.2), 0.0], 0), rel=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow not installed (trainer extra)")
def test_relational_distillation_matches_hand_computation():
    import tensorflow as tf

    from trainer.losses import relational_distillation_loss

    def softmax(xs):
        exps = [math.exp(x) for x in xs]
        return [e / sum(exps) for e in exps]

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))

    # Three windows with targets and one noise window (no target) that must not count.
    student = tf.constant([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.7, 0.7]])
    teacher = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.0, 0.0]])
    keep = tf.constant([True, True, True, False])
    loss = relational_distillation_loss(student, teacher, keep, temperature=0.5)
    # cosines over the other windows, divided by the temperature
    student_rows = [[1.2, 0.0], [1.2, 1.6], [0.0, 1.6]]
    teacher_rows = [[0.0, 1.6], [0.0, 1.2], [1.6, 1.2]]
    expected = sum(kl(softmax(t), softmax(s)) for t, s in zip(teacher_rows, student_rows, strict=True)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # a student that ranks neighbours exactly as the teacher does pays nothing
    assert float(relational_distillation_loss(teacher, teacher, keep, temperature=0.5)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow not installed (trainer extra)")
def test_learning_rate_anneals_by_steps_or_time_budget_whichever_ends_first():
    from trainer.config import TrainConfig
    from trainer.train import learning_rate_at

    config = TrainConfig(steps=1000, warmup_steps=100, learning_rate=1.0)
    assert learning_rate_at(0, 0.0, config, 0) == pytest.approx(0.01)
    assert learning_rate_at(100, 0.0, config, 0) == pytest.approx(1.0)
    assert learning_rate_at(550, 0.0, config, 0) == pytest.approx(0.02 + 0.98 * 0.5)
    assert learning_rate_at(1000, 0.0, config, 0) == pytest.approx(0.02)
    # half the steps but the whole time budget spent: fully annealed
    assert learning_rate_at(550, 600.0, config, 600.0) == pytest.approx(0.02)


def test_focus_words_fill_the_requested_share_of_ways():
    labels = _labels(200, 10)
    focus = {f"word{w}" for w in range(10)}  # 5% of the vocabulary
    sampler = EpisodeSampler(labels, EpisodeConfig(ways=10), focus_words=focus, focus_fraction=0.5)
    rng = np.random.default_rng(1)
    shares = [np.mean([w in focus for w in sampler.sample(rng).words]) for _ in range(400)]
    assert abs(np.mean(shares) - 0.5) < 0.03
    plain = EpisodeSampler(labels, EpisodeConfig(ways=10))
    assert np.mean([np.mean([w in focus for w in plain.sample(rng).words]) for _ in range(400)]) < 0.1


def test_one_take_ways_repeat_one_clip_as_every_support_and_query_other_clips():
    labels = _labels(12, 8)
    sampler = EpisodeSampler(labels, EpisodeConfig(ways=5, shots=3, queries=2, unknown_queries=4, one_take_ways=1.0))
    episode = sampler.sample(np.random.default_rng(0))
    for row, word in enumerate(episode.words):
        assert len(set(episode.support[row])) == 1 and labels[episode.support[row][0]] == word
        assert len(set(episode.query[row])) == 2 and episode.support[row][0] not in episode.query[row]
        assert {labels[i] for i in episode.query[row]} == {word}


def test_confusable_episodes_gather_words_spelt_alike():
    similar = ["nine", "line", "fine", "mine", "ninety", "spine"]
    others = ["cat", "dog", "bird", "fish", "cow", "horse", "goat", "sheep", "hen", "duck"]
    labels = [w for w in similar + others for _ in range(6)]
    config = EpisodeConfig(ways=4, shots=2, queries=2, unknown_queries=6, confusable_episodes=1.0)
    sampler = EpisodeSampler(labels, config)
    assert sampler.neighbours["nine"] == ["fine", "line", "mine", "ninety", "spine"]
    rng = np.random.default_rng(2)
    for _ in range(100):
        episode = sampler.sample(rng)
        anchor, *rest = episode.words
        near = set(sampler.neighbours[anchor])
        assert set(rest) <= near or not near & (set(similar) - set(rest) - {anchor})  # neighbours first, while any
        unknown = {labels[i] for i in episode.unknown}
        assert not unknown & set(episode.words)
        if anchor in similar:
            assert unknown <= set(similar)
