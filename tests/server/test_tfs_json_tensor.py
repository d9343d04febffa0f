"""TF Serving's tensorflow_serving/util/json_tensor_test.cc, ported case by case.

Every case's id is the TF Serving test it comes from (`-N` numbers the cases of a test that
checks several in a row). Requests go in as JSON text, as in TF Serving, through the codec's
parse -> signature_name -> decode chain; expected tensors, JSON and Example protos are TF
Serving's own, written as numpy arrays, JSON text and text protos. CompareJson is structural
JSON equality; CompareJsonAllValuesAsStrings compares every number by its text.
test_json_tensor.py holds pyserving's own (whole-message) codec tests beside these.

Ported from the 2.20.0 tag. Not ported, a deliberate difference: DeeplyNestedWellFormed and
DeeplyNestedMalformed (500,000 levels of `[` in a key TF Serving ignores, or in signature_name):
rapidjson parses any depth iteratively; pyserving's parser stops at Python's recursion limit
(about 1,000 levels) with INVALID_ARGUMENT "JSON Parse error: nesting too deep", for both. A
tensor has at most 32 (numpy 1) or 64 dimensions here, so no valid input is refused for it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2

from pyserving import dtypes
from pyserving.codecs import example as example_codec
from pyserving.codecs import json_tensor as jt
from pyserving.errors import Code, ServingError
from pyserving.types import SignatureInfo, TensorSpec
from tests.helpers import call_json

INT32, FLOAT, DOUBLE, STRING = dtypes.DT_INT32, dtypes.DT_FLOAT, dtypes.DT_DOUBLE, dtypes.DT_STRING
DBL_MAX = "1.79769e+308"  # std::numeric_limits<double>::max() as absl::Substitute prints it
DBL_MIN = "2.22507e-308"  # std::numeric_limits<double>::min(), likewise


def infomap(**inputs) -> SignatureInfo:
    """The test's TensorInfoMap: input name -> dtype."""
    return SignatureInfo("tensorflow/serving/predict",
                         {name: TensorSpec(f"{name}:0", dtype, None) for name, dtype in inputs.items()}, {})


def fill_predict_request(body, signature: SignatureInfo):
    """FillPredictRequestFromJson: (format, signature_name, inputs)."""
    doc = jt.parse(body.encode() if isinstance(body, str) else body)
    name = jt.signature_name(doc)
    fmt, inputs = jt.decode_predict(doc, signature)
    return fmt, name, inputs


def tensor(np_dtype, shape, values) -> np.ndarray:
    return np.array(values, dtype=np_dtype).reshape(shape)


def same_tensor(got: np.ndarray, want: np.ndarray) -> bool:
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if got.dtype.kind == "f":
        return np.array_equal(got, want, equal_nan=True)
    return got.tolist() == want.tolist()


I6 = [1, 2, 3, 4, 5, 6]
HELLO, WORLD = '{ "b64" : "aGVsbG8=" }', '{ "b64": "d29ybGQ=" }'


