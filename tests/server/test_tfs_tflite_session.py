"""TF Serving's tensorflow_serving/servables/tensorflow/tflite_session_test.cc, the cases about
models without SignatureDefs, ported; each case's id is the TF Serving test it comes from.

TF Serving's test model saved_model_half_plus_two_tflite is served with --prefer_tflite_model by
an in-process server; TfLiteSession::Create's signatures are read back with GetModelMetadata and
Session::Run's calls are gRPC Predicts on them. Not ported here: the cases whose models carry
SignatureDefs in their `signature_defs_metadata` (ModelFromLegacyConverterWithSigdef, ProcessStrings,
ProcessStringsFlex, SimpleSignatureDef, MultipleSignatureDef, SignatureDefWithCommonTensorPrefix,
SimpleSignatureDefAndRun), which come with that feature (branch i12-models, test_tflite.py);
ThreadPoolOptions (a caller's thread pools for one Run, which no API of the server takes);
TestBatchParallelismForString and TestSetScheduler (the batch scheduler inside TfLiteSession and
its split function, which pyserving does not have: each request runs on one interpreter of the pool).
"""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2

from tests.helpers import SHARED_TESTDATA, from_numpy, grpc_signature_defs, prediction_stub, to_numpy, write_config

pytestmark = pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")

MODEL = SHARED_TESTDATA / "saved_model_half_plus_two_tflite"
HALF_PLUS_TWO_SIGNATURE = """
    inputs { key: "x" value { name: "x" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
    outputs { key: "y" value { name: "y" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
    method_name: "tensorflow/serving/predict" """


def with_batch_size(model: bytes, batch: int) -> bytes:
    """BuildSessionInBatch's use_model_batch_size: the model's one input declared with `batch` rows."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    (subgraph,) = obj.subgraphs
    (index,) = subgraph.inputs
    assert subgraph.tensors[index].shape[0] == 1
    subgraph.tensors[index].shape[0] = batch
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    """half_plus_two as TF Serving's test has it, and with its input resized to 5 rows (BuildSessionInBatch),
    on 1 pool of 4 interpreters, as TfLiteSessionBatchSizeTest builds its session."""
    tmp = tmp_path_factory.mktemp("tflite")
    batch5 = tmp / "batch5" / "123"
    batch5.mkdir(parents=True)
    (batch5 / "model.tflite").write_bytes(with_batch_size((MODEL / "00000123" / "model.tflite").read_bytes(), 5))
    config = write_config(tmp / "models.config", {"half_plus_two": MODEL, "batch5": tmp / "batch5"})
    return serve_module([f"--model_config_file={config}", "--prefer_tflite_model=true", "--num_tflite_pools=1",
                         "--num_tflite_interpreters_per_pool=4"], rest=False)


def run(server, model: str, x: np.ndarray) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(from_numpy(x))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_stub(channel).Predict(request, timeout=30)
    assert list(response.outputs) == ["y"]
    return to_numpy(response.outputs["y"])


@pytest.mark.parametrize("x,y", [
    pytest.param([1.0, 2.0, 3.0], [2.5, 3.0, 3.5], id="BasicTest"),
    pytest.param([2.0], [3.0], id="ResizeWithSameNumElementsTest"),
])
def test_half_plus_two(server, x, y):
    from tensorflow.core.protobuf import meta_graph_pb2

    # One signature, serving_default, made from the model's tensors.
    assert grpc_signature_defs(server, "half_plus_two") == {
        "serving_default": text_format.Parse(HALF_PLUS_TWO_SIGNATURE, meta_graph_pb2.SignatureDef())}
    out = run(server, "half_plus_two", np.array(x, np.float32))  # TF Lite tensor names
    assert out.dtype == np.float32 and out.shape == (len(x),) and out.tolist() == y


@pytest.mark.parametrize("model", [
    pytest.param("half_plus_two", id="TestBatchParallelismForFloat-false"),
    pytest.param("batch5", id="TestBatchParallelismForFloat-true"),  # use_model_batch_size
])
def test_batch_parallelism_for_float(server, model):
    """500 rows in one request, whatever the batch size the model was built with."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (500, 1)).astype(np.float32)
    out = run(server, model, x)
    assert out.shape == (500, 1)
    assert np.allclose(out, 0.5 * x + 2.0)
