"""TF Serving's REST JSON <-> numpy tensors (tensorflow_serving/util/json_tensor.cc semantics).

Requests: row format (`instances`) and columnar format (`inputs`), `{"b64": ...}` for binary
strings. Responses: `predictions` / `outputs`; floats printed the way TF Serving prints them
(shortest round-tripping form, `.0` on whole numbers, bare NaN / Infinity tokens); DT_STRING
outputs whose name ends in `_bytes` as `{"b64": ...}`.
"""
from __future__ import annotations

import array
import base64
import binascii
import json
import math
import re
from typing import Any, Mapping

import numpy as np
import orjson

from pyserving import dtypes
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.types import SignatureInfo

ROW, COLUMNAR = "row", "columnar"


def _numpy_max_dims() -> int:
    try:
        return np.empty((1,) * 64).ndim  # numpy 2
    except ValueError:
        return 32  # numpy 1


MAX_DIMS = _numpy_max_dims()  # the most dimensions a request's tensor can have here (TensorFlow: 254)
_INT_RANGES = {
    dtypes.DT_INT8: (-(2**31), 2**31 - 1), dtypes.DT_INT16: (-(2**31), 2**31 - 1),
    dtypes.DT_UINT8: (-(2**31), 2**31 - 1), dtypes.DT_INT32: (-(2**31), 2**31 - 1),
    dtypes.DT_INT64: (-(2**63), 2**63 - 1), dtypes.DT_UINT32: (0, 2**32 - 1),
    dtypes.DT_UINT64: (0, 2**64 - 1),
}
# Narrower types that json_tensor.cc accepts as any int32 (its tensor carries them in int_val).
_CARRIED_AS_INT32 = (dtypes.DT_INT8, dtypes.DT_INT16, dtypes.DT_UINT8)


