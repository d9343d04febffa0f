"""Keras models as users export them (pyserving/examples/keras_models.py, written by a child process:
the Keras 2 switch and the two virtual CPUs of MirroredStrategy must be set before TensorFlow
starts), served over REST and gRPC under the input names their signatures declare, answering what
Keras itself computes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from tests.helpers import ROOT, call_json, from_numpy, grpc_signature_defs, prediction_stub, to_numpy, write_config

MODELS = ("keras2", "keras2_mirrored", "keras3", "keras3_two_inputs")


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "pyserving.examples.keras_models", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, json.loads((out / "expected.json").read_text())


@pytest.fixture(scope="module")
def keras_server(serve_module, keras_models, tmp_path_factory):
    out, _expected = keras_models
    config = write_config(tmp_path_factory.mktemp("keras_config") / "models.config",
                          {name: out / name for name in MODELS})
    return serve_module([f"--model_config_file={config}"])


def test_the_exports_were_made_by_the_keras_they_claim(keras_models):
    _out, expected = keras_models
    assert set(expected) == set(MODELS)
    assert {name: expected[name]["keras"].split(".")[0] for name in MODELS} == {
        "keras2": "2", "keras2_mirrored": "2", "keras3": "3", "keras3_two_inputs": "3"}
    assert expected["keras2_mirrored"]["replicas"] == 2
    assert expected["keras3_two_inputs"]["inputs"] == ["age", "income"]


@pytest.mark.parametrize("name", MODELS)
def test_metadata_declares_the_signatures_names(keras_server, keras_models, name):
    _out, expected = keras_models
    status, body = call_json(keras_server, "GET", f"/v1/models/{name}/metadata")
    assert status == 200
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert (sorted(sig["inputs"]), sorted(sig["outputs"])) == (expected[name]["inputs"], expected[name]["outputs"])

    served = grpc_signature_defs(keras_server, name)["serving_default"]
    assert (sorted(served.inputs), sorted(served.outputs)) == (expected[name]["inputs"], expected[name]["outputs"])


@pytest.mark.parametrize("name", MODELS)
def test_rest_predict_columnar_and_row_answer_as_keras(keras_server, keras_models, name):
    _out, expected = keras_models
    x, y = expected[name]["x"], expected[name]["y"]
    status, body = call_json(keras_server, "POST", f"/v1/models/{name}:predict", {"inputs": x})
    assert status == 200, body
    outputs = body["outputs"] if len(y) > 1 else {next(iter(y)): body["outputs"]}
    for key, want in y.items():
        np.testing.assert_allclose(outputs[key], want, rtol=1e-5, atol=1e-6)

    rows = [{k: v[i] for k, v in x.items()} for i in range(len(next(iter(x.values()))))]
    status, body = call_json(keras_server, "POST", f"/v1/models/{name}:predict", {"instances": rows})
    assert status == 200, body
    for i, prediction in enumerate(body["predictions"]):
        row = prediction if len(y) > 1 else {next(iter(y)): prediction}
        for key, want in y.items():
            np.testing.assert_allclose(row[key], want[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_grpc_predict_answers_as_keras(keras_server, keras_models, name):
    _out, expected = keras_models
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in expected[name]["x"].items():
        request.inputs[key].CopyFrom(from_numpy(np.array(value, np.float32)))
    with grpc.insecure_channel(keras_server.grpc_target) as channel:
        response = prediction_stub(channel).Predict(request, timeout=30)
    assert sorted(response.outputs) == expected[name]["outputs"]
    assert response.model_spec.signature_name == "serving_default"
    for key, want in expected[name]["y"].items():
        np.testing.assert_allclose(to_numpy(response.outputs[key]), want, rtol=1e-5, atol=1e-6)
