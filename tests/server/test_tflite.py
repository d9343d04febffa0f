"""TF Lite models served with --prefer_tflite_model, with the signatures TF Serving's TfLiteSession
gives them (tflite_session.cc): the SignatureDefs in a model's `signature_defs_metadata`, else one
generated `serving_default`. Models built here by tf.lite.TFLiteConverter, and TF Serving's own
test models where ../shared/testdata/tfserving exists."""
from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.helpers import (
    SHARED_TESTDATA,
    call_json,
    from_numpy,
    grpc_signature_defs,
    prediction_stub,
    to_numpy,
    write_config,
)

PREDICT, CLASSIFY, REGRESS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                              "tensorflow/serving/regress")

# tflite_session_test.cc: BasicTest (no SignatureDefs: one generated from the tensors) and
# ModelFromLegacyConverterWithSigdef (the model's own, its "tflite_input:0" served as "tflite_input").
TF_SERVING_SIGNATURES = {
    "saved_model_half_plus_two_tflite": """
        inputs { key: "x" value { name: "x" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
        outputs { key: "y" value { name: "y" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
        method_name: "tensorflow/serving/predict" """,
    "saved_model_half_plus_two_tflite_with_sigdef": """
        inputs { key: "x" value { name: "tflite_input" dtype: DT_FLOAT
                                  tensor_shape { dim { size: 1 } dim { size: 1 } } } }
        outputs { key: "y" value { name: "y" dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 1 } } } }
        method_name: "tensorflow/serving/predict" """,
}


def _signature_def(text: str):
    from tensorflow.core.protobuf import meta_graph_pb2

    return text_format.Parse(text, meta_graph_pb2.SignatureDef())


def _rest_signatures(server, model: str) -> dict:
    status, body = call_json(server, "GET", f"/v1/models/{model}/metadata")
    assert status == 200, body
    return body["metadata"]["signature_def"]["signature_def"]


def _grpc_predict(server, model: str, inputs: dict, signature: str = "") -> dict:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(from_numpy(np.asarray(value)))
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = prediction_stub(channel).Predict(request, timeout=10)
    return {k: to_numpy(v).tolist() for k, v in response.outputs.items()}


def _interpreter_tensors(model_file) -> tuple[list[str], list[str]]:
    """The model's input and output tensor names, as the TF Lite runtime reads them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_file))
    return ([d["name"] for d in interpreter.get_input_details()],
            [d["name"] for d in interpreter.get_output_details()])


def _example(x: float) -> bytes:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()


def export_without_sigdefs(base, version: int) -> None:
    """A SavedModel's named signature converted by TFLiteConverter, nothing added: the model has TF
    Lite's own signature runner, which TF Serving does not read."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 0.5 * x + 2.0}

    module = HalfPlusTwo()
    saved = base.parent / f"{base.name}-savedmodel"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
    target = base / str(version)
    target.mkdir(parents=True)
    (target / "model.tflite").write_bytes(converter.convert())


@pytest.fixture(scope="module")
def lite_models(tmp_path_factory):
    from pyserving.examples import half_plus_two

    root = tmp_path_factory.mktemp("lite")
    half_plus_two.write_tflite(str(root / "lite_x"), 1)
    half_plus_two.write_tflite(str(root / "lite_examples"), 1, examples=True)
    export_without_sigdefs(root / "lite_plain", 1)
    return root


@pytest.fixture(scope="module")
def lite_server(serve_module, lite_models, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("lite_config") / "models.config",
                          {name: lite_models / name for name in ("lite_x", "lite_examples", "lite_plain")})
    return serve_module([f"--model_config_file={config}", "--prefer_tflite_model=true"])


