"""Writes half_plus_two SavedModels like TF Serving's test models (y = a*x + b, a=0.5, b=2).

Flavours: a TF1-style graph with predict, classify and regress signatures over tf.Example
input (as tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py builds
it), a TF2 `tf.saved_model.save` export, and TF Lite models converted from a TF2 SavedModel with
the SavedModel's SignatureDefs in their `signature_defs_metadata` (what TF Serving's generator
does for saved_model_half_plus_two_tflite_with_sigdef): `tflite` predicts y from x, and
`tflite_examples` reads tf.Examples (by table lookup), with predict, classify and regress
signatures on one input. `b` is a parameter so that two versions of one model answer
differently. Exports are written beside the target and renamed into place, so a polling server
never sees half a version.
"""
from __future__ import annotations

import os

from pyserving.version_dir import publish_version


def _atomic_export(base_path: str, version: int, write) -> str:
    return publish_version(base_path, version, write)


def write_tf1(base_path: str, version: int, a: float = 0.5, b: float = 2.0, c: float = 3.0) -> str:
    import tensorflow as tf

    v1 = tf.compat.v1

    def write(path: str) -> None:
        graph = tf.Graph()
        with graph.as_default(), v1.Session(graph=graph) as sess:
            var_a = v1.Variable(a, name="a")
            var_b = v1.Variable(b, name="b")
            var_c = v1.Variable(c, name="c")
            serialized = v1.placeholder(tf.string, name="tf_example")
            features = v1.parse_example(serialized, {
                "x": v1.FixedLenFeature([1], tf.float32),
                "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            })
            x = tf.identity(features["x"], name="x")
            x2 = tf.identity(features["x2"], name="x2")
            y = tf.add(tf.multiply(var_a, x), var_b, name="y")
            y2 = tf.add(tf.multiply(var_a, x), var_c, name="y2")
            y3 = tf.add(tf.multiply(var_a, x2), var_c, name="y3")
            # A classes output with labels, so classify answers carry both label and score.
            classes = tf.identity(tf.fill(tf.shape(y), "half_plus_two"), name="classes")
            sess.run(v1.global_variables_initializer())
            info = v1.saved_model.utils.build_tensor_info
            sig = v1.saved_model.signature_def_utils.build_signature_def
            predict = "tensorflow/serving/predict"
            classify = "tensorflow/serving/classify"
            regress = "tensorflow/serving/regress"
            signatures = {
                "serving_default": sig({"x": info(x)}, {"y": info(y)}, predict),
                "classify_x_to_y": sig({"inputs": info(serialized)}, {"scores": info(y)}, classify),
                "classify_x_to_y_with_classes": sig(
                    {"inputs": info(serialized)}, {"scores": info(y), "classes": info(classes)}, classify
                ),
                "regress_x_to_y": sig({"inputs": info(serialized)}, {"outputs": info(y)}, regress),
                "regress_x_to_y2": sig({"inputs": info(serialized)}, {"outputs": info(y2)}, regress),
                "regress_x2_to_y3": sig({"inputs": info(x2)}, {"outputs": info(y3)}, regress),
                "predict_x_y_y2": sig({"x": info(x)}, {"y": info(y), "y2": info(y2)}, predict),
            }
            builder = v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()

    return _atomic_export(base_path, version, write)


def write_tf2(base_path: str, version: int, a: float = 0.5, b: float = 2.0) -> str:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(a)
            self.b = tf.Variable(b)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.int64, name="count"),
        ])
        def echo(self, text, count):
            # Strings, ints and a `_bytes` output, for the JSON codec round trips.
            return {"text": text, "count": count * 2, "raw_bytes": text, "flag": count > 1}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="pair")])
        def dot(self, pair):
            # A matmul, so that a wrongly shaped input fails inside the graph, as it would in TF Serving.
            return {"sum": tf.matmul(pair, tf.ones([2, 1]))}

        # Classify and regress the TF2 way: a TF2 export writes tensorflow/serving/predict as every
        # signature's method_name, so TF Serving judges these by their inputs and outputs.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self._from_examples(inputs)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self._from_examples(inputs)}

        def _from_examples(self, serialized):
            x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
            return self.a * x + self.b

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="spins")])
        def slow(self, spins):
            # Busy for max(spins) graph-loop iterations: a model that takes its time, for
            # queueing and timeout tests. Answers one value per row.
            done = tf.while_loop(lambda i: i < tf.reduce_max(spins), lambda i: i + 1, [tf.constant(0, tf.int64)])
            return {"done": tf.cast(spins * 0, tf.int64) + done}

    def write(path: str) -> None:
        module = HalfPlusTwo()
        tf.saved_model.save(module, path, signatures={
            "serving_default": module.serve, "echo": module.echo, "dot": module.dot, "slow": module.slow,
            "classify_x_to_y": module.classify, "regress_x_to_y": module.regress,
        })

    return _atomic_export(base_path, version, write)


