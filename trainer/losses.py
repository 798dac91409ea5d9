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
