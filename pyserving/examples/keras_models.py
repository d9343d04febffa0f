"""Writes Keras models the ways TF Serving users export them, each as `<out>/<name>/1`:

* `keras2`: a tf.keras (Keras 2, the tf-keras package under TF_USE_LEGACY_KERAS=1) Sequential
  saved with tf.saved_model.save;
* `keras2_mirrored`: the same model built and saved under tf.distribute.MirroredStrategy over
  two virtual CPUs;
* `keras3`: a Keras 3 Sequential written by model.export();
* `keras3_two_inputs`: a Keras 3 functional model with two named inputs, by model.export().

`<out>/expected.json` records, per model, the input and output names its serving_default
signature declares (as TensorFlow's own loader reads them back), a batch of inputs and the
outputs Keras computes for them, so that a server can be checked against Keras itself.

Run it in a process of its own (`python -m pyserving.examples.keras_models OUT`): the Keras 2
switch and the virtual CPUs must be set before TensorFlow starts.
"""
from __future__ import annotations

import json
import os
import sys


def _sequential(keras, seed: int):
    def init(offset: int):  # one seeded initializer per layer (Keras warns when one is reused)
        return keras.initializers.GlorotUniform(seed=seed + offset)

    return keras.Sequential([
        keras.Input(shape=(3,), name="features"),
        keras.layers.Dense(4, activation="relu", kernel_initializer=init(0), bias_initializer="ones"),
        keras.layers.Dense(2, kernel_initializer=init(1)),
    ])


def _two_inputs(keras):
    age = keras.Input(shape=(1,), name="age")
    income = keras.Input(shape=(2,), name="income")
    joined = keras.layers.Concatenate()([age, income])
    score = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=3))(joined)
    return keras.Model(inputs={"age": age, "income": income}, outputs={"score": score})


def _declared(tf, path: str) -> dict:
    """The serving_default signature's input and output names, as TensorFlow loads them."""
    fn = tf.saved_model.load(path).signatures["serving_default"]
    return {"inputs": sorted(fn.structured_input_signature[1]), "outputs": sorted(fn.structured_outputs)}


def write_all(out: str) -> dict:
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras as keras3
    import tf_keras

    keras2 = tf.keras
    if keras2.Sequential is not tf_keras.Sequential:
        raise RuntimeError("tf.keras is not Keras 2 (tf-keras): set TF_USE_LEGACY_KERAS=1 before TensorFlow starts")

    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    expected = {}

    def record(name: str, path: str, inputs, outputs, version: str, replicas: int = 1) -> None:
        expected[name] = {**_declared(tf, path), "keras": version, "replicas": replicas,
                          "x": {k: v.tolist() for k, v in inputs.items()},
                          "y": {k: np.asarray(v).tolist() for k, v in outputs.items()}}

    model = _sequential(keras2, seed=1)
    path = os.path.join(out, "keras2", "1")
    tf.saved_model.save(model, path)
    declared = _declared(tf, path)
    record("keras2", path, {declared["inputs"][0]: x}, {declared["outputs"][0]: model(x)}, tf_keras.__version__)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = _sequential(keras2, seed=1)
    path = os.path.join(out, "keras2_mirrored", "1")
    tf.saved_model.save(mirrored, path)
    declared = _declared(tf, path)
    record("keras2_mirrored", path, {declared["inputs"][0]: x}, {declared["outputs"][0]: mirrored(x)},
           tf_keras.__version__, strategy.num_replicas_in_sync)

    model = _sequential(keras3, seed=2)
    path = os.path.join(out, "keras3", "1")
    model.export(path, verbose=False)
    declared = _declared(tf, path)
    record("keras3", path, {declared["inputs"][0]: x}, {declared["outputs"][0]: model(x)}, keras3.__version__)

    model = _two_inputs(keras3)
    path = os.path.join(out, "keras3_two_inputs", "1")
    model.export(path, verbose=False)
    feeds = {"age": x[:, :1], "income": x[:, 1:]}
    record("keras3_two_inputs", path, feeds, dict(model(feeds)), keras3.__version__)

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    return expected


if __name__ == "__main__":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    write_all(os.path.abspath(sys.argv[1]))