# ---- FillPredictRequestFromJson: requests that decode ----------------------------------------
@pytest.mark.parametrize("body,signature,fmt,signature_name,expected", [
    pytest.param('{"instances": [[1,2],[3,4],[5,6]]}', infomap(default=INT32), jt.ROW, "",
                 {"default": tensor(np.int32, (3, 2), I6)}, id="SingleUnnamedTensor"),
    pytest.param('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', infomap(default=FLOAT), jt.ROW, "",
                 {"default": tensor(np.float32, (7,), [1, 2.0, 3, 4, 5.003, 0.007, 0.0])},
                 id="MixedInputForFloatTensor"),
    pytest.param('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', infomap(default=DOUBLE), jt.ROW, "",
                 {"default": tensor(np.float64, (7,), [1.0, 2, 3, 4, 0.662, 0, 0.0])},
                 id="MixedInputForDoubleTensor"),
    pytest.param('{"signature_name": "predict_images", "instances": [[1,2]]}', infomap(default=INT32), jt.ROW,
                 "predict_images", {"default": tensor(np.int32, (1, 2), [1, 2])},
                 id="SingleUnnamedTensorWithSignature"),
    # The body ends where the buffer says, not at a terminator: the 'X' after it is never read.
    pytest.param(b'{"instances": [[1,2],[3,4],[5,6]]}X'[:-1], infomap(default=INT32), jt.ROW, "",
                 {"default": tensor(np.int32, (3, 2), I6)}, id="TensorFromNonNullTerminatedBuffer"),
    pytest.param(f'{{"instances": [ {HELLO}, {WORLD} ]}}', infomap(default=STRING), jt.ROW, "",
                 {"default": tensor(object, (2,), [b"hello", b"world"])}, id="SingleUnnamedTensorBase64Scalars"),
    pytest.param(f'{{"instances": [ [{HELLO}], [{WORLD}] ]}}', infomap(default=STRING), jt.ROW, "",
                 {"default": tensor(object, (2, 1), [b"hello", b"world"])}, id="SingleUnnamedTensorBase64Lists"),
    pytest.param(f'{{"instances": [ {{"default": [ [{HELLO}], [{WORLD}] ]}} ]}}', infomap(default=STRING), jt.ROW,
                 "", {"default": tensor(object, (1, 2, 1), [b"hello", b"world"])}, id="SingleNamedTensorBase64"),
    pytest.param("""{"instances": [
                      {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
                       "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
                      {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
                       "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}""",
                 infomap(int_tensor=INT32, str_tensor=STRING, float_tensor=FLOAT, dbl_tensor=DOUBLE), jt.ROW, "",
                 {"int_tensor": tensor(np.int32, (2, 3, 2), I6 + [7, 8, 9, 0, 1, 2]),
                  "str_tensor": tensor(object, (2, 2), [b"foo", b"bar", b"baz", b"bat"]),
                  "float_tensor": tensor(np.float32, (2, 2), [1.0, np.nan, 2.0, np.inf]),
                  "dbl_tensor": tensor(np.float64, (2, 1), [np.nan, 2.0])}, id="MultipleNamedTensor"),
    pytest.param('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', infomap(int_tensor=INT32), jt.COLUMNAR, "",
                 {"int_tensor": tensor(np.int32, (1, 3, 2), I6)}, id="SingleUnnamedTensorColumnarFormat-1"),
    # Skip explicitly specifying named input.
    pytest.param('{"inputs": [[[1,2],[3,4],[5,6]]]}', infomap(int_tensor=INT32), jt.COLUMNAR, "",
                 {"int_tensor": tensor(np.int32, (1, 3, 2), I6)}, id="SingleUnnamedTensorColumnarFormat-2"),
    pytest.param(f'{{"inputs": {{"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"], '
                 f'"bin_tensor": {HELLO}}}}}', infomap(int_tensor=INT32, str_tensor=STRING, bin_tensor=STRING),
                 jt.COLUMNAR, "", {"int_tensor": tensor(np.int32, (1, 3, 2), I6),
                                   "str_tensor": tensor(object, (2,), [b"foo", b"bar"]),
                                   "bin_tensor": tensor(object, (), [b"hello"])},
                 id="MultipleNamedTensorColumnarFormat"),
])
def test_fill_predict_request(body, signature, fmt, signature_name, expected):
    got_fmt, got_name, inputs = fill_predict_request(body, signature)
    assert (got_fmt, got_name) == (fmt, signature_name)
    assert set(inputs) == set(expected)
    for name, want in expected.items():
        assert same_tensor(inputs[name], want), (name, inputs[name], want)


# ---- FillPredictRequestFromJson: requests refused (INVALID_ARGUMENT, message HasSubstr) ---------
def test_float_tensor_with_precision_loss():
    """FloatTensorWithPrecisionLoss (b/181409782): 1435774380 and 1435774380.0 both become the
    nearest float (1435774336); before 2021 the integer was refused."""
    for body in ('{"instances": [1435774380]}', '{"instances": [1435774380.0]}'):
        fmt, _name, inputs = fill_predict_request(body, infomap(default=FLOAT))
        assert fmt == jt.ROW and same_tensor(inputs["default"], tensor(np.float32, [1], [1435774380]))
        assert inputs["default"].tolist() == [1435774336.0]


