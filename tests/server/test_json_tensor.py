"""JSON codec, table-tested against json_tensor.cc's behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from pyserving import dtypes
from pyserving.codecs import json_tensor as jt
from pyserving.errors import Code, ServingError
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


def test_json_numbers_become_the_nearest_value_of_the_tensor_s_type_as_in_tf_serving_2_20():
    """No precision check since tensorflow/serving 57dac6cd (2021): the nearest float or double,
    inf past float's range, in row and columnar requests and in tf.Example features alike."""
    for doc in ({"instances": [1435774380, 16777216, 16777217, 3.4e39, -1.79769e308]},
                {"inputs": [1435774380, 16777216, 16777217, 3.4e39, -1.79769e308]}):
        _fmt, inputs = jt.decode_predict(doc, sig(x=dtypes.DT_FLOAT))
        assert inputs["x"].tolist() == [1435774336.0, 16777216.0, 16777216.0, np.inf, -np.inf]
    _fmt, inputs = jt.decode_predict({"instances": [9007199254740993]}, sig(x=dtypes.DT_DOUBLE))
    assert inputs["x"].tolist() == [9007199254740992.0]
    from pyserving.codecs import example as example_codec

    example = example_codec.example_from_json({"x": 3.4e39})
    assert list(example.features.feature["x"].float_list.value) == [np.inf]


