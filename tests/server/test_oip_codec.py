"""codecs/oip.py: the Open Inference Protocol's mapping to TF models, as pure functions."""
from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest

from pyserving import dtypes
from pyserving.codecs import oip
from pyserving.errors import Code, ServingError
from pyserving.types import ModelSpec, TensorSpec

# The table as the spec lists the datatypes (inference_rest.md, Tensor Data Types) plus BF16, and
# the TF DataType each is served as.
EXPECTED = {
    "BOOL": (10, np.bool_), "UINT8": (4, np.uint8), "UINT16": (17, np.uint16), "UINT32": (22, np.uint32),
    "UINT64": (23, np.uint64), "INT8": (6, np.int8), "INT16": (5, np.int16), "INT32": (3, np.int32),
    "INT64": (9, np.int64), "FP16": (19, np.float16), "FP32": (1, np.float32), "FP64": (2, np.float64),
    "BYTES": (7, object), "BF16": (14, ml_dtypes.bfloat16),
}


def sig(**inputs: int) -> dict:
    return {name: TensorSpec(f"{name}:0", dtype, (-1,)) for name, dtype in inputs.items()}


def refused(fn, *args) -> str:
    with pytest.raises(ServingError) as info:
        fn(*args)
    assert info.value.code == Code.INVALID_ARGUMENT
    return info.value.message


def test_the_datatype_table_is_every_v2_datatype_once_each_way():
    assert {name: dt for name, dt in oip.DATATYPES.items()} == {name: dt for name, (dt, _np) in EXPECTED.items()}
    for name, (dt, np_type) in EXPECTED.items():
        assert oip.V2_NAMES[dt] == name
        assert oip.datatype_name(dt) == name
        assert dtypes.numpy_dtype(dt) == np.dtype(np_type)
        assert oip.datatype_of(np.zeros(1, dtype=np_type)) == name


def test_a_tf_type_v2_has_no_name_for_keeps_tf_name():
    assert oip.datatype_name(20) == "TYPE20"  # DT_RESOURCE: not in dtypes' short names either


@pytest.mark.parametrize("version, expected", [
    ("", ModelSpec("m")),
    ("3", ModelSpec("m", version=3)),
    ("007", ModelSpec("m", version=7)),
    (str(2**63 - 1), ModelSpec("m", version=2**63 - 1)),
    ("stable", ModelSpec("m", label="stable")),
    ("v10", ModelSpec("m", label="v10")),
    ("\u0663", ModelSpec("m", label="\u0663")),  # an Arabic-Indic digit is not a version number
])
def test_the_version_string_is_a_version_number_a_label_or_latest(version, expected):
    assert oip.model_spec("m", version) == expected


def test_a_version_past_int64_and_a_missing_name_are_refused():
    assert "out of range" in refused(oip.model_spec, "m", str(2**63))
    assert refused(oip.model_spec, "", "") == "Missing model name in request."


def test_the_signature_is_the_request_parameter_signature_name():
    assert oip.model_spec("m", "", {"signature_name": "sig"}) == ModelSpec("m", signature_name="sig")
    assert oip.model_spec("m", "1", {"other": 1}) == ModelSpec("m", version=1)
    assert "must be a string" in refused(oip.model_spec, "m", "", {"signature_name": 3})


def test_metadata_shapes_use_minus_one_for_unknown_dims():
    assert oip.metadata_shape(TensorSpec("x", 1, (-1, 3))) == [-1, 3]
    assert oip.metadata_shape(TensorSpec("x", 1, None)) == []
    assert oip.tensor_metadata({"x": TensorSpec("x:0", 1, (-1, 1))}) == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 1]}]


@pytest.mark.parametrize("name, datatype, shape, message", [
    ("nope", "FP32", [1], "Unexpected input 'nope': the model's inputs are ['x']"),
    ("", "FP32", [1], "An input has no name"),
    ("x", "FP64", [1], "Input 'x': datatype FP64 does not match the model's FP32"),
    ("x", "BYTES", [1], "Input 'x': datatype BYTES does not match the model's FP32"),
    ("x", "FLOAT", [1], "Input 'x': unknown datatype 'FLOAT'"),
    ("x", "FP32", [-1], "Input 'x': shape must be a list of non-negative integers, got [-1]"),
    ("x", "FP32", "3", "Input 'x': shape must be a list of non-negative integers, got '3'"),
    ("x", "FP32", [1.5], "Input 'x': shape must be a list of non-negative integers"),
    ("x", "FP32", [True], "Input 'x': shape must be a list of non-negative integers"),
    ("x", "FP32", [2**40, 2**40], "Input 'x': shape [1099511627776, 1099511627776] holds more than 2^63"),
])
def test_check_input_refuses_what_does_not_fit_the_signature(name, datatype, shape, message):
    assert refused(oip.check_input, name, datatype, shape, sig(x=dtypes.DT_FLOAT)).startswith(message)


def test_json_data_flat_or_nested_row_major():
    flat = oip.from_json("x", "INT32", [2, 2], 4, [1, 2, 3, 4])
    nested = oip.from_json("x", "INT32", [2, 2], 4, [[1, 2], [3, 4]])
    assert flat.dtype == np.int32 and np.array_equal(flat, nested) and flat.tolist() == [[1, 2], [3, 4]]
    assert oip.from_json("x", "FP32", [2], 2, [1, 2.5]).tolist() == [1.0, 2.5]
    assert oip.from_json("x", "BOOL", [2], 2, [True, False]).tolist() == [True, False]
    assert oip.from_json("x", "BYTES", [2], 2, ["a", "\u00e9"]).tolist() == [b"a", "\u00e9".encode()]
    assert oip.from_json("x", "UINT64", [1], 1, [2**64 - 1]).tolist() == [2**64 - 1]
    # beside a small int, numpy would make float64 of 2^64-1 (rounded): taken exactly
    assert oip.from_json("x", "UINT64", [2], 2, [1, 2**64 - 1]).tolist() == [1, 2**64 - 1]
    assert oip.from_json("x", "INT64", [2], 2, [[-(2**63)], [2**63 - 1]]).tolist() == [-(2**63), 2**63 - 1]
    assert oip.from_json("x", "FP32", [0, 3], 0, []).shape == (0, 3)