def test_a_models_signature_defs_are_served_under_their_keys_and_names(lite_server, lite_models):
    inputs, outputs = _interpreter_tensors(lite_models / "lite_x" / "1" / "model.tflite")
    sigs = grpc_signature_defs(lite_server, "lite_x")
    assert list(sigs) == ["serving_default"]
    sig = sigs["serving_default"]
    # The keys the SavedModel declared; the tensors are the TF Lite model's own.
    assert (sig.method_name, list(sig.inputs), list(sig.outputs)) == (PREDICT, ["x"], ["y"])
    assert ([sig.inputs["x"].name], [sig.outputs["y"].name]) == (inputs, outputs)
    rest = _rest_signatures(lite_server, "lite_x")["serving_default"]
    assert (rest["inputs"]["x"]["name"], rest["outputs"]["y"]["name"]) == (inputs[0], outputs[0])

    assert call_json(lite_server, "POST", "/v1/models/lite_x:predict", {"inputs": {"x": [[1.0], [3.0]]}}) == (
        200, {"outputs": [[2.5], [3.5]]})
    assert call_json(lite_server, "POST", "/v1/models/lite_x:predict", {"instances": [{"x": [4.0]}]}) == (
        200, {"predictions": [[4.0]]})
    assert _grpc_predict(lite_server, "lite_x", {"x": np.array([[2.0], [6.0]], np.float32)}) == {"y": [[3.0], [5.0]]}


def test_a_model_without_signature_defs_gets_one_from_its_tensor_names(lite_server, lite_models):
    inputs, outputs = _interpreter_tensors(lite_models / "lite_plain" / "1" / "model.tflite")
    sigs = grpc_signature_defs(lite_server, "lite_plain")
    assert list(sigs) == ["serving_default"]
    sig = sigs["serving_default"]
    # Keys are the tensor names without ":N"; TF Lite's own "serving_default" runner is not used.
    assert {k: v.name for k, v in sig.inputs.items()} == {n.split(":")[0]: n for n in inputs}
    assert {k: v.name for k, v in sig.outputs.items()} == {n.split(":")[0]: n for n in outputs}
    assert sig.method_name == PREDICT
    (input_key,), (output_key,) = sig.inputs, sig.outputs
    assert _grpc_predict(lite_server, "lite_plain", {input_key: np.array([[1.0]], np.float32)}) == {
        output_key: [[2.5]]}
    status, body = call_json(lite_server, "POST", "/v1/models/lite_plain:predict", {"inputs": {"x": [[1.0]]}})
    assert status == 400 and input_key in body["error"]  # "x", the SavedModel's key, is not served


def test_classify_regress_and_multi_inference_on_a_tflite_model_over_rest(lite_server):
    sigs = _rest_signatures(lite_server, "lite_examples")
    assert {k: v["method_name"] for k, v in sigs.items()} == {
        "serving_default": PREDICT, "classify_x_to_y": CLASSIFY, "regress_x_to_y": REGRESS}
    examples = [{"x": 1.0}, {"x": [5.0]}]
    assert call_json(lite_server, "POST", "/v1/models/lite_examples:classify", {
        "signature_name": "classify_x_to_y", "examples": examples}) == (200, {"results": [[["", 2.5]], [["", 4.5]]]})
    assert call_json(lite_server, "POST", "/v1/models/lite_examples:regress", {
        "signature_name": "regress_x_to_y", "examples": examples}) == (200, {"results": [2.5, 4.5]})
    b64 = [{"b64": base64.b64encode(_example(x)).decode()} for x in (2.0, 4.0)]
    assert call_json(lite_server, "POST", "/v1/models/lite_examples:predict", {"instances": b64}) == (
        200, {"predictions": [[3.0], [4.0]]})


def test_classify_regress_and_multi_inference_on_a_tflite_model_over_grpc(lite_server):
    def fill(target, *xs):
        for x in xs:
            target.example_list.examples.add().features.feature["x"].float_list.value.append(x)

    with grpc.insecure_channel(lite_server.grpc_target) as channel:
        stub = prediction_stub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name, request.model_spec.signature_name = "lite_examples", "classify_x_to_y"
        fill(request.input, 1.0, 3.0)
        response = stub.Classify(request, timeout=10)
        assert [[c.score for c in r.classes] for r in response.result.classifications] == [[2.5], [3.5]]
        assert response.model_spec.signature_name == "classify_x_to_y" and response.model_spec.version.value == 1

        request = regression_pb2.RegressionRequest()
        request.model_spec.name, request.model_spec.signature_name = "lite_examples", "regress_x_to_y"
        fill(request.input, 8.0)
        assert [r.value for r in stub.Regress(request, timeout=10).result.regressions] == [6.0]

        # Both signatures read the model's one input tensor, so MultiInference runs them together.
        request = inference_pb2.MultiInferenceRequest()
        for signature, method in (("classify_x_to_y", CLASSIFY), ("regress_x_to_y", REGRESS)):
            task = request.tasks.add()
            task.model_spec.name, task.model_spec.signature_name, task.method_name = "lite_examples", signature, method
        fill(request.input, 2.0, 0.0)
        results = stub.MultiInference(request, timeout=10).results
        assert [c.classes[0].score for c in results[0].classification_result.classifications] == [3.0, 2.0]
        assert [r.value for r in results[1].regression_result.regressions] == [3.0, 2.0]


