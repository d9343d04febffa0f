"""TF Serving's tensorflow_serving/servables/tensorflow/util_test.cc, ported case by case.

Each case's id is the TF Serving test it comes from. InputToSerializedExampleTensor is, in
pyserving, the gRPC Input codec (codecs/example.py) then the core's examples_tensor
(core/signatures.py); MakeModelSpec is protocols/messages.fill_spec; RecordRequestExampleCount
is the metrics hook, read back from the Prometheus page; SetDifference and GetMapKeys make the
key lists of Predict's input-mismatch message. Not ported: ResourceEstimatorTest (pyserving
estimates no model RAM before a load; it has no resource manager to feed).
"""
from __future__ import annotations

import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import input_pb2, model_pb2

from pyserving import cli
from pyserving.codecs.example import examples_from_input
from pyserving.core import signatures
from pyserving.errors import Code, ServingError
from pyserving.protocols.messages import fill_spec
from pyserving.types import SignatureInfo, TensorSpec
from tests.helpers import call_json, metric, multi_inference_regress, scrape


def example(name: str, value: int) -> example_pb2.Example:
    proto = example_pb2.Example()
    proto.features.feature[name].int64_list.value.append(value)
    return proto


A, B, C = example("a", 11), example("b", 22), example("c", 33)


def input_to_serialized_example_tensor(input_proto: input_pb2.Input) -> list[example_pb2.Example]:
    tensor = signatures.examples_tensor(examples_from_input(input_proto))
    return [example_pb2.Example.FromString(serialized) for serialized in tensor.tolist()]


def example_list(*examples) -> input_pb2.Input:
    proto = input_pb2.Input()
    proto.example_list.examples.extend(examples)
    return proto


def with_context(context, *examples) -> input_pb2.Input:
    proto = input_pb2.Input()
    proto.example_list_with_context.SetInParent()
    if context is not None:
        proto.example_list_with_context.context.CopyFrom(context)
    proto.example_list_with_context.examples.extend(examples)
    return proto


def merged(*examples) -> example_pb2.Example:
    out = example_pb2.Example()
    for e in examples:
        for name, feature in e.features.feature.items():
            out.features.feature[name].CopyFrom(feature)
    return out


@pytest.mark.parametrize("input_proto", [
    pytest.param(input_pb2.Input(), id="Empty_KindNotSet"),
    pytest.param(example_list(), id="Empty_ExampleList"),
    pytest.param(with_context(None), id="Empty_ExampleListWithContext"),
    # Ensure that if there are no examples there is no output (even if the context is specified).
    pytest.param(with_context(C), id="ExampleListWithContext_OnlyContext"),
])
def test_input_is_empty(input_proto):
    with pytest.raises(ServingError) as err:
        input_to_serialized_example_tensor(input_proto)
    assert err.value.code == Code.INVALID_ARGUMENT and "Input is empty" in err.value.message


@pytest.mark.parametrize("input_proto,want", [
    pytest.param(example_list(A, B), [A, B], id="ExampleList"),
    pytest.param(with_context(C, A, B), [merged(C, A), merged(C, B)], id="ExampleListWithContext"),
    # An example's own feature overrides the context's.
    pytest.param(with_context(C, A, example("c", 64)), [merged(C, A), example("c", 64)],
                 id="ExampleListWithOverridingContext"),
    pytest.param(with_context(None, A, B), [A, B], id="ExampleListWithContext_NoContext"),
    pytest.param(example_list(A, B), [A, B], id="RequestNumExamplesStreamz-1"),
    pytest.param(example_list(C), [C], id="RequestNumExamplesStreamz-2"),
])
def test_input_to_serialized_example_tensor(input_proto, want):
    assert input_to_serialized_example_tensor(input_proto) == want


def test_example_counts(exported, tmp_path, serve):
    """ExampleCountsTest.Simple: a request of 3 examples adds one to the histogram's [2, 4) bucket
    (its third; le="4" on the Prometheus page) and 3 to the total. The request is a MultiInference,
    the one API TF Serving 2.20 records example counts for; a Regress records none."""
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=model-name",
                    f"--monitoring_config_file={monitoring}"])
    path = "/monitoring/prometheus/metrics"
    multi_inference_regress(server, "model-name", [1.0])  # a first cell
    regress = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}] * 3}
    assert call_json(server, "POST", "/v1/models/model-name:regress", regress)[0] == 200  # counts nothing
    before = scrape(server, path)
    multi_inference_regress(server, "model-name", [1.0, 2.0, 3.0])
    after = scrape(server, path)

    def counts(text, **labels):
        return metric(text, ":tensorflow:serving:request_example_counts_bucket", model="model-name", **labels)

    assert counts(after, le="4") - counts(before, le="4") == 1
    assert counts(after, le="2") - counts(before, le="2") == 0  # cumulative: 3 is not under 2
    assert (metric(after, ":tensorflow:serving:request_example_count_total", model="model-name")
            - metric(before, ":tensorflow:serving:request_example_count_total", model="model-name")) == 3


@pytest.mark.parametrize("signature_name,version,want", [
    pytest.param(None, None, 'name: "foo"', id="NoOptional"),
    pytest.param("classify", None, 'name: "foo" signature_name: "classify"', id="OptionalSignature"),
    pytest.param("", 1, 'name: "foo" signature_name: "serving_default" version { value: 1 }', id="EmptySignature"),
    pytest.param(None, 1, 'name: "foo" version { value: 1 }', id="OptionalVersion"),
    pytest.param("classify", 1, 'name: "foo" signature_name: "classify" version { value: 1 }', id="AllOptionalSet"),
])
def test_make_model_spec(signature_name, version, want):
    from google.protobuf import text_format

    spec = model_pb2.ModelSpec()
    fill_spec(spec, "foo", version, signature_name)
    assert spec == text_format.Parse(want, model_pb2.ModelSpec())
    assert spec.HasField("version") == (version is not None)


@pytest.mark.parametrize("value", [True, False])
def test_signature_method_name_check_feature_set_get(value):
    """SignatureMethodNameCheckFeature.SetGet: the flag sets the feature, both ways."""
    settings, _given = cli.parse([f"--enable_signature_method_name_check={str(value).lower()}"])
    assert settings.enable_signature_method_name_check is value


def mismatch_message(sent, expected) -> str:
    sig = SignatureInfo("tensorflow/serving/predict", {k: TensorSpec(f"{k}:0", 1, None) for k in expected}, {})
    with pytest.raises(ServingError) as err:
        signatures.check_inputs(sig, {k: None for k in sent})
    return err.value.message


def test_get_map_keys():
    """GetMapKeysTest.GetKeys: both keys of the map, listed (here in the input-mismatch message)."""
    assert "len({key1,key2}) != len({key1})" in mismatch_message({"key1", "key2"}, {"key1"})


@pytest.mark.parametrize("sent,expected,extra", [
    pytest.param({"a", "b", "c"}, {"a", "b"}, "{c}", id="SetDifferenceTEST-1"),
    pytest.param({"a", "b", "c"}, {"a", "b", "d"}, "{c}", id="SetDifferenceTEST-2"),
])
def test_set_difference(sent, expected, extra):
    assert f"Sent extra: {extra}." in mismatch_message(sent, expected)