@pytest.mark.parametrize("leaves,message", [
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


def decode_error(doc, signature) -> ServingError:
    with pytest.raises(ServingError) as err:
        jt.decode_predict(doc, signature)
    return err.value


F, AB = sig(x=dtypes.DT_FLOAT), sig(a=dtypes.DT_FLOAT, b=dtypes.DT_FLOAT)


# Whole messages, in json_tensor.cc's words (FillPredictRequestFromJson, FillTensorMapFromInstancesList,
# AddInstanceItem, TypeError, Base64FormatError, LossyDecimalError); JSON values are shown as
# dump_value() prints them.
@pytest.mark.parametrize("doc,signature,message", [
    ({}, F, "Missing 'inputs' or 'instances' key"),
    ({"instances": [1], "inputs": [1]}, F, 'JSON Value: {"instances": [1], "inputs": [1]} Not formatted correctly '
                                           "expecting only one of 'inputs' or 'instances' keys to exist "),
    ({"instances": []}, F, "JSON Value: {\"instances\": []} No values in 'instances' array"),
    ({"instances": 5}, F, "JSON Value: {\"instances\": 5} Excepting 'instances' to be an list/array"),
    ({"instances": [1]}, AB, "instances is a plain list, but expecting list of objects as multiple input tensors "
                             "required as per tensorinfo_map"),
    ({"inputs": [1]}, AB, "inputs is a plain value/list, but expecting an object as multiple input tensors "
                          "required as per tensorinfo_map"),
    ({"instances": [1, {"x": 1}]}, F, "Expecting value/list but got object at item 1 of input list"),
    ({"instances": [{"a": 1, "b": 2}, [1]]}, AB, "Expecting object but got list at item 1 of input list"),
    ({"instances": [{"a": 1, "c": 2}]}, AB, "Failed to process element: 0 key: c of 'instances' list. Error: "
                                            "INVALID_ARGUMENT: JSON object: does not have named input: c"),
    ({"instances": [{"a": 1, "b": 2}, {"b": 3}]}, AB,
     "Failed to process element: 1 of 'instances' list. JSON object: {\"b\": 3} must only have keys: a,b"),
    ({"instances": [{"a": [1], "b": 2}, {"a": [1, 2], "b": 3}]}, AB,
     "Failed to process element: 1 key: a of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting tensor size: 1 but got: 2"),
    ({"instances": [[[1, 2]], [[1], [2]]]}, F,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [1,2] but got: [2,1]"),
    ({"instances": [1, "a"]}, F, "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
                                 'JSON Value: "a" Type: String is not of expected type: float'),
    ({"inputs": {"b64": "AAAA"}}, F, 'JSON Value: {"b64": "AAAA"} Type: Object is not of expected type: float'),
    ({"inputs": [[1.5], [{"b64": "AAAA"}]]}, F,
     'JSON Value: {"b64": "AAAA"} Type: Object is not of expected type: float'),
    ({"inputs": [False]}, F, "JSON Value: false Type: False is not of expected type: float"),
    ({"inputs": [None]}, F, "JSON Value: null Type: Null is not of expected type: float"),
    ({"inputs": [[1], 2]}, F, "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ({"inputs": [1]}, sig(x=dtypes.DT_BOOL), "JSON Value: 1 Type: Number is not of expected type: bool"),
    ({"inputs": [1]}, sig(x=dtypes.DT_STRING), "JSON Value: 1 Type: Number is not of expected type: string"),
    ({"inputs": [{"a": 1}]}, sig(x=dtypes.DT_STRING), 'JSON Value: {"a": 1} not formatted correctly for base64 data'),
    ({"inputs": {"b64": "!!"}}, sig(x=dtypes.DT_STRING), "Unable to base64 decode"),
    ({"inputs": [2**31]}, sig(x=dtypes.DT_INT32), "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
    ({"inputs": [-1]}, sig(x=dtypes.DT_UINT32), "JSON Value: -1 Type: Number is not of expected type: uint32"),
])
def test_decode_error_messages(doc, signature, message):
    error = decode_error(doc, signature)
    assert error.code == Code.INVALID_ARGUMENT and error.message == message


def test_a_signature_without_inputs_has_no_input_map():
    assert decode_error({"inputs": [1]}, sig()).message.startswith("Failed to get input map for signature")


def test_an_input_type_json_cannot_carry_is_unimplemented_and_names_the_first_value():
    # AddValueToTensor's default case: errors::Unimplemented("Conversion of JSON Value: ", value, " to type: ", ...)
    error = decode_error({"inputs": [7, 8]}, sig(x=dtypes.DT_UINT16))
    assert error.code == Code.UNIMPLEMENTED and error.message == "Conversion of JSON Value: 7 to type: uint16"
    # Without a value nothing is converted, so nothing fails: an empty tensor of that type.
    empty = jt.decode_predict({"inputs": [[], []]}, sig(x=dtypes.DT_UINT16))[1]["x"]
    assert empty.dtype == np.uint16 and empty.shape == (2, 0)


@pytest.mark.parametrize("dtype,values", [
    (dtypes.DT_INT32, [-(2**31), 2**31 - 1]), (dtypes.DT_UINT32, [0, 2**32 - 1]),
    (dtypes.DT_INT64, [-(2**63), 2**63 - 1]), (dtypes.DT_UINT64, [2**64 - 1]),
    (dtypes.DT_FLOAT, [48, 2**24 - 1, -(2**24 - 1), float(np.finfo(np.float32).max)]),  # exact in a float
    (dtypes.DT_BOOL, [True, False]),
])
def test_values_at_the_edge_of_their_type_are_accepted(dtype, values):
    _fmt, inputs = jt.decode_predict({"inputs": values}, sig(x=dtype))
    assert inputs["x"].dtype == dtypes.numpy_dtype(dtype) and inputs["x"].tolist() == values


@pytest.mark.parametrize("dtype,wrapped", [
    (dtypes.DT_INT8, [-1, 0, -56, -1]), (dtypes.DT_UINT8, [255, 0, 200, 255]), (dtypes.DT_INT16, [-1, 0, 200, -1]),
])
def test_narrow_ints_take_any_int32_and_wrap_as_tensorflow_casts_them(dtype, wrapped):
    # json_tensor.cc checks only IsInt() and fills int_val; Tensor::FromProto static_casts (what
    # tf.io.parse_tensor gives for that TensorProto).
    _fmt, inputs = jt.decode_predict({"inputs": [2**31 - 1, -(2**31), 200, -1]}, sig(x=dtype))
    assert inputs["x"].dtype == dtypes.numpy_dtype(dtype) and inputs["x"].tolist() == wrapped


def test_empty_lists_are_empty_tensors():
    assert jt.decode_predict({"inputs": []}, F)[1]["x"].shape == (0,)
    assert jt.decode_predict({"inputs": [[], []]}, F)[1]["x"].shape == (2, 0)
    assert jt.decode_predict({"instances": [[], []]}, F)[1]["x"].shape == (2, 0)


def test_strings_are_utf8_and_b64_decoded():
    _fmt, inputs = jt.decode_predict({"inputs": ["café", {"b64": "/w=="}]}, sig(x=dtypes.DT_STRING))
    assert inputs["x"].tolist() == ["café".encode(), b"\xff"]


def test_signature_name():
    assert jt.signature_name({}) == ""
    assert jt.signature_name({"signature_name": "classify_x"}) == "classify_x"
    with pytest.raises(ServingError) as err:
        jt.signature_name({"signature_name": ["s"]})
    assert err.value.message == ("JSON Value: {\"signature_name\": [\"s\"]} not formatted correctly. "
                                 "'signature_name' key must be a string value.")


def test_parse_error_messages():
    for body, message in [(b"", "JSON Parse error: The document is empty"), (b"[1]", "JSON Value: [1] Is not object"),
                          (b"[" * 100_000, "JSON Parse error: nesting too deep"),
                          # a byte-order mark is no JSON value to rapidjson's Parse(), as TF Serving calls it
                          (b'\xef\xbb\xbf{"instances": [1]}', "JSON Parse error: Invalid value. at offset: 0")]:
        with pytest.raises(ServingError) as err:
            jt.parse(body)
        assert err.value.code == Code.INVALID_ARGUMENT and err.value.message == message


def test_values_in_messages_are_plain_utf8_and_cut_at_256_characters():
    assert jt.dump_value({"s": "café"}) == '{"s": "café"}'
    assert jt.dump_value("x" * 254) == '"' + "x" * 254 + '"'  # 256 characters: whole
    assert jt.dump_value("x" * 255) == '"' + "x" * 255 + "..."  # 257: the first 256, then ...


def test_encode_several_outputs_in_columnar_format_as_one_object():
    outputs = {"a": np.array([1, 2], np.int64), "b": np.array([[1.5]], np.float32)}
    assert jt.encode_predict(outputs, jt.COLUMNAR) == '{"outputs": {"a": [1, 2], "b": [[1.5]]}}'


@pytest.mark.parametrize("array,text", [
    (np.array([[1, 2], [3, 4]], np.int32), "[[1, 2], [3, 4]]"),
    (np.arange(8, dtype=np.uint8).reshape(2, 2, 2), "[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]"),
    (np.array([True, False]), "[true, false]"),
    (np.array([[0.5, 1.0], [2.0, -0.25]], np.float16), "[[0.5, 1.0], [2.0, -0.25]]"),
    (np.zeros((0, 3), np.float32), "[]"),
    (np.array(["ab", "é"]), '["ab", "é"]'),
    (np.array([b"\xffa"], object), '["\ufffda"]'),  # not UTF-8: replaced, not refused
])
def test_encode_tensors_of_each_kind(array, text):
    assert jt.encode_predict({"t": array}, jt.COLUMNAR) == '{"outputs": ' + text + "}"


def test_a_scalar_double_is_written_as_precisely_as_in_a_list():
    value = 0.1 + 1e-12  # "%g" is 0.1, which is this value as a float32 but not as a double
    assert jt.encode_predict({"t": np.array(value)}, jt.COLUMNAR) == (
        '{"outputs": ' + jt._float_texts(np.array([value]))[0] + "}")
    assert float(jt._float_texts(np.array([value]))[0]) == value


def test_unicode_outputs_named_bytes_are_b64_of_their_utf8():
    assert jt.encode_predict({"t_bytes": np.array(["é"])}, jt.COLUMNAR) == '{"outputs": [{"b64": "w6k="}]}'


def test_encode_row_format_edges():
    # Zero-row batches: test_tfs_json_tensor.py (FromJsonSingleZeroBatchTensor and its kin).
    assert jt.encode_predict({"n": np.array([1, 2], np.int64)}, jt.ROW) == '{"predictions": [1, 2]}'
    assert jt.encode_predict({"y": np.array([[1.0]], np.float32)}, jt.ROW) == '{"predictions": [[1.0]]}'


@pytest.mark.parametrize("call,message", [
    (lambda: jt.encode_predict({}, jt.ROW), "Cannot convert empty tensor map to JSON"),
    (lambda: jt.encode_predict({"c": np.array([1j])}, jt.COLUMNAR),
     "Failed to write JSON value for tensor type: complex128"),
    (lambda: jt.encode_classify([]), "Cannot convert empty ClassificationResults to JSON"),
    (lambda: jt.encode_regress([]), "Cannot convert empty RegressionResults to JSON"),
])
def test_encode_error_messages(call, message):
    with pytest.raises(ServingError) as err:
        call()
    assert err.value.code == Code.INVALID_ARGUMENT and err.value.message == message


def test_classify_encoding_of_several_examples_labels_and_missing_scores():
    results = [[(b"caf\xc3\xa9", 0.25)], [(b"\xff", None)]]
    assert jt.encode_classify(results) == '{"results": [[["café", 0.25]], [["\ufffd", 0.0]]]}'
