"""The Open Inference Protocol (KServe V2) <-> numpy and the core's types, decided once for both
edges (REST: protocols/oip_rest.py, gRPC: protocols/grpc/oip.py). No wire format lives here:
the edges hand over a tensor's name, datatype, shape and either its JSON data, its raw bytes
(the binary tensor data extension, gRPC's raw_input_contents) or its typed values, and get
back numpy arrays decoded against the served signature.

The mapping (docs/oip.md lists it with the reasons):
- datatypes: DATATYPES below, one V2 name per TensorFlow DataType; nothing is coerced: a
  tensor whose datatype is not the signature input's is refused, as Triton refuses it.
- a model is one TF model's signature: `serving_default`, or the one the request parameter
  `signature_name` names (the key TF Serving's own JSON uses); metadata describes serving_default.
- the V2 version string: empty is the latest AVAILABLE version; decimal digits are the TF
  Serving version; anything else is a version label (an extension: V2 has no labels).
- metadata shapes: -1 for an unknown dim; an unknown rank is shape [] (V2 cannot say it).
"""
from __future__ import annotations

import math
import struct
from typing import Any, Mapping, Optional, Sequence

import ml_dtypes
import numpy as np

from pyserving import dtypes
from pyserving.errors import invalid_argument
from pyserving.types import ModelSpec, TensorSpec

# V2 datatype -> TensorFlow DataType enum. BF16 is DT_BFLOAT16 (numpy: ml_dtypes.bfloat16).
DATATYPES = {
    "BOOL": dtypes.DT_BOOL,
    "UINT8": dtypes.DT_UINT8, "UINT16": dtypes.DT_UINT16, "UINT32": dtypes.DT_UINT32, "UINT64": dtypes.DT_UINT64,
    "INT8": dtypes.DT_INT8, "INT16": dtypes.DT_INT16, "INT32": dtypes.DT_INT32, "INT64": dtypes.DT_INT64,
    "FP16": dtypes.DT_HALF, "FP32": dtypes.DT_FLOAT, "FP64": dtypes.DT_DOUBLE,
    "BYTES": dtypes.DT_STRING,
    "BF16": dtypes.DT_BFLOAT16,
}
V2_NAMES = {dt: name for name, dt in DATATYPES.items()}
# numpy dtype (little-endian, as the binary extension and raw contents carry it) of each fixed-size datatype.
NUMPY = {name: np.dtype(dtypes.NUMPY[dt]).newbyteorder("<") for name, dt in DATATYPES.items() if name != "BYTES"}
NUMPY["BF16"] = np.dtype(ml_dtypes.bfloat16)
# Which JSON values a datatype takes: the numpy kinds np.asarray gives them.
_JSON_KINDS = {"BOOL": "b", "BYTES": "U"}
_INT_KINDS, _FLOAT_KINDS = "iu", "iuf"
INT64_MAX = 2**63 - 1
SIGNATURE_PARAMETER = "signature_name"
SERVER_NAME = "pyserving"
EXTENSIONS = ("binary_tensor_data",)  # Triton's and KServe's name for the binary tensor data extension


def server_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pyserving")
    except metadata.PackageNotFoundError:
        return "unknown"


def datatype_name(tf_dtype: int) -> str:
    """A TF DataType -> its V2 name; a type V2 has no name for is TF's own name, upper-cased
    (e.g. RESOURCE): metadata still says what the model takes."""
    return V2_NAMES.get(tf_dtype) or dtypes.short_name(tf_dtype).upper()


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == ml_dtypes.bfloat16:
        return "BF16"
    return V2_NAMES[dtypes.data_type(array.dtype)]