def test_a_signature_naming_no_tensor_of_the_model_fails_the_load(tmp_path, lite_models):
    from pyserving.errors import Code, ServingError
    from pyserving.runtime import tflite, tflite_signatures

    model = (lite_models / "lite_x" / "1" / "model.tflite").read_bytes()
    sig = _signature_def('inputs { key: "x" value { name: "nope:0" dtype: DT_FLOAT } } method_name: "m"')
    (tmp_path / "model.tflite").write_bytes(tflite_signatures.write(model, {"serving_default": sig}))
    with pytest.raises(ServingError) as err:
        tflite.load(str(tmp_path))
    assert err.value.code == Code.INTERNAL
    assert err.value.message == "Unknown tensor 'nope:0'.\n\tSignature input x references an unknown tensor"


def test_a_signature_name_is_tried_without_its_index_suffix(tmp_path, lite_models):
    """FixTfLiteTensorName: older converters dropped ":0" from tensor names, so a SignatureDef's
    "t:0" may be the model's tensor "t"."""
    from tensorflow.lite.tools import flatbuffer_utils

    from pyserving.runtime import tflite, tflite_signatures

    model = flatbuffer_utils.convert_bytearray_to_object(
        bytearray((lite_models / "lite_x" / "1" / "model.tflite").read_bytes()))
    graph = model.subgraphs[0]
    graph.tensors[graph.inputs[0]].name = b"legacy_input"
    out = graph.tensors[graph.outputs[0]].name.decode()
    sig = _signature_def('inputs { key: "in" value { name: "legacy_input:7" } } '
                         f'outputs {{ key: "out" value {{ name: "{out}" }} }} method_name: "m"')
    (tmp_path / "model.tflite").write_bytes(
        tflite_signatures.write(flatbuffer_utils.convert_object_to_bytearray(model), {"k": sig}))
    servable = tflite.load(str(tmp_path))
    assert servable.signatures["k"].inputs["in"].tensor_name == "legacy_input"
    assert servable.signatures["k"].outputs["out"].tensor_name == out
    assert servable.signatures["k"].method_name == "m"
    assert servable.run("k", {"in": np.array([[4.0]], np.float32)}, ["out"])["out"].tolist() == [[4.0]]


def test_a_signature_def_is_read_up_to_its_first_nul_byte_as_tf_lite_reads_it(tmp_path, lite_models):
    """ReadSignatureDefMap copies each SignatureDef through c_str(): a scalar's empty tensor_shape
    serializes as a zero length, so such a SignatureDef cannot be parsed back."""
    from pyserving.errors import Code, ServingError
    from pyserving.runtime import tflite, tflite_signatures

    model = (lite_models / "lite_x" / "1" / "model.tflite").read_bytes()
    sig = _signature_def('inputs { key: "x" value { name: "x" dtype: DT_FLOAT tensor_shape {} } } method_name: "m"')
    assert b"\0" in sig.SerializeToString()
    (tmp_path / "model.tflite").write_bytes(tflite_signatures.write(model, {"serving_default": sig}))
    with pytest.raises(ServingError) as err:
        tflite.load(str(tmp_path))
    assert (err.value.code, err.value.message) == (
        Code.INVALID_ARGUMENT,
        "Invalid SignatureDefs found in TfLite model: Cannot parse signature def found in flatbuffer.")