EXAMPLE_TABLE_SIZE = 10  # write_tflite(examples=True) knows x = 0.0 .. 9.0


def write_tflite(base_path: str, version: int, a: float = 0.5, b: float = 2.0, examples: bool = False) -> str:
    """model.tflite converted by tf.lite.TFLiteConverter from a SavedModel's `serving_default`
    signature, carrying SignatureDefs made of that signature's tensors.

    Without `examples`: x -> y, as TF Serving's saved_model_half_plus_two_tflite_with_sigdef.
    With `examples`: the input is serialized tf.Examples, with `serving_default` (predict, y),
    `classify_x_to_y` (scores) and `regress_x_to_y` (outputs) on that one input tensor. TF Lite's
    builtin ops cannot parse a tf.Example (TF Serving adds a ParseExample op of its own, and the
    tensorflow pip package's interpreter has neither it nor TF ops), so this model looks each
    serialized example up in a table of the examples {"x": [0.0]} .. {"x": [9.0]}; any other
    example reads as x = -1."""
    import tempfile

    import tensorflow as tf

    from pyserving.runtime import tflite_signatures

    keys = [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))})).SerializeToString()
        for v in range(EXAMPLE_TABLE_SIZE)]

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys), tf.range(EXAMPLE_TABLE_SIZE, dtype=tf.int64)), default_value=-1)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def from_x(self, x):
            return {"y": a * x + b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def from_examples(self, inputs):
            x = tf.cast(tf.reshape(self.table.lookup(inputs), [-1, 1]), tf.float32)
            return {"y": a * x + b}

    def write(path: str) -> None:
        module = HalfPlusTwo()
        with tempfile.TemporaryDirectory() as saved:
            tf.saved_model.save(module, saved, signatures={
                "serving_default": module.from_examples if examples else module.from_x})
            model = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"]).convert()
            sigdefs = {"serving_default": _saved_signature_def(saved, "serving_default")}
        if examples:
            predict_def = sigdefs["serving_default"]
            for key, output, method in (("classify_x_to_y", "scores", "tensorflow/serving/classify"),
                                        ("regress_x_to_y", "outputs", "tensorflow/serving/regress")):
                sig = type(predict_def)(method_name=method)
                sig.inputs["inputs"].CopyFrom(predict_def.inputs["inputs"])
                sig.outputs[output].CopyFrom(predict_def.outputs["y"])
                sigdefs[key] = sig
        os.makedirs(path)
        with open(os.path.join(path, "model.tflite"), "wb") as f:
            f.write(tflite_signatures.write(model, sigdefs))

    return _atomic_export(base_path, version, write)


def _saved_signature_def(saved_model_dir: str, key: str):
    """A SavedModel's SignatureDef, as written in its saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved = saved_model_pb2.SavedModel.FromString(f.read())
    return saved.meta_graphs[0].signature_def[key]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base_path")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--flavour", choices=("tf1", "tf2", "tflite", "tflite_examples"), default="tf1")
    parser.add_argument("--b", type=float, default=2.0)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    # tf1's v1 SavedModel API logs deprecation warnings (build_tensor_info) that are no use to a
    # user here: TF Serving's own half_plus_two is written with that API, and so is this one.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    writers = {"tf1": write_tf1, "tf2": write_tf2, "tflite": write_tflite,
               "tflite_examples": lambda *a, **kw: write_tflite(*a, examples=True, **kw)}
    print(writers[args.flavour](os.path.abspath(args.base_path), args.version, b=args.b))