@pytest.mark.parametrize("value,want", [
    pytest.param(DBL_MAX, np.inf, id="FloatTensorThatExceedsMaxReturnsInf-1"),
    pytest.param("-" + DBL_MAX, -np.inf, id="FloatTensorThatExceedsMaxReturnsInf-2"),
    pytest.param(DBL_MIN, 0.0, id="FloatTensorThatExceedsMinReturnsZero-1"),
    pytest.param("-" + DBL_MIN, -0.0, id="FloatTensorThatExceedsMinReturnsZero-2"),
])
def test_float_tensor_past_float_s_range(value, want):
    fmt, _name, inputs = fill_predict_request(f'{{ "instances": [{value}] }}', infomap(default=FLOAT))
    got = inputs["default"]
    assert fmt == jt.ROW and got.dtype == np.float32 and got.tolist() == [want]
    assert np.signbit(got[0]) == np.signbit(want)  # -0 stays -0


@pytest.mark.parametrize("body,signature,substring", [
    pytest.param("", infomap(default=INT32), "document is empty", id="SingleUnnamedTensorErrors-1"),
    pytest.param('{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', infomap(default=INT32),
                 "must be a string value", id="SingleUnnamedTensorErrors-2"),
    pytest.param('{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', infomap(default=INT32),
                 "Not formatted correctly", id="SingleUnnamedTensorErrors-3"),
    pytest.param('{"instances": [[1,2],[3,4],[5,6,7]]}', infomap(default=INT32), "Expecting tensor size",
                 id="SingleUnnamedTensorErrors-4"),
    pytest.param('{"instances": [[1,2],[3,4],[[5,6]]]}', infomap(default=INT32), "Expecting shape",
                 id="SingleUnnamedTensorErrors-5"),
    pytest.param('{"instances": [1, [1]]}', infomap(default=INT32), "Expecting shape",
                 id="SingleUnnamedTensorErrors-6"),
    pytest.param('{"instances": [[1,2],["a", "b"]]}', infomap(default=INT32), "not of expected type",
                 id="SingleUnnamedTensorErrors-7"),
    # Different shapes across int_tensor instances.
    pytest.param('{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, '
                 '{"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}',
                 infomap(int_tensor=INT32, str_tensor=STRING), "Expecting shape", id="MultipleNamedTensorErrors-1"),
    # Different size/length across int_tensor instances.
    pytest.param('{"instances": [{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]}, '
                 '{"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}',
                 infomap(int_tensor=INT32, str_tensor=STRING), "Expecting tensor size",
                 id="MultipleNamedTensorErrors-2"),
    # First element is an object: the rest must be objects too.
    pytest.param('{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, [1, 20, 30], '
                 '{"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}',
                 infomap(int_tensor=INT32, str_tensor=STRING), "Expecting object but got list",
                 id="MultipleNamedTensorErrors-3"),
    # First element is a list: the rest must be lists too.
    pytest.param('{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}', infomap(str_tensor=STRING),
                 "Expecting value/list but got object", id="MultipleNamedTensorErrors-4"),
])
def test_fill_predict_request_errors(body, signature, substring):
    with pytest.raises(ServingError) as err:
        fill_predict_request(body, signature)
    assert err.value.code == Code.INVALID_ARGUMENT and substring in err.value.message


# ---- MakeJsonFromTensors -----------------------------------------------------------------------
def compare_json(got: str, want: str) -> None:
    """CompareJson: the two documents are equal as JSON values (NaN and Infinity tokens allowed)."""
    assert json.loads(got) == json.loads(want)


def compare_json_all_values_as_strings(got: str, want: str) -> None:
    """CompareJsonAllValuesAsStrings: every number compared by its text."""
    as_text = dict(parse_float=str, parse_int=str, parse_constant=str)
    assert json.loads(got, **as_text) == json.loads(want, **as_text)


INT_2x3x2 = tensor(np.int32, (2, 3, 2), I6 + [7, 8, 9, 0, 1, 2])
NESTED = "[[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]"
BYTES_2x2 = tensor(object, (2, 2), [b"hello", b"world", b"tf", b"serving"])
B64_ROWS = '[[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]'
FIVE_TENSORS = {
    "int_tensor": INT_2x3x2, "str_tensor": tensor(object, (2, 2), [b"foo", b"bar", b"baz", b"bat"]),
    "float_tensor": tensor(np.float32, (2, 1), [1.0, 2.0]), "double_scalar_tensor": tensor(np.float64, (2,), [8, 9]),
    "str_tensor_bytes": BYTES_2x2,
}