@pytest.mark.parametrize("datatype, shape, data, message", [
    ("FP32", [3], [1, 2], "Input 'x': shape [3] holds 3 elements but 2 were given"),
    ("FP32", [1], ["1.5"], "Input 'x': FP32 data cannot hold strings"),
    ("FP32", [1], [True], "Input 'x': FP32 data cannot hold booleans"),
    ("INT32", [1], [1.5], "Input 'x': INT32 data cannot hold numbers"),
    ("INT8", [1], [300], "Input 'x': a value is out of the range of INT8"),
    ("UINT8", [1], [-1], "Input 'x': a value is out of the range of UINT8"),
    ("BOOL", [1], [1], "Input 'x': BOOL data cannot hold numbers"),
    ("BYTES", [1], [1], "Input 'x': BYTES data must be strings"),
    ("FP32", [2], [[1], 2], "Input 'x': data is not a rectangular array"),
    ("FP32", [2], [1, None], "Input 'x': FP32 data cannot hold values of mixed or unsupported types"),
    ("INT64", [1], [2**64], "Input 'x': a value is out of the range of INT64"),
    ("INT64", [2], [1.5, 2**64], "Input 'x': INT64 data cannot hold values of mixed or unsupported types"),
])
def test_json_data_that_does_not_fit_is_refused(datatype, shape, data, message):
    count = oip.element_count(shape)
    assert refused(oip.from_json, "x", datatype, shape, count, data) == message


def test_raw_bytes_are_little_endian_row_major():
    raw = np.array([[1, 2], [3, 4]], dtype="<i4").tobytes()
    assert oip.from_raw("x", "INT32", [2, 2], 4, raw).tolist() == [[1, 2], [3, 4]]
    assert oip.from_raw("x", "BOOL", [2], 2, b"\x01\x00").tolist() == [True, False]
    half = np.array([1.5, -2], dtype="<f2").tobytes()
    assert oip.from_raw("x", "FP16", [2], 2, half).tolist() == [1.5, -2.0]
    bf16 = np.array([1.5, 3], dtype=ml_dtypes.bfloat16)
    assert oip.from_raw("x", "BF16", [2], 2, bf16.tobytes()).astype(np.float32).tolist() == [1.5, 3.0]
    assert oip.from_raw("x", "BYTES", [2], 2, struct.pack("<I", 1) + b"a" + struct.pack("<I", 0)).tolist() == [
        b"a", b""]


@pytest.mark.parametrize("datatype, shape, raw, message", [
    ("FP32", [2], b"\x00" * 7, "Input 'x': 7 bytes of data, but shape [2] of FP32 needs 8"),
    ("BOOL", [1], b"\x02", "Input 'x': BOOL bytes must be 0 or 1"),
    ("BYTES", [1], b"\x01\x00", "Input 'x': BYTES data ends inside an element's 4-byte length"),
    ("BYTES", [1], b"\x05\x00\x00\x00ab", "Input 'x': a BYTES element of 5 bytes runs past the data's end"),
    ("BYTES", [2], b"\x01\x00\x00\x00a", "Input 'x': shape [2] holds 2 elements but 1 were given"),
])
def test_raw_bytes_that_do_not_fit_are_refused(datatype, shape, raw, message):
    assert refused(oip.from_raw, "x", datatype, shape, oip.element_count(shape), raw) == message


def test_typed_contents_are_range_checked_into_narrow_types():
    assert oip.from_contents("x", "INT8", [2], 2, [1, -3]).dtype == np.int8
    assert oip.from_contents("x", "UINT64", [1], 1, [2**64 - 1]).tolist() == [2**64 - 1]
    assert oip.from_contents("x", "BYTES", [1], 1, [b"\xff"]).tolist() == [b"\xff"]
    assert refused(oip.from_contents, "x", "INT8", [1], 1, [128]) == "Input 'x': a value is out of the range of INT8"
    assert refused(oip.from_contents, "x", "FP32", [2], 2, [1.0]) == (
        "Input 'x': shape [2] holds 2 elements but 1 were given")
    assert set(oip.CONTENTS_FIELD) == set(oip.DATATYPES) - {"FP16", "BF16"}


@pytest.mark.parametrize("array", [
    np.array([[1.5, -2.0]], dtype=np.float32), np.array([1, 2], dtype=np.uint64), np.array([True, False]),
    np.array([1.5], dtype=np.float16), np.array([1.5], dtype=ml_dtypes.bfloat16), np.array([-7], dtype=np.int8),
])
def test_outputs_round_trip_through_raw_bytes(array):
    datatype = oip.datatype_of(array)
    back = oip.from_raw("y", datatype, list(array.shape), array.size, oip.to_raw(array))
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_bytes_outputs_are_length_prefixed_raw_and_text_in_json():
    array = np.array([b"ab", b"\xff"], dtype=object)
    assert oip.to_raw(array) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00\xff"
    assert oip.to_json_data(array) == ["ab", "\ufffd"]
    assert oip.to_json_data(np.array([[1.5]], dtype=ml_dtypes.bfloat16)) == [1.5]