# ---- parsing ------------------------------------------------------------------------------
def parse(body: bytes) -> dict:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    if body.startswith(b"\xef\xbb\xbf"):
        # rapidjson's Parse() reads a UTF-8 byte-order mark as the start of a value (only its
        # AutoUTF streams skip one), so TF Serving refuses such a body; json.loads would strip it.
        raise invalid_argument("JSON Parse error: Invalid value. at offset: 0")
    try:  # orjson is ~10x faster; what it refuses (NaN and Infinity tokens, which TF Serving
        # accepts, and malformed text) goes to the json module, which also words the errors.
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_slow(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {dump_value(doc)} Is not object")
    return doc


class _NumberTooBig(Exception):
    pass


def _decimal(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # rapidjson refuses what a double cannot hold; Python would make it inf
        raise _NumberTooBig(text)
    return value


def _integer(text: str):
    """rapidjson's integers: int64 or uint64; past that a number is a double."""
    value = int(text)
    return value if -(2**63) <= value <= 2**64 - 1 else _decimal(text)


LONE_SURROGATE = "JSON Parse error: The surrogate pair in string is invalid."
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse_slow(body: bytes):
    try:
        doc = json.loads(body, parse_int=_integer, parse_float=_decimal)
        surrogate = _SURROGATE_ESCAPE.search(body)
        if surrogate:  # rapidjson refuses a \uD800-\uDFFF escape that is not half of a pair; json keeps it
            try:
                json.dumps(doc, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise invalid_argument(f"{LONE_SURROGATE} at offset: {surrogate.start()}") from None
            except RecursionError:
                pass  # too deep to check here; a string is checked again where it is encoded
        return doc
    except _NumberTooBig as exc:
        offset = body.find(str(exc).encode())
        raise invalid_argument(
            f"JSON Parse error: Number too big to be stored in double. at offset: {offset}") from None
    except UnicodeDecodeError as exc:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise invalid_argument(f"JSON Parse error: {_rapidjson_message(exc, body)} at offset: {exc.pos}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: nesting too deep") from None


# The json module's parse errors in rapidjson's words (rapidjson/error/en.h GetParseError_En), which
# TF Serving reports; a missing comma is worded by the innermost open bracket, see _missing_comma.
_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Unexpected UTF-8 BOM (decode using utf-8-sig)": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Extra data": "The document root must not be followed by other values.",
}


def _missing_comma(body: bytes, pos: int) -> str:
    """rapidjson's message for a missing ',' at `pos`: inside an object or inside an array."""
    stack, in_string, escaped = [], False, False
    for byte in body[:pos]:
        if in_string:
            escaped, in_string = (not escaped and byte == 0x5C), in_string and (escaped or byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            stack.append(byte)
        elif byte in (0x5D, 0x7D) and stack:
            stack.pop()
    if stack and stack[-1] == 0x7B:
        return "Missing a comma or '}' after an object member."
    return "Missing a comma or ']' after an array element."


def _rapidjson_message(exc: json.JSONDecodeError, body: bytes) -> str:
    if exc.msg == "Expecting ',' delimiter":
        return _missing_comma(body, exc.pos)
    return _RAPIDJSON_MESSAGES.get(exc.msg, exc.msg)


def signature_name(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {dump_value(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def dump_value(value: Any) -> str:
    """A JSON value as text, for error messages (truncated: bodies can be huge)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:  # nested deeper than the encoder goes: its opening says enough
        parts: list[str] = []
        while sum(map(len, parts)) <= 256 and type(value) in (list, dict) and value:
            if type(value) is list:
                parts.append("[")
                value = value[0]
            else:
                key, value = next(iter(value.items()))
                parts.append("{" + json.dumps(key, ensure_ascii=False) + ": ")
        text = "".join(parts)
    return text if len(text) <= 256 else text[:256] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _type_error(value: Any, dtype: int):
    return invalid_argument(
        f"JSON Value: {dump_value(value)} Type: {_type_name(value)} is not of expected type: {dtypes.short_name(dtype)}"
    )


def utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate the parser let through
        raise invalid_argument(LONE_SURROGATE) from None


def is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def decode_b64(value: Any) -> bytes:
    if not is_b64(value):
        raise invalid_argument(f"JSON Value: {dump_value(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


# ---- JSON value -> numpy ------------------------------------------------------------------
def _dense_shape(value: Any) -> list[int]:
    shape = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int]) -> list:
    items = [value]
    rank = len(shape)
    for level, size in enumerate(shape):
        nxt = []
        for item in items:
            if type(item) is not list:
                raise invalid_argument(
                    f"JSON Value: {dump_value(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {rank}"
                )
            if len(item) != size:
                raise invalid_argument(
                    f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: {size}"
                )
            nxt.extend(item)
        items = nxt
    for item in items:
        if type(item) is list:
            raise invalid_argument(f"Encountered list at unexpected level: {rank} expected < {rank}")
    return items


def _leaves_to_array(leaves: list, dtype: int) -> np.ndarray:
    if dtype == dtypes.DT_STRING:
        out = np.empty(len(leaves), dtype=object)
        for i, v in enumerate(leaves):
            if type(v) is str:
                out[i] = utf8(v)
            elif type(v) is dict:
                out[i] = decode_b64(v)
            else:
                raise _type_error(v, dtype)
        return out
    if dtype in (dtypes.DT_FLOAT, dtypes.DT_DOUBLE, dtypes.DT_HALF):
        with np.errstate(over="ignore"):  # past the type's range: inf, as a C++ cast gives
            return _floats_to_array(leaves, dtype).astype(dtypes.numpy_dtype(dtype))
    if dtype == dtypes.DT_BOOL:
        for v in leaves:
            if type(v) is not bool:
                raise _type_error(v, dtype)
        return np.array(leaves, dtype=np.bool_)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        for v in leaves:
            if type(v) is not int or not low <= v <= high:
                raise _type_error(v, dtype)
        if dtype in _CARRIED_AS_INT32:  # TensorFlow static_casts the int32 values: they wrap
            return np.array(leaves, dtype=np.int32).astype(dtypes.numpy_dtype(dtype))
        return np.array(leaves, dtype=dtypes.numpy_dtype(dtype))
    if not leaves and dtype in dtypes.NUMPY:  # no value to convert: TF Serving makes the empty tensor
        return np.empty(0, dtypes.numpy_dtype(dtype))
    # AddValueToTensor's default case: UNIMPLEMENTED, naming the first value it cannot convert.
    raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: {dump_value(leaves[0] if leaves else [])} "
                                           f"to type: {dtypes.short_name(dtype)}")


def _floats_to_array(leaves: list, dtype: int) -> np.ndarray:
    """float64 values of JSON numbers, any number taken as TF Serving 2.20 takes it
    (json_tensor.cc AddValueToTensor: `add_float_val(val.GetFloat())`, `add_double_val(val.GetDouble())`):
    the nearest value of the tensor's type, inf past float's range, no precision check (removed in
    March 2021, tensorflow/serving 57dac6cd). The caller's astype() does the rounding."""
    if not set(map(type, leaves)) <= {float, int}:  # a bool, string, null, object...: the first one is named
        raise _type_error(next(v for v in leaves if type(v) is not float and type(v) is not int), dtype)
    return np.array(leaves, dtype=np.float64)


def value_to_array(value: Any, dtype: int) -> np.ndarray:
    shape = _dense_shape(value)
    if len(shape) > MAX_DIMS:  # numpy's limit (TensorFlow's is 254): refused, not a crash
        raise invalid_argument(f"Tensor of {len(shape)} dimensions: at most {MAX_DIMS} are supported")
    leaves = _flatten(value, shape)
    if leaves and type(leaves[0]) is dict and dtype != dtypes.DT_STRING:
        raise _type_error(leaves[0], dtype)
    return _leaves_to_array(leaves, dtype).reshape(shape)


def _status_text(exc) -> str:
    return f"INVALID_ARGUMENT: {exc.message}"


def _instances(items: list, sig: SignatureInfo) -> dict[str, np.ndarray]:
    inputs = sig.inputs
    is_object = lambda v: type(v) is dict and not is_b64(v)  # noqa: E731
    if not is_object(items[0]) and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if is_object(items[0]):
        names = sorted(inputs)
        columns: dict[str, list] = {n: [] for n in names}
        for i, elem in enumerate(items):
            if not is_object(elem):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            for key in elem:
                if key not in inputs:
                    raise invalid_argument(
                        f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                        f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                    )
            if set(elem) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {dump_value(elem)} "
                    f"must only have keys: {','.join(names)}"
                )
            for n in names:
                columns[n].append(elem[n])
        return {n: _stack(columns[n], inputs[n].dtype, key=n) for n in names}
    for i, elem in enumerate(items):
        if is_object(elem):
            raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
    name = next(iter(inputs))
    return {name: _stack(items, inputs[name].dtype)}


def _stack(rows: list, dtype: int, key: str | None = None) -> np.ndarray:
    """Rows of one input, stacked on a new dim 0; every row must have the first row's shape."""
    try:
        return value_to_array(rows, dtype)
    except ServingError as exc:
        stacked_error = exc  # find the offending row, to word the error as TF Serving does
    first_shape = None
    for i, row in enumerate(rows):
        where = f"element: {i} key: {key}" if key else f"element: {i}"
        try:
            arr = value_to_array(row, dtype)
        except ServingError as exc:
            raise invalid_argument(
                f"Failed to process {where} of 'instances' list. Error: {_status_text(exc)}"
            ) from None
        if first_shape is None:
            first_shape = arr.shape
        elif arr.shape != first_shape:
            fmt = lambda s: "[" + ",".join(map(str, s)) + "]"  # noqa: E731
            detail = (
                f"Expecting tensor size: {math.prod(first_shape)} but got: {arr.size}"
                if arr.size != math.prod(first_shape)
                else f"Expecting shape {fmt(first_shape)} but got: {fmt(arr.shape)}"
            )
            raise invalid_argument(f"Failed to process {where} of 'instances' list. Error: INVALID_ARGUMENT: {detail}")
    raise stacked_error  # every row is fine alone: the stack is not (one dimension too many)


def _columnar(value: Any, sig: SignatureInfo) -> dict[str, np.ndarray]:
    inputs = sig.inputs
    if type(value) is not dict or is_b64(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = next(iter(inputs))
        return {name: value_to_array(value, inputs[name].dtype)}
    out = {}
    for name in sorted(inputs):
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = value_to_array(value[name], inputs[name].dtype)
    return out


def decode_predict(doc: dict, sig: SignatureInfo) -> tuple[str, dict[str, np.ndarray]]:
    """The request's tensors, by the signature's input names and dtypes; returns (format, inputs)."""
    if not sig.inputs:
        raise invalid_argument("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {dump_value(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_instances:
        items = doc["instances"]
        if type(items) is not list:
            raise invalid_argument(f"JSON Value: {dump_value(doc)} Excepting 'instances' to be an list/array")
        if not items:
            raise invalid_argument(f"JSON Value: {dump_value(doc)} No values in 'instances' array")
        return ROW, _instances(items, sig)
    if has_inputs:
        return COLUMNAR, _columnar(doc["inputs"], sig)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# ---- numpy -> JSON text -------------------------------------------------------------------
def format_float(value: float, is_double: bool = False) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%g" % value
    exact = (float(text) == value) if is_double else (np.float32(float(text)) == np.float32(value))
    if not exact:
        text = ("%.17g" if is_double else "%.9g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar_writer(array: np.ndarray, as_bytes: bool):
    kind = array.dtype.kind
    if kind == "f":
        is_double = array.dtype == np.float64
        return lambda v: format_float(float(v), is_double)
    if kind == "b":
        return lambda v: "true" if v else "false"
    if kind in "iu":
        return lambda v: str(int(v))
    if kind in "OSU":
        if as_bytes:
            return lambda v: '{"b64": "' + base64.b64encode(_as_bytes(v)).decode("ascii") + '"}'
        return lambda v: json.dumps(_as_bytes(v).decode("utf-8", errors="replace"), ensure_ascii=False)
    raise invalid_argument(f"Failed to write JSON value for tensor type: {array.dtype}")


def _as_bytes(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


def _float_texts(flat: np.ndarray) -> list[str]:
    """format_float of every value of a 1-D float array, its exactness test done in C: "%g" is
    right for most values, only the others go through format_float one by one."""
    values = flat.tolist()
    texts = ["%g" % v for v in values]
    is_double = flat.dtype == np.float64
    try:  # array() rounds each parsed text to the tensor's own precision
        back = array.array("d" if is_double else "f", map(float, texts)).tolist()
    except OverflowError:
        back = [None] * len(values)
    precise = "%.17g" if is_double else "%.9g"
    for i, (text, parsed, value) in enumerate(zip(texts, back, values)):
        if text[-1] in "nf":  # nan, inf
            texts[i] = format_float(value, is_double)
            continue
        if parsed != value:
            text = texts[i] = precise % value
        if "." not in text and "e" not in text:
            texts[i] = text + ".0"
    return texts


def _nested(texts: list[str], shape: tuple) -> str:
    """Row-major texts as nested JSON arrays of `shape` (rank >= 1)."""
    if len(shape) == 1:
        return "[" + ", ".join(texts) + "]"
    step = len(texts) // shape[0] if shape[0] else 0
    return "[" + ", ".join(_nested(texts[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def _write(array, write) -> str:
    if not isinstance(array, np.ndarray):
        return write(array)
    if array.ndim == 0:
        return write(array[()])
    if array.dtype.kind == "f" and array.dtype.itemsize >= 4:
        return _nested(_float_texts(array.ravel()), array.shape)
    if array.ndim == 1:
        return "[" + ", ".join(write(v) for v in array.tolist()) + "]"
    return "[" + ", ".join(_write(sub, write) for sub in array) + "]"


def _checked(outputs: Mapping[str, np.ndarray]) -> dict:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    return {name: (arr, _scalar_writer(arr, arr.dtype.kind in "OSU" and name.endswith("_bytes")))
            for name, arr in outputs.items()}


def encode_predict(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    checked = _checked(outputs)
    if fmt == COLUMNAR:
        if len(checked) == 1:
            (arr, write), = checked.values()
            return '{"outputs": ' + _write(arr, write) + "}"
        parts = [json.dumps(n) + ": " + _write(arr, write) for n, (arr, write) in checked.items()]
        return '{"outputs": {' + ", ".join(parts) + "}}"
    batch = -1  # a batch of zero rows answers {"predictions": []} (TF Serving PR #1635)
    for name, (arr, _w) in checked.items():
        if arr.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and arr.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} expecting: {batch}")
        batch = arr.shape[0]
    if len(checked) == 1:
        (arr, write), = checked.values()
        return '{"predictions": ' + _write(arr, write) + "}"
    rows = []
    for i in range(batch):
        rows.append("{" + ", ".join(json.dumps(n) + ": " + _write(arr[i], w) for n, (arr, w) in checked.items()) + "}")
    return '{"predictions": [' + ", ".join(rows) + "]}"


def encode_classify(classifications) -> str:
    if not classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classes in classifications:
        items = []
        for label, score in classes:
            text = _as_bytes(label).decode("utf-8", errors="replace") if label is not None else ""
            items.append("[" + json.dumps(text, ensure_ascii=False) + ", " + format_float(score or 0.0) + "]")
        rows.append("[" + ", ".join(items) + "]")
    return '{"results": [' + ", ".join(rows) + "]}"


def encode_regress(values) -> str:
    if not values:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return '{"results": [' + ", ".join(format_float(v) for v in values) + "]}"
