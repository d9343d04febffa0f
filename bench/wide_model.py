"""A tabular "wide" model for the serving benchmark: a model call that costs a few hundred
microseconds whatever the batch size, as feature-column models do.

Each of the `features` float inputs is bucketized and embedded, then concatenated with the
centred raw values and fed to a small two-layer head: about four small ops per feature, so the
per-call overhead of running the graph dominates and a call on 32 rows costs about what a call
on one row does. half_plus_two, by contrast, costs ~60 us a call, less than the protocol work
of one request. Deterministic weights (seeded), exported as a TF2 SavedModel with one
`serving_default` signature: `x` [None, features] float -> `probabilities` [None, 3].
"""
from __future__ import annotations

import numpy as np

FEATURES = 40


def write(base_path: str, version: int = 1, features: int = FEATURES) -> str:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Wide(tf.Module):
        def __init__(self):
            super().__init__()
            self.boundaries = [sorted(rng.normal(size=15).tolist()) for _ in range(features)]
            self.embeddings = [tf.Variable(rng.normal(size=(16, 4)).astype(np.float32)) for _ in range(features)]
            self.hidden = tf.Variable(rng.normal(size=(features * 5, 32)).astype(np.float32) * 0.1)
            self.out = tf.Variable(rng.normal(size=(32, 3)).astype(np.float32) * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, features], tf.float32, name="x")])
        def serve(self, x):
            columns = []
            for i in range(features):
                bucket = tf.raw_ops.Bucketize(input=x[:, i], boundaries=self.boundaries[i])
                columns.append(tf.nn.embedding_lookup(self.embeddings[i], bucket))
            centred = x - tf.reduce_mean(x, axis=1, keepdims=True)
            h = tf.nn.relu(tf.matmul(tf.concat(columns + [centred], axis=1), self.hidden))
            return {"probabilities": tf.nn.softmax(tf.matmul(h, self.out))}

    module = Wide()
    path = f"{base_path}/{version}"
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path
