"""tf.Example inputs for Classify/Regress: from REST JSON and from the gRPC `Input` message.

The core receives serialized Examples. With a context, TF Serving serializes the context and
the example back to back: parsing that concatenation merges the two (protobuf merge rules).
"""
from __future__ import annotations

from typing import Any

from tensorflow.core.example import example_pb2, feature_pb2

# _type_name is json_tensor.cc's JsonTypeString, which MakeExampleFromJsonObject uses too.
from pyserving.codecs.json_tensor import _type_name, decode_b64, dump_value, is_b64, utf8
from pyserving.errors import invalid_argument


def _kind_error(name: str, feature: feature_pb2.Feature):
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind"), "UNKNOWN"
    )
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add(name: str, value: Any, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")
    if type(value) is bool or (type(value) is int):
        if kind not in (None, "int64_list"):
            raise _kind_error(name, feature)
        if type(value) is int and not -(2**63) <= value < 2**63:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(int(value))
    elif type(value) is float:
        if kind not in (None, "float_list"):
            raise _kind_error(name, feature)
        # As TF Serving 2.20 (`add_value(val.GetFloat())`): the nearest float, inf past its range.
        feature.float_list.value.append(value)
    elif type(value) is str or is_b64(value):
        if kind not in (None, "bytes_list"):
            raise _kind_error(name, feature)
        feature.bytes_list.value.append(utf8(value) if type(value) is str else decode_b64(value))
    else:
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_type_name(value)}")


def example_from_json(obj: Any) -> example_pb2.Example:
    if type(obj) is not dict:
        raise invalid_argument(f"Example must be JSON object but got JSON {_type_name(obj)}")
    example = example_pb2.Example()
    for name, content in obj.items():
        feature = example.features.feature[name]
        for value in content if type(content) is list else [content]:
            _add(name, value, feature)
    return example


def examples_from_json(doc: dict) -> list[bytes]:
    """The REST body's `context` and `examples`, serialized (context merged into each example)."""
    context = b""
    if "context" in doc:
        context = example_from_json(doc["context"]).SerializeToString()
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {dump_value(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    items = doc["examples"]
    if type(items) is not list:
        raise invalid_argument(f"JSON Value: {dump_value(doc)} Expecting 'examples' value to be an list/array")
    if not items:
        raise invalid_argument(f"JSON Value: {dump_value(doc)} 'examples' value is an empty array")
    return [context + example_from_json(item).SerializeToString() for item in items]


def examples_from_input(input_proto) -> list[bytes]:
    """tensorflow.serving.Input (example_list | example_list_with_context) -> serialized examples.

    An Input of neither kind holds no example: the core refuses it ("Input is empty.") once the
    model and signature are found, in TF Serving's order (an unknown model is NOT_FOUND first)."""
    which = input_proto.WhichOneof("kind")
    if which == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if which == "example_list_with_context":
        lst = input_proto.example_list_with_context
        context = lst.context.SerializeToString()
        return [context + e.SerializeToString() for e in lst.examples]
    return []
