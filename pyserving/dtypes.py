"""TensorFlow DataType enum numbers <-> numpy dtypes, without importing TensorFlow."""
from __future__ import annotations

import ml_dtypes
import numpy as np

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 14, 17, 19, 22, 23

# Names as TensorFlow's DataTypeString prints them (used in error messages).
SHORT_NAMES = {
    DT_FLOAT: "float", DT_DOUBLE: "double", DT_INT32: "int32", DT_UINT8: "uint8",
    DT_INT16: "int16", DT_INT8: "int8", DT_STRING: "string", DT_INT64: "int64",
    DT_BOOL: "bool", DT_UINT16: "uint16", DT_HALF: "half", DT_UINT32: "uint32",
    DT_UINT64: "uint64", DT_BFLOAT16: "bfloat16",
}
ENUM_NAMES = {num: "DT_" + name.upper() for num, name in SHORT_NAMES.items()}

NUMPY = {
    DT_FLOAT: np.dtype(np.float32), DT_DOUBLE: np.dtype(np.float64),
    DT_INT32: np.dtype(np.int32), DT_UINT8: np.dtype(np.uint8),
    DT_INT16: np.dtype(np.int16), DT_INT8: np.dtype(np.int8),
    DT_STRING: np.dtype(object), DT_INT64: np.dtype(np.int64),
    DT_BOOL: np.dtype(np.bool_), DT_UINT16: np.dtype(np.uint16),
    DT_HALF: np.dtype(np.float16), DT_UINT32: np.dtype(np.uint32),
    DT_UINT64: np.dtype(np.uint64),
    DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),  # numpy has none; TensorFlow's own is ml_dtypes'
}
_FROM_NUMPY = {dt: num for num, dt in NUMPY.items()}


def short_name(dtype: int) -> str:
    return SHORT_NAMES.get(dtype, f"type{dtype}")


def numpy_dtype(dtype: int) -> np.dtype:
    """DataType enum -> numpy dtype."""
    try:
        return NUMPY[dtype]
    except KeyError:
        raise KeyError(f"unsupported DataType {dtype}") from None


def data_type(dtype: np.dtype) -> int:
    """numpy dtype -> DataType enum."""
    if dtype.kind in ("S", "U", "O"):
        return DT_STRING
    return _FROM_NUMPY[np.dtype(dtype)]
