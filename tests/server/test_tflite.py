"""TF Lite models served with --prefer_tflite_model, our own export and TF Serving's test models."""
from __future__ import annotations

import pytest

from tests.helpers import SHARED_TESTDATA, call_json


def export_tflite(base, version: int) -> None:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 0.5 * x + 2.0}

    module = HalfPlusTwo()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    target = base / str(version)
    target.mkdir(parents=True)
    (target / "model.tflite").write_bytes(converter.convert())


@pytest.mark.flags("prefer_tflite_model")
def test_tflite_model_with_its_own_signatures(tmp_path, serve):
    base = tmp_path / "lite"
    export_tflite(base, 1)
    server = serve([f"--model_base_path={base}", "--model_name=lite", "--prefer_tflite_model=true"])
    status, body = call_json(server, "GET", "/v1/models/lite/metadata")
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert status == 200 and len(sigs) == 1
    key = next(iter(sigs))
    assert call_json(server, "POST", "/v1/models/lite:predict",
                     {"signature_name": key, "instances": [[1.0], [2.0], [3.0]]}) == (
        200, {"predictions": [[2.5], [3.0], [3.5]]})


@pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")
def test_tf_serving_tflite_test_model(serve):
    server = serve([f"--model_base_path={SHARED_TESTDATA / 'saved_model_half_plus_two_tflite'}",
                    "--model_name=lite", "--prefer_tflite_model=true"])
    assert call_json(server, "POST", "/v1/models/lite:predict", {"inputs": {"x": [[1.0], [3.0]]}}) == (
        200, {"outputs": [[2.5], [3.5]]})
    assert call_json(server, "POST", "/v1/models/lite:predict", {"instances": [[4.0]]}) == (
        200, {"predictions": [[4.0]]})


def export_counting_tflite(base, version: int, tmp) -> None:
    """A TF Lite model with a resource variable: each call adds 1 to it and answers its value, so
    every interpreter counts its own calls."""
    import tensorflow as tf

    class Counter(tf.Module):
        def __init__(self):
            super().__init__()
            self.calls = tf.Variable(0.0)

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="x")])
        def serve(self, x):
            self.calls.assign_add(1.0)
            return {"calls": self.calls + 0.0 * x}

    module = Counter()
    saved = str(tmp / "counting_saved_model")
    tf.saved_model.save(module, saved, signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.experimental_enable_resource_variables = True
    target = base / str(version)
    target.mkdir(parents=True)
    (target / "model.tflite").write_bytes(converter.convert())


@pytest.mark.flags("num_tflite_pools", "num_tflite_interpreters_per_pool")
def test_pools_times_interpreters_per_pool_interpreters_take_turns(tmp_path, serve):
    base = tmp_path / "lite"
    export_counting_tflite(base, 1, tmp_path)
    server = serve([f"--model_base_path={base}", "--model_name=lite", "--prefer_tflite_model=true",
                    "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=3"])
    calls = []
    for _ in range(12):
        code, body = call_json(server, "POST", "/v1/models/lite:predict", {"inputs": {"x": [0.0]}})
        assert code == 200, body
        calls.append(body["outputs"][0])
    # One call at a time, the interpreters are used in turn: 2 x 3 = 6 of them, each on its first
    # call, then each on its second.
    assert calls == [1.0] * 6 + [2.0] * 6