# ---- models and versions ----------------------------------------------------------------------
def model_spec(name: str, version: str, parameters: Optional[Mapping[str, Any]] = None) -> ModelSpec:
    """The model a V2 request names: digits are a version, other text a version label, nothing
    the latest; the request parameter `signature_name` picks the signature."""
    if not name:
        raise invalid_argument("Missing model name in request.")
    signature = ""
    if parameters and SIGNATURE_PARAMETER in parameters:
        signature = parameters[SIGNATURE_PARAMETER]
        if not isinstance(signature, str):
            raise invalid_argument(f"Parameter '{SIGNATURE_PARAMETER}' must be a string")
    if not version:
        return ModelSpec(name, signature_name=signature)
    if version.isascii() and version.isdigit():
        if len(version.lstrip("0")) > 19 or int(version) > INT64_MAX:
            raise invalid_argument(f"Model version {version} is out of range (int64)")
        return ModelSpec(name, version=int(version), signature_name=signature)
    return ModelSpec(name, label=version, signature_name=signature)


def metadata_shape(spec: TensorSpec) -> list[int]:
    return [] if spec.shape is None else [-1 if d is None or d < 0 else int(d) for d in spec.shape]


def tensor_metadata(tensors: Mapping[str, TensorSpec]) -> list[dict]:
    return [{"name": key, "datatype": datatype_name(spec.dtype), "shape": metadata_shape(spec)}
            for key, spec in tensors.items()]


