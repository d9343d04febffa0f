"""TensorProto codec: typed value fields, tensor_content, padding rules, limits."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from pyserving.codecs.tensor_proto import from_numpy, to_numpy
from pyserving.errors import Code, ServingError


@pytest.mark.parametrize("array", [
    np.array([[1.5, 2.0]], np.float32), np.array([1, -2], np.int32), np.array([2**40], np.int64),
    np.array([True, False]), np.array([0.5], np.float64), np.array([1, 255], np.uint8),
    np.array([1.5], np.float16), np.array([[b"a", b"\x00b"]], object), np.array(3.0, np.float32),
    np.array([2**63 + 1], np.uint64),
])
def test_round_trip_and_agreement_with_tensorflow(array):
    proto = from_numpy(array)
    back = to_numpy(proto)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tolist() == array.tolist()
    assert tf.make_ndarray(proto).tolist() == array.tolist()  # TensorFlow reads what we write
    assert to_numpy(tf.make_tensor_proto(array)).tolist() == array.tolist()  # and we read what it writes


def test_tensor_content():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    proto = from_numpy(array, as_tensor_content=True)
    assert proto.tensor_content and not proto.float_val
    assert to_numpy(proto).tolist() == array.tolist()


def test_short_value_list_is_padded_with_last_value():
    proto = tf.make_tensor_proto(7.0, shape=[2, 2])
    assert to_numpy(proto).tolist() == [[7.0, 7.0], [7.0, 7.0]]


def test_bad_tensors_are_refused():
    proto = from_numpy(np.array([1.0, 2.0], np.float32))
    proto.tensor_content = b"\x00" * 3
    with pytest.raises(ServingError, match="tensor_content holds 3 bytes"):
        to_numpy(proto)
    proto = from_numpy(np.array([1.0], np.float32))
    proto.tensor_shape.dim[0].size = 10**12
    with pytest.raises(ServingError, match="exceeds the limit"):
        to_numpy(proto)
    proto = from_numpy(np.array([1.0, 2.0, 3.0], np.float32))
    proto.tensor_shape.dim[0].size = 2
    with pytest.raises(ServingError, match="3 values but its shape"):
        to_numpy(proto)


def _proto(dtype, dims, **fields):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for d in dims:
        proto.tensor_shape.dim.add().size = d
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(proto, name).extend(value)
        else:
            setattr(proto, name, value)
    return proto


@pytest.mark.parametrize("proto,message", [
    # TensorShape counts elements as it goes: 2^40 x 2^40 overflows int64 before the 0 is reached.
    (_proto(1, [2**40, 2**40, 0, 1]), "Encountered overflow when multiplying 1099511627776 with 1099511627776"),
    (_proto(1, [0, 2**40, 2**40]), "Cannot make a tensor of shape [0, 1099511627776, 1099511627776]"),
    (_proto(1, [2, -1]), "Tensor shape [2, -1] has a negative dimension"),
    (_proto(1, [3], tensor_content=b"abc"), "tensor_content holds 3 bytes; shape [3] of float needs 12"),
    (_proto(20, [1]), "Unsupported tensor dtype: 20"),  # DT_RESOURCE
    (_proto(1, [1], float_val=[1.0, 2.0]), "Tensor has 2 values but its shape [1] holds 1"),
])
def test_client_mistakes_are_invalid_argument(proto, message):
    with pytest.raises(ServingError) as err:
        to_numpy(proto)
    assert err.value.code == Code.INVALID_ARGUMENT and message in err.value.message


def test_narrow_ints_wrap_as_tensorflow_static_casts_them():
    assert to_numpy(_proto(6, [3], int_val=[1000, -1, 127])).tolist() == [-24, -1, 127]  # DT_INT8
    assert to_numpy(_proto(4, [2], int_val=[256 + 7, -1])).tolist() == [7, 255]  # DT_UINT8


def tensorflow_reads(proto):
    """What TensorFlow makes of a TensorProto (Tensor::FromProto, through tf.io.parse_tensor)."""
    return tf.io.parse_tensor(proto.SerializeToString(), tf.dtypes.as_dtype(proto.dtype)).numpy()


@pytest.mark.parametrize("proto", [
    _proto(7, [4], string_val=[b"a", b"b", b"c"]), _proto(7, [2, 2]), _proto(7, [1], string_val=[b"x"]),
    _proto(1, [3]), _proto(1, [2, 2], float_val=[1.5, -2.0]), _proto(3, [3], int_val=[4, 5]), _proto(9, [2]),
    _proto(10, [3], bool_val=[True]), _proto(2, [2], double_val=[0.25]), _proto(1, [0, 3]), _proto(7, [0]),
])
def test_short_and_empty_value_lists_read_as_tensorflow_reads_them(proto):
    # A short list is padded with its last value; no values at all is zeros (b"" for strings).
    ours, theirs = to_numpy(proto), tensorflow_reads(proto)
    assert ours.shape == theirs.shape and ours.dtype == (object if proto.dtype == 7 else theirs.dtype)
    assert ours.tolist() == theirs.tolist()


def test_the_element_limit_is_inclusive_and_counts_up_to_int64_max():
    assert to_numpy(_proto(1, [2, 2]), max_elements=4).shape == (2, 2)
    with pytest.raises(ServingError) as err:
        to_numpy(_proto(1, [2**63 - 1]))  # the largest count TensorShape takes: too many here, not an overflow
    assert err.value.message == f"Tensor with {2**63 - 1} elements exceeds the limit of {1 << 31}"


def test_unknown_rank_is_refused():
    proto = _proto(1, [])
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(ServingError) as err:
        to_numpy(proto)
    assert err.value.code == Code.INVALID_ARGUMENT and err.value.message == "Tensor shape has unknown rank"


def test_unicode_arrays_are_written_as_utf8_strings():
    proto = from_numpy(np.array([["ab", "é"]]))
    assert proto.dtype == 7 and list(proto.string_val) == [b"ab", "é".encode()]
    assert tensorflow_reads(proto).tolist() == [[b"ab", "é".encode()]]


def test_half_tensors_of_any_shape_round_trip():
    array = np.array([[0.5, -1.25], [65504.0, 2.0**-24]], np.float16)
    proto = from_numpy(array)
    assert to_numpy(proto).tolist() == array.tolist() and tensorflow_reads(proto).tolist() == array.tolist()


@pytest.mark.parametrize("strings", [[b"a", b"bcd"], [b"x" * 200, b"", b"\x00\xff"], []])
def test_strings_in_tensor_content_are_tensorflow_s_encoded_string_list(strings):
    # Tensor::AsProtoTensorContent writes strings with port::EncodeStringList: the varint length
    # of each, then their bytes. tf.io.parse_tensor reads a proto with Tensor::FromProto.
    proto = from_numpy(np.array(strings, dtype=object).reshape(len(strings)), as_tensor_content=True)
    assert not proto.string_val and proto.tensor_content == b"".join(
        (bytes([len(x)]) if len(x) < 128 else bytes([len(x) & 0x7F | 0x80, len(x) >> 7])) for x in strings
    ) + b"".join(strings)
    assert tf.io.parse_tensor(proto.SerializeToString(), tf.string).numpy().tolist() == strings
    assert to_numpy(proto).tolist() == strings


@pytest.mark.parametrize("content", [b"\x05ab", b"\x01\x01a", b"\x01", b"\x80\x80\x80\x80\x80\x01ab"])
def test_a_malformed_string_list_in_tensor_content_is_refused(content):
    proto = tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum, tensor_content=content)
    proto.tensor_shape.dim.add().size = 2
    with pytest.raises(ServingError) as err:
        to_numpy(proto)
    assert err.value.code == Code.INVALID_ARGUMENT and "tensor_content" in err.value.message
