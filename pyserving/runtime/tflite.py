"""A version folder's model.tflite served through LiteRT's interpreter (--prefer_tflite_model),
with the signatures TF Serving's TfLiteSession gives it (tflite_session.cc, TfLiteSession::Create):

* a model with SignatureDefs in its `signature_defs_metadata` serves exactly those, under their
  keys, input and output names and method names; each TensorInfo name that is no input or output
  tensor of the model is tried without its `:N` suffix (older converters dropped it), and one
  still unknown fails the load;
* any other model gets one `serving_default` predict signature whose keys are its input and
  output tensor names without `:N`, each with the tensor's name, type and shape.

TF Lite's own signature runners are not read, as in TF Serving. Inputs are resized to each
request's shape; interpreters are not thread-safe, so a small pool of them serves concurrent
requests.

The interpreter is LiteRT's (`ai-edge-litert`), the TF Lite runtime's successor: TensorFlow 2.21's
`tf.lite.Interpreter` warns that it is scheduled for deletion. `bench/tflite_runtimes.py` runs both
on the same models: identical outputs (neither pip build links the Flex delegate for Select TF ops).
"""
from __future__ import annotations

import logging
import os
import queue
from typing import Mapping, Optional, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from pyserving import dtypes
from pyserving.errors import Code, ServingError
from pyserving.runtime import tflite_signatures
from pyserving.runtime.savedmodel import signature_info
from pyserving.types import DEFAULT_SIGNATURE, PREDICT_METHOD, SignatureInfo

logger = logging.getLogger(__name__)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: E402

MODEL_FILE = "model.tflite"

# TfLiteTypeToTfType: the TF Lite types TF Serving serves, as TF DataTypes. Any other type fails the
# load with "Unknown TfLite type: N", N being its TfLiteType number (tensorflow/lite/core/c/c_api_types.h).
_DT_COMPLEX64 = 8
_TF_TYPES = {
    np.dtype(np.float32): dtypes.DT_FLOAT, np.dtype(np.int32): dtypes.DT_INT32, np.dtype(np.uint8): dtypes.DT_UINT8,
    np.dtype(np.int64): dtypes.DT_INT64, np.dtype(np.bool_): dtypes.DT_BOOL, np.dtype(np.int16): dtypes.DT_INT16,
    np.dtype(np.complex64): _DT_COMPLEX64, np.dtype(np.int8): dtypes.DT_INT8,
}
_TFLITE_TYPE_NUMBERS = {
    np.dtype(np.float16): 10, np.dtype(np.float64): 11, np.dtype(np.complex128): 12, np.dtype(np.uint64): 13,
    np.dtype(np.uint32): 16, np.dtype(np.uint16): 17,
}


def _tf_type(dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "U", "O"):
        return dtypes.DT_STRING
    if dtype not in _TF_TYPES:
        raise ServingError(Code.INTERNAL, f"Unknown TfLite type: {_TFLITE_TYPE_NUMBERS.get(dtype, dtype.name)}")
    return _TF_TYPES[dtype]


def _tensor_infos(details, what: str) -> dict:
    """GetTensorInfoMap: TF Lite tensor name -> (TensorInfo, tensor index), in name order."""
    from tensorflow.core.protobuf import meta_graph_pb2

    out = {}
    for d in details:
        if d["name"] in out:
            raise ServingError(Code.ALREADY_EXISTS, f"{what} tensor name: {d['name']} has multiple indices")
        info = meta_graph_pb2.TensorInfo(name=d["name"], dtype=_tf_type(d["dtype"]))
        for size in d["shape"]:
            info.tensor_shape.dim.add().size = int(size)
        out[d["name"]] = (info, d["index"])
    return dict(sorted(out.items()))


def _legacy_name(name: str) -> str:
    return name.split(":", 1)[0]  # TfToTfLiteLegacyTensorName


def _fixed_name(tensors: Mapping, name: str, context: str) -> str:
    """FixTfLiteTensorName: the name itself if the model has it, else the name without `:N`."""
    if name in tensors:
        return name
    if _legacy_name(name) in tensors:
        return _legacy_name(name)
    raise ServingError(Code.INTERNAL, f"Unknown tensor '{name}'.\n\t{context}")


