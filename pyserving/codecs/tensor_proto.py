"""TensorProto <-> numpy, as TensorFlow reads and TF Serving writes them, without TensorFlow."""
from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2

from pyserving import dtypes
from pyserving.errors import invalid_argument

# Which repeated field carries each dtype's values when tensor_content is empty.
_VALUE_FIELD = {
    dtypes.DT_FLOAT: "float_val", dtypes.DT_DOUBLE: "double_val",
    dtypes.DT_INT32: "int_val", dtypes.DT_INT16: "int_val", dtypes.DT_INT8: "int_val",
    dtypes.DT_UINT8: "int_val", dtypes.DT_UINT16: "int_val", dtypes.DT_HALF: "half_val",
    dtypes.DT_INT64: "int64_val", dtypes.DT_BOOL: "bool_val", dtypes.DT_STRING: "string_val",
    dtypes.DT_UINT32: "uint32_val", dtypes.DT_UINT64: "uint64_val",
}


INT64_MAX = 2**63 - 1
# Types carried in int_val (int32) that are narrower: TensorFlow static_casts them (wraps).
_NARROW_INTS = (dtypes.DT_INT16, dtypes.DT_INT8, dtypes.DT_UINT8, dtypes.DT_UINT16)


def _shape(proto: tensor_pb2.TensorProto) -> list[int]:
    """The dims, checked as TensorShape checks a proto's: none negative, and the running element
    count never past int64 (so 2^40 x 2^40 x 0 is refused, as in TensorFlow)."""
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument("Tensor shape has unknown rank")
    shape, count = [], 1
    for d in (dim.size for dim in proto.tensor_shape.dim):
        if d < 0:
            raise invalid_argument(f"Tensor shape {[x.size for x in proto.tensor_shape.dim]} has a negative dimension")
        if count * d > INT64_MAX:
            raise invalid_argument(f"Encountered overflow when multiplying {count} with {d}, result: -1")
        count *= d
        shape.append(d)
    return shape


def to_numpy(proto: tensor_pb2.TensorProto, max_elements: int = 1 << 31) -> np.ndarray:
    """A TensorProto as an array; anything a client got wrong is INVALID_ARGUMENT."""
    if proto.dtype not in _VALUE_FIELD:
        raise invalid_argument(f"Unsupported tensor dtype: {proto.dtype}")
    shape = _shape(proto)
    count = math.prod(shape)
    if count > max_elements:
        raise invalid_argument(f"Tensor with {count} elements exceeds the limit of {max_elements}")
    try:
        return _values(proto, shape, count)
    except (ValueError, OverflowError, MemoryError) as exc:  # what numpy cannot hold, e.g. 0 x 2^40 x 2^40
        raise invalid_argument(f"Cannot make a tensor of shape {shape} from the TensorProto: {exc}") from None


def _values(proto: tensor_pb2.TensorProto, shape: list[int], count: int) -> np.ndarray:
    np_dtype = dtypes.numpy_dtype(proto.dtype)
    if proto.tensor_content and proto.dtype != dtypes.DT_STRING:
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise invalid_argument(
                f"tensor_content holds {len(proto.tensor_content)} bytes; shape {shape} of "
                f"{dtypes.short_name(proto.dtype)} needs {count * np_dtype.itemsize}"
            )
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
    if proto.tensor_content:  # strings: TensorFlow's EncodeStringList, as Tensor::FromProto decodes it
        return np.array(_decode_string_list(proto.tensor_content, count), dtype=object).reshape(shape)
    values = getattr(proto, _VALUE_FIELD[proto.dtype])
    n = len(values)
    if n > count:
        raise invalid_argument(f"Tensor has {n} values but its shape {shape} holds {count}")
    if proto.dtype == dtypes.DT_STRING:
        flat = np.empty(count, dtype=object)
        flat[:n] = list(values)
        if n < count:
            flat[n:] = values[-1] if n else b""
        return flat.reshape(shape)
    if proto.dtype == dtypes.DT_HALF:
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    elif proto.dtype in _NARROW_INTS:
        flat = np.array(values, dtype=np.int32).astype(np_dtype)
    else:
        flat = np.array(values, dtype=np_dtype)
    if n < count:
        # TensorFlow pads a short value list with its last value (zeros when empty).
        flat = np.concatenate([flat, np.full(count - n, flat[-1] if n else 0, dtype=flat.dtype)])
    return flat.reshape(shape)


def from_numpy(array: np.ndarray, as_tensor_content: bool = False) -> tensor_pb2.TensorProto:
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto()
    dtype = dtypes.data_type(array.dtype)
    proto.dtype = dtype
    proto.tensor_shape.SetInParent()  # a scalar's shape is present and empty, as Tensor::AsProtoField writes it
    for d in array.shape:
        proto.tensor_shape.dim.add().size = d
    if dtype == dtypes.DT_STRING:
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1)]
        if as_tensor_content:  # Tensor::AsProtoTensorContent writes strings as one encoded list too
            proto.tensor_content = _encode_string_list(values)
        else:
            proto.string_val.extend(values)
    elif as_tensor_content:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    elif dtype == dtypes.DT_HALF:
        proto.half_val.extend(array.reshape(-1).view(np.uint16).tolist())
    else:
        getattr(proto, _VALUE_FIELD[dtype]).extend(array.reshape(-1).tolist())
    return proto


# TensorFlow's port::EncodeStringList: the varint32 length of every string, then their bytes.
def _encode_string_list(values: list[bytes]) -> bytes:
    out = bytearray()
    for value in values:
        n = len(value)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    for value in values:
        out += value
    return bytes(out)


def _decode_string_list(content: bytes, count: int) -> list[bytes]:
    """port::DecodeStringList: exactly `count` lengths, then exactly as many bytes as they add up to."""
    sizes, pos = [], 0
    for _ in range(count):
        size, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise invalid_argument("Cannot parse tensor from proto: malformed string list in tensor_content")
            byte = content[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        sizes.append(size)
    if sum(sizes) != len(content) - pos:
        raise invalid_argument("Cannot parse tensor from proto: malformed string list in tensor_content")
    values = []
    for size in sizes:
        values.append(bytes(content[pos:pos + size]))
        pos += size
    return values