# ---- inputs -------------------------------------------------------------------------------------
def check_input(name: str, datatype: str, shape: Sequence[int], signature_inputs: Mapping[str, TensorSpec]) -> int:
    """Check a V2 input against the signature before its data is read; its element count."""
    if not isinstance(name, str) or not name:
        raise invalid_argument("An input has no name")
    spec = signature_inputs.get(name)
    if spec is None:
        raise invalid_argument(f"Unexpected input '{name}': the model's inputs are {sorted(signature_inputs)}")
    if datatype not in DATATYPES:
        raise invalid_argument(f"Input '{name}': unknown datatype {datatype!r} (one of {', '.join(DATATYPES)})")
    expected = datatype_name(spec.dtype)
    if datatype != expected:
        raise invalid_argument(f"Input '{name}': datatype {datatype} does not match the model's {expected}")
    if not isinstance(shape, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shape):
        raise invalid_argument(f"Input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    count = 1
    for d in shape:
        count *= d
        if count > INT64_MAX:
            raise invalid_argument(f"Input '{name}': shape {list(shape)} holds more than 2^63 elements")
    return count


def _sized(name: str, flat: np.ndarray, shape: Sequence[int], count: int) -> np.ndarray:
    if flat.size != count:
        raise invalid_argument(f"Input '{name}': shape {list(shape)} holds {count} elements but {flat.size} were given")
    return flat.reshape(shape)


def from_json(name: str, datatype: str, shape: Sequence[int], count: int, data: Any) -> np.ndarray:
    """JSON `data` (nested or flat, row-major) -> an array of `datatype` and `shape`."""
    if not isinstance(data, list):
        data = [data]
    try:
        raw = np.asarray(data)
    except ValueError:
        raise invalid_argument(f"Input '{name}': data is not a rectangular array") from None
    if raw.size == 0:
        raw = raw.astype(NUMPY.get(datatype, np.dtype(object)))
    elif datatype == "BYTES":
        if raw.dtype.kind != "U":
            raise invalid_argument(f"Input '{name}': BYTES data must be strings")
        raw = np.array([s.encode("utf-8") for s in raw.ravel()], dtype=object)
    else:
        kinds = _JSON_KINDS.get(datatype) or (_FLOAT_KINDS if datatype[:2] in ("FP", "BF") else _INT_KINDS)
        if kinds is _INT_KINDS and raw.dtype.kind in "fO":
            raw = _exact_ints(name, datatype, data, raw)  # numpy made floats (or objects) of large ints
        if raw.dtype.kind not in kinds:
            what = {"b": "booleans", "U": "strings"}.get(raw.dtype.kind, "numbers" if raw.dtype.kind in "iuf"
                                                          else "values of mixed or unsupported types")
            raise invalid_argument(f"Input '{name}': {datatype} data cannot hold {what}")
        target = NUMPY[datatype]
        if raw.dtype.kind in _INT_KINDS and target.kind in _INT_KINDS:
            info = np.iinfo(target)
            if raw.min() < info.min or raw.max() > info.max:
                raise invalid_argument(f"Input '{name}': a value is out of the range of {datatype}")
        raw = raw.astype(target)
    return _sized(name, raw.ravel(), shape, count)


def _exact_ints(name: str, datatype: str, data: list, raw: np.ndarray) -> np.ndarray:
    """Integers numpy did not keep as integers (one past int64 among others turns the lot into
    float64): taken one by one as Python ints, range-checked, so none is rounded."""
    flat = np.asarray(data, dtype=object).ravel() if raw.dtype.kind == "f" else raw.ravel()
    if not all(type(v) is int for v in flat):
        return raw  # not all integers: refused below by kind
    info = np.iinfo(NUMPY[datatype])
    if flat.size and (min(flat) < info.min or max(flat) > info.max):
        raise invalid_argument(f"Input '{name}': a value is out of the range of {datatype}")
    return np.array(flat.tolist(), dtype=NUMPY[datatype]).reshape(raw.shape)


def from_raw(name: str, datatype: str, shape: Sequence[int], count: int, raw: bytes) -> np.ndarray:
    """Little-endian, row-major bytes (BYTES: each element a 4-byte length, then its bytes)."""
    if datatype == "BYTES":
        return _sized(name, _split_bytes(name, raw), shape, count)
    dtype = NUMPY[datatype]
    if len(raw) != count * dtype.itemsize:
        raise invalid_argument(f"Input '{name}': {len(raw)} bytes of data, but shape {list(shape)} of {datatype} "
                               f"needs {count * dtype.itemsize}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if datatype == "BOOL":
        if array.size and raw.strip(b"\x00\x01"):
            raise invalid_argument(f"Input '{name}': BOOL bytes must be 0 or 1")
        return array.copy()
    return array.astype(dtype.newbyteorder("="), copy=True)


def _split_bytes(name: str, raw: bytes) -> np.ndarray:
    items, offset, view = [], 0, memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise invalid_argument(f"Input '{name}': BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise invalid_argument(f"Input '{name}': a BYTES element of {length} bytes runs past the data's end")
        items.append(bytes(view[offset:offset + length]))
        offset += length
    flat = np.empty(len(items), dtype=object)
    flat[:] = items
    return flat


# gRPC's typed contents: which InferTensorContents field carries a datatype (FP16 and BF16 have none).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def from_contents(name: str, datatype: str, shape: Sequence[int], count: int, values: Sequence) -> np.ndarray:
    """gRPC typed contents (the field CONTENTS_FIELD names) -> an array; narrow ints are range-checked."""
    if datatype == "BYTES":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
        return _sized(name, flat, shape, count)
    target = NUMPY[datatype]
    wide = np.asarray(values, dtype=np.float64 if target.kind == "f" else None)
    if wide.size and target.kind in _INT_KINDS:
        info = np.iinfo(target)
        if wide.min() < info.min or wide.max() > info.max:
            raise invalid_argument(f"Input '{name}': a value is out of the range of {datatype}")
    return _sized(name, wide.astype(target.newbyteorder("=")).ravel(), shape, count)


# ---- outputs ------------------------------------------------------------------------------------
def to_raw(array: np.ndarray) -> bytes:
    """An output as the binary extension and raw_output_contents carry it."""
    if array.dtype.kind in ("O", "S", "U"):
        parts = []
        for item in array.ravel():
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def to_json_data(array: np.ndarray) -> list:
    """An output's elements, flattened, as JSON values; BYTES as UTF-8 text (invalid sequences
    replaced: binary outputs are for bytes that are not text)."""
    flat = array.ravel()
    if flat.dtype.kind in ("O", "S"):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    if flat.dtype == ml_dtypes.bfloat16 or flat.dtype == np.float16:
        flat = flat.astype(np.float32)
    return flat.tolist()


def output_shape(array: np.ndarray) -> list[int]:
    return [int(d) for d in array.shape]


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)