def signature_defs(model: bytes, inputs: Mapping, outputs: Mapping) -> dict:
    """TfLiteSession::Create's signature map: key -> tensorflow.SignatureDef."""
    from tensorflow.core.protobuf import meta_graph_pb2

    found = tflite_signatures.read(model)
    if found:
        for sig in found.values():
            for infos, tensors, what in ((sig.inputs, inputs, "input"), (sig.outputs, outputs, "output")):
                for key, info in infos.items():
                    info.name = _fixed_name(tensors, info.name, f"Signature {what} {key} references an unknown tensor")
        return found
    sig = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for target, tensors in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for name, (info, _index) in tensors.items():
            target[_legacy_name(name)].CopyFrom(info)  # a later name with the same stem wins, as in the map
    return {DEFAULT_SIGNATURE: sig}


class _Interpreter:
    """One interpreter and the shapes its inputs are allocated for."""

    def __init__(self, model: bytes):
        self.interpreter = Interpreter(model_content=model)
        self.interpreter.allocate_tensors()
        self.shapes = {d["index"]: tuple(d["shape"]) for d in self.interpreter.get_input_details()}


class TfLiteServable:
    platform = "tensorflow_tflite"  # the Open Inference Protocol's name for the format

    def __init__(self, path: str, num_interpreters: int = 1):
        model_path = os.path.join(path, MODEL_FILE)
        if not os.path.isfile(model_path):
            raise ServingError(Code.NOT_FOUND, f"Could not find {MODEL_FILE} at {path}")
        with open(model_path, "rb") as f:
            model = f.read()
        self._pool: queue.Queue = queue.Queue()
        try:
            for _ in range(max(1, num_interpreters)):
                self._pool.put(_Interpreter(model))
        except (ValueError, RuntimeError) as exc:
            raise ServingError(Code.INVALID_ARGUMENT, f"Invalid TF Lite model {model_path}: {exc}") from None
        first = self._pool.queue[0].interpreter
        inputs = _tensor_infos(first.get_input_details(), "Input")
        outputs = _tensor_infos(first.get_output_details(), "Output")
        self._input_index = {name: index for name, (_info, index) in inputs.items()}
        self._output_index = {name: index for name, (_info, index) in outputs.items()}
        self._signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in signature_defs(model, inputs, outputs).items():
            self._signature_map.signature_def[key].CopyFrom(sig)
        self.signatures: Mapping[str, SignatureInfo] = {
            k: signature_info(v) for k, v in self._signature_map.signature_def.items()
        }
        self.path = path

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_keys: Sequence[str],
            timeout_s: Optional[float] = None) -> dict[str, np.ndarray]:
        sig = self.signatures[signature_name]
        feeds = {self._input_index[sig.inputs[k].tensor_name]: v for k, v in inputs.items()}
        slot = self._pool.get()
        interp = slot.interpreter
        try:
            resized = False
            for index, value in feeds.items():
                if slot.shapes.get(index) != value.shape:
                    interp.resize_tensor_input(index, value.shape)
                    slot.shapes[index] = value.shape
                    resized = True
            if resized:
                interp.allocate_tensors()
            for index, value in feeds.items():
                interp.set_tensor(index, value)
        except (ValueError, RuntimeError) as exc:
            slot.shapes.clear()  # a failed resize or allocation: reallocate on the next run
            self._pool.put(slot)
            logger.warning("TF Lite model %s: resize or allocation failed: %s", self.path, exc)
            # tflite_session.cc: INTERNAL, as every failure of the interpreter there
            raise ServingError(Code.INTERNAL, "Failed to allocate tensors") from None
        try:
            interp.invoke()
            return {k: interp.get_tensor(self._output_index[sig.outputs[k].tensor_name]) for k in output_keys}
        except (ValueError, RuntimeError) as exc:
            logger.warning("TF Lite model %s: invoke failed: %s", self.path, exc)
            raise ServingError(Code.INTERNAL, "Failed to invoke TfLite interpreter") from None
        finally:
            self._pool.put(slot)

    def signature_def_map(self) -> bytes:
        return self._signature_map.SerializeToString()

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait()


def load(path: str, num_interpreters: int = 1) -> TfLiteServable:
    return TfLiteServable(path, num_interpreters)