@pytest.mark.parametrize("tensors,fmt,want,as_strings", [
    pytest.param({"int_tensor": INT_2x3x2}, jt.ROW, f'{{"predictions": {NESTED}}}', False,
                 id="FromJsonSingleTensor-row"),
    pytest.param({"int_tensor": INT_2x3x2}, jt.COLUMNAR, f'{{"outputs": {NESTED}}}', False,
                 id="FromJsonSingleTensor-columnar"),
    pytest.param({"int_tensor": tensor(np.int32, (5,), [1, 2, 3, 4, 5])}, jt.ROW,
                 '{ "predictions": [1, 2, 3, 4, 5] }', False, id="FromJsonSingleScalarTensor-row"),
    pytest.param({"int_tensor": tensor(np.int32, (5,), [1, 2, 3, 4, 5])}, jt.COLUMNAR,
                 '{ "outputs": [1, 2, 3, 4, 5] }', False, id="FromJsonSingleScalarTensor-columnar"),
    pytest.param({"str_tensor_bytes": BYTES_2x2}, jt.ROW, f'{{"predictions": {B64_ROWS}}}', False,
                 id="FromJsonSingleBytesTensor"),
    pytest.param({"float_tensor": tensor(np.float32, (2, 3), [9000000, 999999, 0.5, .0003, .00003, 555557.5])},
                 jt.ROW, '{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}', True,
                 id="FromJsonSingleFloatTensorSixDigitPrecision"),
    pytest.param({"float_tensor": tensor(np.float32, (2, 2), [np.nan, np.inf, 3, -np.inf])}, jt.ROW,
                 '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}', True,
                 id="FromJsonSingleFloatTensorNonFinite"),
    pytest.param(FIVE_TENSORS, jt.ROW, """{"predictions": [
                    {"double_scalar_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
                     "str_tensor": ["foo", "bar"], "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]},
                    {"double_scalar_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
                     "str_tensor": ["baz", "bat"], "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]}
                 ]}""", False, id="FromJsonMultipleNamedTensors-row"),
    pytest.param(FIVE_TENSORS, jt.COLUMNAR, f"""{{"outputs": {{
                    "double_scalar_tensor": [8.0, 9.0], "float_tensor": [[1.0], [2.0]], "int_tensor": {NESTED},
                    "str_tensor": [["foo", "bar"], ["baz", "bat"]], "str_tensor_bytes": {B64_ROWS}}}}}""", False,
                 id="FromJsonMultipleNamedTensors-columnar"),
    # A batch of zero rows is an empty list of predictions (TF Serving PR #1635).
    pytest.param({"int_tensor": tensor(np.int32, (0, 2), [])}, jt.ROW, '{ "predictions": [] }', False,
                 id="FromJsonSingleZeroBatchTensor"),
    pytest.param({"str_tensor": tensor(object, (0, 1, 2), []), "float_tensor": tensor(np.float32, (0, 3, 4), [])},
                 jt.ROW, '{ "predictions": [] }', False, id="FromJsonMultipleZeroBatchTensors"),
])
def test_make_json_from_tensors(tensors, fmt, want, as_strings):
    got = jt.encode_predict(tensors, fmt)
    (compare_json_all_values_as_strings if as_strings else compare_json)(got, want)


@pytest.mark.parametrize("tensors,substring", [
    pytest.param({}, "empty tensor map", id="FromJsonSingleTensorErrors-1"),
    pytest.param({"tensor": np.array([1.0, 2.0], np.complex64)}, "tensor type: complex64",
                 id="FromJsonSingleTensorErrors-2"),
    pytest.param({"tensor": np.array(1, np.int32)}, "no shape information", id="FromJsonSingleTensorErrors-3"),
    pytest.param({"int_tensor": tensor(np.int32, (2, 3), I6), "str_tensor": tensor(object, (1, 3), [b"a"] * 3)},
                 "inconsistent batch size", id="FromJsonMultipleNamedTensorsErrors"),
    pytest.param({"int_tensor": tensor(np.int32, (0, 2), []), "str_tensor": tensor(object, (1, 2), [b"f", b"b"])},
                 "inconsistent batch size", id="FromJsonMultipleZeroBatchTensorsErrors"),
    # The same two tensors the other way round: a zero batch seen first is a batch size all the same.
    pytest.param({"str_tensor": tensor(object, (1, 2), [b"f", b"b"]), "int_tensor": tensor(np.int32, (0, 2), [])},
                 "inconsistent batch size", id="FromJsonMultipleZeroBatchTensorsErrors-reversed"),
])
def test_make_json_from_tensors_errors(tensors, substring):
    with pytest.raises(ServingError) as err:
        jt.encode_predict(tensors, jt.ROW)
    assert err.value.code == Code.INVALID_ARGUMENT and substring in err.value.message


