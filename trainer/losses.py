"""Prototypical loss with an open-set "none of these" class.

Embeddings are unit vectors; a word's prototype is the normalised mean of its
support embeddings (exactly what the device stores at enrollment). Queries are
scored by scaled cosine against every prototype, plus one extra logit, the
learned rejection threshold: unknown words and noise must score below it, known
queries above it for their own word. That is the open-set decision the detector
makes with its per-keyword threshold.
"""

from __future__ import annotations

import tensorflow as tf


def prototypes(support: tf.Tensor) -> tf.Tensor:
    """``[ways, shots, dim]`` support embeddings -> ``[ways, dim]`` unit prototypes."""
    return tf.math.l2_normalize(tf.reduce_mean(support, axis=1), axis=-1)


def prototypical_logits(queries: tf.Tensor, protos: tf.Tensor, scale: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Logits ``[num_queries, ways + 1]``: scaled cosines, then the scaled rejection threshold."""
    cosine = tf.matmul(queries, protos, transpose_b=True)
    reject = tf.fill([tf.shape(queries)[0], 1], 1.0) * threshold
    return scale * tf.concat([cosine, reject], axis=1)


def episode_loss(
    embeddings: tf.Tensor, ways: int, shots: int, queries: int, scale: tf.Tensor, threshold: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Loss, closed-set accuracy and open-set accuracy of one episode.

    ``embeddings`` are ordered: ``ways*shots`` supports (word-major), ``ways*queries``
    queries (word-major), then any number of open-set queries (label ``ways``).
    """
    dim = tf.shape(embeddings)[-1]
    num_support = ways * shots
    support = tf.reshape(embeddings[:num_support], [ways, shots, dim])
    query = embeddings[num_support:]
    num_known = ways * queries
    num_open = tf.shape(query)[0] - num_known
    labels = tf.concat([tf.repeat(tf.range(ways), queries), tf.fill([num_open], ways)], axis=0)
    logits = prototypical_logits(query, prototypes(support), scale, threshold)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
    closed = tf.argmax(logits[:num_known, :ways], axis=1, output_type=tf.int32)
    closed_accuracy = tf.reduce_mean(tf.cast(tf.equal(closed, labels[:num_known]), tf.float32))
    open_accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))
    return loss, closed_accuracy, open_accuracy


def additive_margin_loss(
    embeddings: tf.Tensor, labels: tf.Tensor, class_weights: tf.Tensor, scale: float, margin: float
) -> tf.Tensor:
    """Cosine softmax with an additive margin (AM-softmax) over all training words.

    The auxiliary objective: every window of an episode (supports, queries and
    unknown-word queries alike) is also classified among *all* training words,
    which gives far more gradient per episode than the prototypes alone. Windows
    labelled -1 (noise) are left out. The word weights are discarded at export.
    """
    keep = labels >= 0
    embeddings, labels = tf.boolean_mask(embeddings, keep), tf.boolean_mask(labels, keep)
    cosine = tf.matmul(embeddings, tf.math.l2_normalize(class_weights, axis=1), transpose_b=True)
    logits = scale * (cosine - margin * tf.one_hot(labels, tf.shape(class_weights)[0]))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def distillation_loss(embeddings: tf.Tensor, targets: tf.Tensor, projection: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Mean cosine distance between projected student embeddings and (centred, unit) teacher vectors.

    The teacher learned from a large corpus of real voices; pulling the student's
    geometry towards it carries that knowledge into a model a tenth of its size.
    Windows without a target (``keep`` false: noise) are left out.
    """
    student = tf.math.l2_normalize(tf.matmul(tf.boolean_mask(embeddings, keep), projection), axis=-1)
    teacher = tf.boolean_mask(targets, keep)
    distances = 1.0 - tf.reduce_sum(student * teacher, axis=-1)
    return tf.reduce_sum(distances) / tf.maximum(tf.cast(tf.size(distances), tf.float32), 1.0)


def relational_distillation_loss(
    embeddings: tf.Tensor, targets: tf.Tensor, keep: tf.Tensor, temperature: float
) -> tf.Tensor:
    """KL divergence between the teacher's and the student's neighbour distributions within the batch.

    The few-shot decision is a ranking by cosine: which prototype is nearest. Matching the
    teacher's vector through a projection (:func:`distillation_loss`) leaves the student free to
    rank neighbours differently in its own space; this term asks its own cosines to rank them
    as the teacher's do. For every window i, ``softmax_j(cos(i, j) / temperature)`` over the
    other windows j is computed for teacher and student, and ``KL(teacher || student)`` is
    averaged over i. Windows without a target (``keep`` false: noise) are left out.
    """
    student = tf.math.l2_normalize(tf.boolean_mask(embeddings, keep), axis=-1)
    teacher = tf.boolean_mask(targets, keep)
    count = tf.shape(student)[0]
    self_pairs = 1e9 * tf.eye(count)  # a window is not its own neighbour: its probability underflows to 0
    student_log_p = tf.nn.log_softmax(tf.matmul(student, student, transpose_b=True) / temperature - self_pairs)
    teacher_log_p = tf.nn.log_softmax(tf.matmul(teacher, teacher, transpose_b=True) / temperature - self_pairs)
    kl = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return tf.reduce_sum(kl) / tf.maximum(tf.cast(count, tf.float32), 1.0)
