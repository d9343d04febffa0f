"""JSON codec, table-tested against json_tensor.cc's behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from pyserving import dtypes
from pyserving.codecs import json_tensor as jt
from pyserving.errors import ServingError
from pyserving.types import SignatureInfo, TensorSpec


def sig(**inputs):
    return SignatureInfo("tensorflow/serving/predict",
                         {n: TensorSpec(f"{n}:0", d, None) for n, d in inputs.items()}, {})


@pytest.mark.parametrize("value,expected", [
    (3.0, "3.0"), (2.5, "2.5"), (0.1, "0.1"), (9000000.0, "9e+06"), (0.00003, "3e-05"),
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
    (float(np.float32(1 / 3)), "0.333333343"), (-0.0, "-0.0"),
])
def test_float_formatting(value, expected):
    assert jt.format_float(value) == expected


def test_double_formatting_uses_double_precision():
    assert jt.format_float(1 / 3, is_double=True) == "0.33333333333333331"


def test_row_format_stacks_instances():
    fmt, inputs = jt.decode_predict({"instances": [[1, 2], [3, 4]]}, sig(x=dtypes.DT_FLOAT))
    assert fmt == jt.ROW
    assert inputs["x"].dtype == np.float32 and inputs["x"].tolist() == [[1, 2], [3, 4]]


def test_row_format_named_objects_and_b64():
    fmt, inputs = jt.decode_predict(
        {"instances": [{"s": {"b64": "AAE="}, "n": 1}, {"s": "x", "n": 2}]}, sig(s=dtypes.DT_STRING, n=dtypes.DT_INT64)
    )
    assert inputs["s"].tolist() == [b"\x00\x01", b"x"] and inputs["n"].tolist() == [1, 2]


def test_single_input_b64_object_is_a_value_not_a_named_object():
    _fmt, inputs = jt.decode_predict({"instances": [{"b64": "aGk="}]}, sig(img=dtypes.DT_STRING))
    assert inputs["img"].tolist() == [b"hi"]


def test_columnar_format():
    fmt, inputs = jt.decode_predict({"inputs": {"a": [1, 2, 3], "b": [[True]]}},
                                    sig(a=dtypes.DT_INT32, b=dtypes.DT_BOOL))
    assert fmt == jt.COLUMNAR and inputs["a"].dtype == np.int32 and inputs["b"].tolist() == [[True]]


@pytest.mark.parametrize("doc,dtype,message", [
    ({"instances": [True]}, dtypes.DT_FLOAT, "Type: True is not of expected type: float"),
    ({"instances": [1.5]}, dtypes.DT_INT32, "Type: Number is not of expected type: int32"),
    ({"instances": [2**40]}, dtypes.DT_INT32, "is not of expected type: int32"),
    ({"instances": [16777217]}, dtypes.DT_FLOAT, "without loss of precision"),
    ({"instances": [[1], 2]}, dtypes.DT_FLOAT, "Expecting shape [1] but got: []"),
    ({"instances": [[1], [2, 3]]}, dtypes.DT_FLOAT, "Expecting tensor size: 1 but got: 2"),
    ({"inputs": [[1, 2], [3]]}, dtypes.DT_FLOAT, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ({"inputs": [[1, [2]]]}, dtypes.DT_FLOAT, "Encountered list at unexpected level: 2 expected < 2"),
    ({"inputs": [1, [2]]}, dtypes.DT_FLOAT, "Encountered list at unexpected level: 1 expected < 1"),
    ({"inputs": [[1], 2]}, dtypes.DT_FLOAT, "found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ({"instances": {"x": 1}}, dtypes.DT_FLOAT, "Excepting 'instances' to be an list/array"),
    ({"inputs": {"b64": "!!"}}, dtypes.DT_STRING, "Unable to base64 decode"),
    ({"inputs": [{"a": 1}]}, dtypes.DT_STRING, "not formatted correctly for base64 data"),
])
def test_decode_errors(doc, dtype, message):
    with pytest.raises(ServingError) as err:
        jt.decode_predict(doc, sig(x=dtype))
    assert message in err.value.message


def test_plain_list_for_multi_input_signature_is_refused():
    with pytest.raises(ServingError, match="instances is a plain list"):
        jt.decode_predict({"instances": [1]}, sig(a=dtypes.DT_FLOAT, b=dtypes.DT_FLOAT))
    with pytest.raises(ServingError, match="Missing named input: b"):
        jt.decode_predict({"inputs": {"a": 1}}, sig(a=dtypes.DT_FLOAT, b=dtypes.DT_FLOAT))


def test_parse_errors():
    with pytest.raises(ServingError, match="JSON Parse error: .* at offset: 1"):
        jt.parse(b"{x")
    with pytest.raises(ServingError, match="Is not object"):
        jt.parse(b"[1]")
    with pytest.raises(ServingError, match="'signature_name' key must be a string value"):
        jt.signature_name({"signature_name": 3})
    assert jt.parse(b'{"a": NaN}')["a"] != jt.parse(b'{"a": NaN}')["a"]  # NaN accepted


def test_encode_row_and_columnar():
    y = np.array([[2.5], [3.0]], np.float32)
    assert jt.encode_predict({"y": y}, jt.ROW) == '{"predictions": [[2.5], [3.0]]}'
    assert jt.encode_predict({"y": y}, jt.COLUMNAR) == '{"outputs": [[2.5], [3.0]]}'
    two = jt.encode_predict({"a": np.array([1, 2], np.int64), "s_bytes": np.array([b"\x00", b"x"], object)}, jt.ROW)
    assert two == '{"predictions": [{"a": 1, "s_bytes": {"b64": "AA=="}}, {"a": 2, "s_bytes": {"b64": "eA=="}}]}'
    assert jt.encode_predict({"s": np.array([b"caf\xc3\xa9"], object)}, jt.COLUMNAR) == '{"outputs": ["café"]}'
    assert jt.encode_predict({"b": np.array(True)}, jt.COLUMNAR) == '{"outputs": true}'


def test_encode_row_errors():
    with pytest.raises(ServingError, match="has inconsistent batch size: 3 expecting: 2"):
        jt.encode_predict({"a": np.zeros(2), "b": np.zeros(3)}, jt.ROW)
    with pytest.raises(ServingError, match="has no shape information"):
        jt.encode_predict({"a": np.float32(1.0) * np.ones(())}, jt.ROW)


def test_classify_and_regress_encoding():
    assert jt.encode_classify([[(b"a", 0.5), (None, 1.0)]]) == '{"results": [[["a", 0.5], ["", 1.0]]]}'
    assert jt.encode_regress([1.0, 2.5]) == '{"results": [1.0, 2.5]}'


def _edge_floats(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 1.0, -3.0, 0.1, 2.5, 1e-5, 123456.0, 1234567.0, 1e16, 2.0**-140,
              float(info.max), float(info.tiny), float(info.smallest_subnormal), -float(info.max),
              float("nan"), float("inf"), float("-inf")]
    random = np.concatenate([rng.standard_normal(300), rng.uniform(-1e6, 1e6, 100),
                             10.0 ** rng.uniform(-40, 38, 100)])
    return np.array(values + random.tolist(), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorized_float_output_matches_per_value_formatting(dtype):
    flat = _edge_floats(dtype)
    expected = [jt.format_float(float(v), is_double=dtype == np.float64) for v in flat]
    assert jt._float_texts(flat) == expected
    grid = flat[:500].reshape(25, 4, 5)
    assert jt.encode_predict({"g": grid}, jt.COLUMNAR) == (
        '{"outputs": ' + jt._nested(expected[:500], grid.shape) + "}")
    assert jt._nested(["1.0", "2.0", "3.0", "4.0"], (2, 2)) == "[[1.0, 2.0], [3.0, 4.0]]"


@pytest.mark.parametrize("leaves,dtype", [
    ([0.5, -2.25, 1e30], dtypes.DT_FLOAT), ([1, 2.5, 3], dtypes.DT_FLOAT), ([1e300, -1e-300], dtypes.DT_DOUBLE),
    ([float("nan"), float("inf"), 3.0], dtypes.DT_FLOAT), ([], dtypes.DT_FLOAT), ([65504.0, -0.5], dtypes.DT_HALF),
])
def test_float_input_fast_path_agrees_with_the_checked_path(leaves, dtype):
    got = jt._leaves_to_array(list(leaves), dtype)
    want = np.array(leaves, dtype=np.float64).astype(dtypes.numpy_dtype(dtype))
    assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("leaves,message", [
    ([1.0, 3.5e38], "Cannot convert JSON value: 3.5e+38 to float without loss of precision"),
    ([1.0, "a"], 'JSON Value: "a" Type: String is not of expected type: float'),
    ([1.0, None], "Type: Null is not of expected type: float"),
])
def test_float_input_errors_keep_tf_serving_wording(leaves, message):
    with pytest.raises(ServingError) as err:
        jt._leaves_to_array(leaves, dtypes.DT_FLOAT)
    assert message in err.value.message


def test_parse_falls_back_for_what_the_fast_parser_refuses():
    assert jt.parse(b'{"a": [Infinity, -Infinity]}')["a"] == [float("inf"), float("-inf")]
    assert jt.parse('{"s": "caf\u00e9"}'.encode())["s"] == "café"
    with pytest.raises(ServingError, match="Invalid encoding in string"):
        jt.parse(b'{"s": "\xff"}')
    with pytest.raises(ServingError, match="The document is empty"):
        jt.parse(b"")