# ---- FillClassificationRequestFromJson / FillRegressionRequestFromJson ---------------------------
# One codec serves both request types in pyserving (the TYPED_TESTs run each case for both).
def fill_classify_regress_request(body: str) -> tuple[str, list[bytes]]:
    """(signature_name, serialized examples, the context merged in), in the REST handler's order."""
    doc = jt.parse(body.encode())
    return jt.signature_name(doc), example_codec.examples_from_json(doc)


def serialized_examples(request_text: str) -> list[bytes]:
    """TF Serving's expected request -> its examples as the model gets them: context and example
    serialized back to back (util.cc InputToSerializedExampleTensor), re-serialized deterministically."""
    request = text_format.Parse(request_text, classification_pb2.ClassificationRequest())
    which = request.input.WhichOneof("kind")
    if which == "example_list":
        raw = [e.SerializeToString() for e in request.input.example_list.examples]
    else:
        lst = request.input.example_list_with_context
        raw = [lst.context.SerializeToString() + e.SerializeToString() for e in lst.examples]
    return [canonical(r) for r in raw]


def canonical(serialized: bytes) -> bytes:
    return example_pb2.Example.FromString(serialized).SerializeToString(deterministic=True)


def feature(key: str, kind: str, *values) -> str:
    listed = " ".join(f"value: {v}" for v in values)
    return f'feature {{ key: "{key}" value {{ {kind}_list {{ {listed} }} }} }}'


@pytest.mark.parametrize("body,signature_name,expected", [
    pytest.param("""{"examples": [{"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0 ], "age": 20},
                                  {"names": [ "baz" ], "ratings": 6.0}]}""", "",
                 f"""input {{ example_list {{
                       examples {{ features {{ {feature("names", "bytes", '"foo"', '"bar"')}
                                              {feature("ratings", "float", 8.0, 9.0)}
                                              {feature("age", "int64", 20)} }} }}
                       examples {{ features {{ {feature("names", "bytes", '"baz"')}
                                              {feature("ratings", "float", 6.0)} }} }} }} }}""",
                 id="RequestNoContext"),
    pytest.param("""{"signature_name": "custom_signture",
                     "context": {"query": "pizza", "location": [ "sfo" ]},
                     "examples": [{"names": [ "foo", "bar" ], "ratings": [ 8.0, 9.0, NaN, Infinity ], "age": 20},
                                  {"names": [ "baz", { "b64": "aGVsbG8=" } ], "ratings": 6.0,
                                   "intboolmix": [ 1, true, false ]},
                                  {"names": "bar", "ratings": -Infinity}]}""", "custom_signture",
                 f"""input {{ example_list_with_context {{
                       context {{ features {{ {feature("query", "bytes", '"pizza"')}
                                             {feature("location", "bytes", '"sfo"')} }} }}
                       examples {{ features {{ {feature("names", "bytes", '"foo"', '"bar"')}
                                              {feature("ratings", "float", 8.0, 9.0, "NaN", "Infinity")}
                                              {feature("age", "int64", 20)} }} }}
                       examples {{ features {{ {feature("names", "bytes", '"baz"', '"hello"')}
                                              {feature("ratings", "float", 6.0)}
                                              {feature("intboolmix", "int64", 1, 1, 0)} }} }}
                       examples {{ features {{ {feature("names", "bytes", '"bar"')}
                                              {feature("ratings", "float", "-Infinity")} }} }} }} }}""",
                 id="RequestWithContextAndSignature"),
])
def test_fill_classify_regress_request(body, signature_name, expected):
    got_name, examples = fill_classify_regress_request(body)
    assert got_name == signature_name
    assert [canonical(e) for e in examples] == serialized_examples(expected)


