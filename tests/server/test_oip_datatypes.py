"""Every Open Inference Protocol datatype through a real SavedModel and back: one signature takes
an input of each TF type the table maps (codecs/oip.py DATATYPES) and returns it unchanged, over
REST with JSON data, REST with binary data, and gRPC with raw contents and (each datatype that
has a field) typed contents; the metadata names each tensor's V2 datatype."""
from __future__ import annotations

import json
import struct
import urllib.request

import grpc
import ml_dtypes
import numpy as np
import pytest

from pyserving.codecs import oip
from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb
from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc as pb_grpc
from tests.helpers import call_json

VALUES = {  # datatype -> (numpy dtype, two values that test its range)
    "BOOL": (np.bool_, [True, False]), "UINT8": (np.uint8, [0, 255]), "UINT16": (np.uint16, [1, 65535]),
    "UINT32": (np.uint32, [1, 2**32 - 1]), "UINT64": (np.uint64, [1, 2**64 - 1]), "INT8": (np.int8, [-128, 127]),
    "INT16": (np.int16, [-(2**15), 7]), "INT32": (np.int32, [-(2**31), 2**31 - 1]),
    "INT64": (np.int64, [-(2**63), 2**63 - 1]), "FP16": (np.float16, [1.5, -65504.0]),
    "FP32": (np.float32, [1.5, -3.25e38]), "FP64": (np.float64, [1e-300, -2.5]),
    "BYTES": (object, [b"ab", "\u00e9".encode()]), "BF16": (ml_dtypes.bfloat16, [1.5, -2.0]),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_module):
    import tensorflow as tf

    base = tmp_path_factory.mktemp("dtypes") / "identity"
    specs = {name.lower(): tf.TensorSpec([None], tf.as_dtype(np.dtype(dtype) if dtype is not object else tf.string),
                                         name=name.lower())
             for name, (dtype, _v) in VALUES.items()}

    class Identity(tf.Module):
        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            return {f"{key}_out": tf.identity(value) for key, value in inputs.items()}

    module = Identity()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return serve_module([f"--model_base_path={base}", "--model_name=identity"])


def expected(name: str) -> np.ndarray:
    dtype, values = VALUES[name]
    return np.array(values, dtype=dtype)


def test_the_table_covers_every_datatype():
    assert set(VALUES) == set(oip.DATATYPES)


def test_metadata_names_each_tensor_by_its_v2_datatype(server):
    status, doc = call_json(server, "GET", "/v2/models/identity")
    assert status == 200
    assert {t["name"]: t["datatype"] for t in doc["inputs"]} == {name.lower(): name for name in VALUES}
    assert {t["name"]: t["datatype"] for t in doc["outputs"]} == {f"{name.lower()}_out": name for name in VALUES}


def json_data(name: str) -> list:
    array = expected(name)
    if name == "BYTES":
        return [v.decode() for v in array]
    return array.astype(np.float32).tolist() if name in ("FP16", "BF16") else array.tolist()


def test_rest_json_round_trip(server):
    doc = {"inputs": [{"name": n.lower(), "datatype": n, "shape": [2], "data": json_data(n)} for n in VALUES]}
    status, answer = call_json(server, "POST", "/v2/models/identity/infer", doc)
    assert status == 200, answer
    got = {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in answer["outputs"]}
    assert got == {f"{n.lower()}_out": (n, [2], json_data(n)) for n in VALUES}


def test_rest_binary_round_trip(server):
    blobs = {n: oip.to_raw(expected(n)) for n in VALUES}
    header = json.dumps({
        "inputs": [{"name": n.lower(), "datatype": n, "shape": [2], "parameters": {"binary_data_size": len(blobs[n])}}
                   for n in VALUES],
        "parameters": {"binary_data_output": True}}).encode()
    request = urllib.request.Request(server.rest + "/v2/models/identity/infer", method="POST",
                                     data=header + b"".join(blobs.values()),
                                     headers={"Inference-Header-Content-Length": str(len(header))})
    with urllib.request.urlopen(request, timeout=30) as response:
        length, body = int(response.headers["Inference-Header-Content-Length"]), response.read()
    offset, got = length, {}
    for output in json.loads(body[:length])["outputs"]:
        size = output["parameters"]["binary_data_size"]
        got[output["name"]] = (output["datatype"], body[offset:offset + size])
        offset += size
    assert offset == len(body)
    assert got == {f"{n.lower()}_out": (n, blobs[n]) for n in VALUES}


def test_grpc_raw_contents_round_trip(server):
    request = pb.ModelInferRequest(model_name="identity")
    for name in VALUES:
        request.inputs.add(name=name.lower(), datatype=name, shape=[2])
        request.raw_input_contents.append(oip.to_raw(expected(name)))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    got = {o.name: (o.datatype, list(o.shape), raw) for o, raw in zip(response.outputs, response.raw_output_contents)}
    assert got == {f"{n.lower()}_out": (n, [2], oip.to_raw(expected(n))) for n in VALUES}


def test_grpc_typed_contents_for_every_datatype_that_has_a_field(tmp_path, serve):
    """Each typed field, one input at a time, into a model of one input of that type."""
    import tensorflow as tf

    for name in oip.CONTENTS_FIELD:
        dtype = tf.string if name == "BYTES" else tf.as_dtype(np.dtype(VALUES[name][0]))

        class One(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None], dtype, name="v")])
            def serve(self, v):
                return {"out": tf.identity(v)}

        module = One()
        tf.saved_model.save(module, str(tmp_path / name / "1"), signatures={"serving_default": module.serve})
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n" + "\n".join(
        f'  config {{ name: "{n.lower()}" base_path: "{tmp_path / n}" model_platform: "tensorflow" }}'
        for n in oip.CONTENTS_FIELD) + "\n}\n")
    server = serve([f"--model_config_file={config}"], rest=False)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name, field in oip.CONTENTS_FIELD.items():
            request = pb.ModelInferRequest(model_name=name.lower())
            getattr(request.inputs.add(name="v", datatype=name, shape=[2]).contents, field).extend(
                expected(name).tolist())
            response = stub.ModelInfer(request, timeout=30)
            assert (response.outputs[0].datatype, response.raw_output_contents[0]) == (
                name, oip.to_raw(expected(name))), name


def test_bytes_with_a_length_prefix_inside_are_kept(server):
    # A BYTES element may hold anything, a 4-byte length included.
    value = struct.pack("<I", 3) + b"abc"
    request = pb.ModelInferRequest(model_name="identity")
    for name in VALUES:
        array = np.array([value, b""], dtype=object) if name == "BYTES" else expected(name)
        request.inputs.add(name=name.lower(), datatype=name, shape=[2])
        request.raw_input_contents.append(oip.to_raw(array))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    index = [o.name for o in response.outputs].index("bytes_out")
    assert response.raw_output_contents[index] == struct.pack("<I", 7) + value + struct.pack("<I", 0)
