"""pyserving/codecs/example.py: tf.Example inputs of Classify and Regress, from REST JSON
(json_tensor.cc's MakeExampleFromJsonObject / FillClassifyRegressRequestFromJson) and from the
gRPC Input message. Examples are compared as the protos TensorFlow parses them into."""
from __future__ import annotations

import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import input_pb2

from pyserving.codecs.example import example_from_json, examples_from_input, examples_from_json
from pyserving.errors import Code, ServingError


def example(**features) -> example_pb2.Example:
    """name=("int64"|"float"|"bytes", [values]) -> the Example TensorFlow would hold."""
    proto = example_pb2.Example()
    for name, (kind, values) in features.items():
        getattr(proto.features.feature[name], f"{kind}_list").value.extend(values)
    return proto


def parsed(serialized: bytes) -> example_pb2.Example:
    return example_pb2.Example.FromString(serialized)


def error(call, *args) -> ServingError:
    with pytest.raises(ServingError) as err:
        call(*args)
    return err.value


def test_json_values_become_int64_float_or_bytes_features():
    got = example_from_json({"i": 3, "t": True, "f": False, "x": 1.5, "s": "café", "b": {"b64": "/w=="},
                             "il": [1, -2], "xl": [0.5, 2.0], "sl": ["a", {"b64": "Yg=="}], "none": []})
    want = example(i=("int64", [3]), t=("int64", [1]), f=("int64", [0]), x=("float", [1.5]),
                   s=("bytes", ["café".encode()]), b=("bytes", [b"\xff"]), il=("int64", [1, -2]),
                   xl=("float", [0.5, 2.0]), sl=("bytes", [b"a", b"b"]))
    want.features.feature["none"].SetInParent()  # an empty list: a feature of no kind
    assert got == want


def test_int64_features_take_the_whole_int64_range_and_refuse_uint64():
    assert example_from_json({"n": [2**63 - 1, -(2**63)]}) == example(n=("int64", [2**63 - 1, -(2**63)]))
    err = error(example_from_json, {"n": [1, 2**63]})
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, "Feature: n has uint64 element. Only int64 is supported.")


@pytest.mark.parametrize("obj,message", [
    ({"x": [1, 1.5]}, "Unexpected element type in feature: x expecting type: int64"),
    ({"x": [True, 2.5]}, "Unexpected element type in feature: x expecting type: int64"),
    ({"x": [1.5, "a"]}, "Unexpected element type in feature: x expecting type: float"),
    ({"x": ["a", 1]}, "Unexpected element type in feature: x expecting type: bytes"),
    ({"x": [{"b64": "YQ=="}, 1.0]}, "Unexpected element type in feature: x expecting type: bytes"),
    ({"x": [1.5, {"b64": "YQ=="}]}, "Unexpected element type in feature: x expecting type: float"),
    ({"x": None}, "Feature: x has element with unexpected JSON type: Null"),
    ({"x": [1, None]}, "Feature: x has element with unexpected JSON type: Null"),
    ({"x": [[1]]}, "Feature: x has element with unexpected JSON type: Array"),
    ({"x": {"a": 1}}, "Feature: x has element with unexpected JSON type: Object"),
    ({"x": {"b64": "!!"}}, "Unable to base64 decode"),
    ([1], "Example must be JSON object but got JSON Array"),
    ("abc", "Example must be JSON object but got JSON String"),
    (1.5, "Example must be JSON object but got JSON Number"),
    (True, "Example must be JSON object but got JSON True"),
    (None, "Example must be JSON object but got JSON Null"),
])
def test_json_that_is_no_example_is_refused_in_json_tensor_cc_s_words(obj, message):
    err = error(example_from_json, obj)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_a_rest_body_s_examples_are_serialized_in_order():
    serialized = examples_from_json({"examples": [{"x": 1.5}, {"x": 2.5, "tag": "b"}]})
    assert [parsed(e) for e in serialized] == [example(x=("float", [1.5])),
                                                example(x=("float", [2.5]), tag=("bytes", [b"b"]))]


def test_the_context_is_merged_into_each_example_which_wins_on_a_shared_feature():
    serialized = examples_from_json({"context": {"user": 7, "x": 0.0}, "examples": [{"x": 1.5}, {"y": "q"}]})
    assert [parsed(e) for e in serialized] == [example(user=("int64", [7]), x=("float", [1.5])),
                                                example(user=("int64", [7]), x=("float", [0.0]), y=("bytes", [b"q"]))]


@pytest.mark.parametrize("doc,message", [
    ({"context": {}},
     "JSON Value: {\"context\": {}} When method is classify, key 'examples' is expected and was not found"),
    ({"examples": {"x": 1}}, "JSON Value: {\"examples\": {\"x\": 1}} Expecting 'examples' value to be an list/array"),
    ({"examples": []}, "JSON Value: {\"examples\": []} 'examples' value is an empty array"),
    ({"context": [1], "examples": [{}]}, "Example must be JSON object but got JSON Array"),
    ({"examples": [{"x": 1}, 2]}, "Example must be JSON object but got JSON Number"),
])
def test_a_rest_body_without_usable_examples_is_refused(doc, message):
    err = error(examples_from_json, doc)
    assert (err.code, err.message) == (Code.INVALID_ARGUMENT, message)


def test_the_grpc_input_gives_the_same_serialized_examples():
    plain = input_pb2.Input()
    plain.example_list.examples.extend([example(x=("float", [1.5])), example(x=("float", [2.5]))])
    assert [parsed(e) for e in examples_from_input(plain)] == list(plain.example_list.examples)
    with_context = input_pb2.Input()
    with_context.example_list_with_context.context.CopyFrom(example(user=("int64", [7])))
    with_context.example_list_with_context.examples.extend([example(x=("float", [1.5]))])
    assert [parsed(e) for e in examples_from_input(with_context)] == [
        example(user=("int64", [7]), x=("float", [1.5]))]
    assert examples_from_input(with_context) == examples_from_json({"context": {"user": 7}, "examples": [{"x": 1.5}]})
    assert examples_from_input(input_pb2.Input()) == []  # refused by the core: test_tfs_util.py