@pytest.mark.parametrize("body,substring", [
    pytest.param('{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}',
                 "'signature_name' key must be a string", id="JsonErrors-1"),
    pytest.param('{"context": [ { "names": [ "foo", "bar" ] } ]}', "Example must be JSON object", id="JsonErrors-2"),
    pytest.param('{"examples": { "names": [ "foo", "bar" ] }}', "list/array", id="JsonErrors-3"),
    pytest.param('{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}', "Example must be JSON object",
                 id="JsonErrors-4"),
    pytest.param('{"examples": [ { "names": [ 10, null ] } ]}', "names has element with unexpected JSON type: Null",
                 id="JsonErrors-5"),
    pytest.param('{"examples": [ { "names": [ 10, 10.0 ] } ]}', "feature: names expecting type: int64",
                 id="JsonErrors-6"),
    pytest.param('{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}',
                 "names has element with unexpected JSON type: Object", id="JsonErrors-7"),
    pytest.param('{"examples": [ { "names": [ [10], 20 ] } ]}', "names has element with unexpected JSON type: Array",
                 id="JsonErrors-8"),
    pytest.param('{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}', "Only int64 is supported",
                 id="JsonErrors-9"),
])
def test_fill_classify_regress_request_errors(body, substring):
    with pytest.raises(ServingError) as err:
        fill_classify_regress_request(body)
    assert err.value.code == Code.INVALID_ARGUMENT and substring in err.value.message


# ---- MakeJsonFromClassificationResult / MakeJsonFromRegressionResult -----------------------------
def f32(value: float) -> float:
    return float(np.float32(value))  # ClassificationResult and RegressionResult hold floats


@pytest.mark.parametrize("encode,results,want,as_strings", [
    pytest.param(jt.encode_classify, [[(b"car", f32(0.2)), (b"bike", f32(0.7)), (b"bus", f32(0.1))],
                                      [(b"car", f32(0.7)), (b"bike", f32(0.1)), (b"bus", f32(0.2))]],
                 '{"results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], [["car", 0.7], ["bike", 0.1], '
                 '["bus", 0.2]]]}', False, id="JsonFromClassificationResult"),
    pytest.param(jt.encode_regress, [f32(0.2), f32(0.9), f32(1.0)], '{ "results": [ 0.2, 0.9, 1.0 ] }', False,
                 id="JsonFromRegressionResult"),
    pytest.param(jt.encode_regress, [f32(0.2), float("inf"), f32(1.0), float("-inf"), float("nan")],
                 '{ "results": [ 0.2, Infinity, 1.0, -Infinity, NaN ] }', True,
                 id="JsonFromRegressionResultWithNonFinite"),
])
def test_make_json_from_results(encode, results, want, as_strings):
    (compare_json_all_values_as_strings if as_strings else compare_json)(encode(results), want)


@pytest.mark.parametrize("encode,substring", [
    pytest.param(jt.encode_classify, "empty ClassificationResults", id="JsonFromResultErrors-1"),
    pytest.param(jt.encode_regress, "empty RegressionResults", id="JsonFromResultErrors-2"),
])
def test_make_json_from_results_errors(encode, substring):
    with pytest.raises(ServingError) as err:
        encode([])
    assert err.value.code == Code.INVALID_ARGUMENT and substring in err.value.message


# ---- MakeJsonFromStatus: the REST edge writes errors (pyserving has no separate function) -------
def test_status_ok_writes_no_error(models_server):
    """StatusOK: an OK status adds nothing to the answer, which holds the result alone."""
    assert call_json(models_server, "POST", "/v1/models/hp2:predict", {"instances": [[1.0]]}) == (
        200, {"predictions": [[2.5]]})


@pytest.mark.parametrize("name", [
    pytest.param('key"', id="StatusError-1"),  # Bad key: "key"
    pytest.param("key'", id="StatusError-2"),  # Bad key: 'key'
])
def test_status_error_is_json_with_the_message_escaped(models_server, name):
    status, body = call_json(models_server, "POST", "/v1/models/hp2:predict",
                             {"signature_name": name, "instances": [[1.0]]})
    assert (status, body) == (400, {"error": f'Serving signature name: "{name}" not found in signature def'})