def test_a_model_needing_tensorflow_ops_fails_to_load_with_the_interpreters_word(tmp_path):
    """Deliberately different: TF Serving links TF Lite's Flex delegate and its own ParseExample op;
    the tensorflow pip package's tf.lite.Interpreter has neither."""
    import tensorflow as tf

    from pyserving.errors import Code, ServingError
    from pyserving.runtime import tflite

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def parse(serialized):
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([parse.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    (tmp_path / "model.tflite").write_bytes(converter.convert())
    with pytest.raises(ServingError) as err:
        tflite.load(str(tmp_path))
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "Select TensorFlow op(s), included in the given model, is(are) not supported" in err.value.message


@pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")
@pytest.mark.parametrize("model", sorted(TF_SERVING_SIGNATURES))
def test_tf_serving_tflite_test_models(serve, model):
    server = serve([f"--model_base_path={SHARED_TESTDATA / model}", "--model_name=lite",
                    "--prefer_tflite_model=true"])
    assert grpc_signature_defs(server, "lite") == {"serving_default": _signature_def(TF_SERVING_SIGNATURES[model])}
    assert _rest_signatures(server, "lite")["serving_default"]["inputs"]["x"]["dtype"] == "DT_FLOAT"
    # tensorflow_model_server_test.py, testPredictOnTfLite / testPredictWithSignatureDefOnTfLite.
    assert _grpc_predict(server, "lite", {"x": np.array([2.0], np.float32)}) == {"y": [3.0]}
    assert call_json(server, "POST", "/v1/models/lite:predict", {"inputs": {"x": [[1.0], [3.0]]}}) == (
        200, {"outputs": [[2.5], [3.5]]})
    # A predict signature is no classifier (classifier.cc, PreProcessClassification).
    status, body = call_json(server, "POST", "/v1/models/lite:classify", {"examples": [{"x": 1.0}]})
    assert status == 400 and body["error"].startswith("No classification inputs found in SignatureDef: ")


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


@pytest.mark.flags("prefer_tflite_model", "num_tflite_pools", "num_tflite_interpreters_per_pool")
def test_pools_times_interpreters_per_pool_interpreters_take_turns(tmp_path, serve):
    base = tmp_path / "lite"
    export_counting_tflite(base, 1, tmp_path)
    server = serve([f"--model_base_path={base}", "--model_name=lite", "--prefer_tflite_model=true",
                    "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=3"])
    calls = []
    for _ in range(12):
        # Row format: the model's one input, whatever its name (no SignatureDefs: a tensor name).
        code, body = call_json(server, "POST", "/v1/models/lite:predict", {"instances": [0.0]})
        assert code == 200, body
        calls.append(body["predictions"][0])
    # One call at a time, the interpreters are used in turn: 2 x 3 = 6 of them, each on its first
    # call, then each on its second.
    assert calls == [1.0] * 6 + [2.0] * 6


def test_an_interpreter_that_fails_to_invoke_answers_internal_and_the_model_keeps_serving(tmp_path):
    """tflite_session.cc: `Invoke() != kTfLiteOk` is INTERNAL "Failed to invoke TfLite interpreter".
    Gather with an index past its table fails in invoke (the index is only known then)."""
    import tensorflow as tf

    from pyserving.errors import Code, ServingError
    from pyserving.runtime import tflite

    table = tf.constant([10.0, 20.0, 30.0])

    @tf.function(input_signature=[tf.TensorSpec([1], tf.int32, name="i")])
    def lookup(i):
        return {"y": tf.gather(table, i)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([lookup.get_concrete_function()], lookup)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.tflite").write_bytes(converter.convert())
    servable = tflite.load(str(tmp_path / "1"))
    try:
        [name] = servable.signatures
        sig = servable.signatures[name]
        [key] = sig.inputs
        ok = servable.run(name, {key: np.array([1], np.int32)}, list(sig.outputs))
        assert [v.tolist() for v in ok.values()] == [[20.0]]
        with pytest.raises(ServingError) as err:
            servable.run(name, {key: np.array([7], np.int32)}, list(sig.outputs))
        assert (err.value.code, err.value.message) == (Code.INTERNAL, "Failed to invoke TfLite interpreter")
        again = servable.run(name, {key: np.array([2], np.int32)}, list(sig.outputs))
        assert [v.tolist() for v in again.values()] == [[30.0]]
    finally:
        servable.close()
