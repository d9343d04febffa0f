"""TensorProto codec: typed value fields, tensor_content, padding rules, limits."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pyserving.errors import ServingError
from tests.helpers import from_numpy, to_numpy  # the codec under test, imported in one place


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
