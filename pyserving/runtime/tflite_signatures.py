"""SignatureDefs kept inside a TF Lite model, in its `signature_defs_metadata` entry: the ones TF
Serving's TfLiteSession serves (tensorflow/lite/tools/signature/signature_def_util.cc).

The entry is a model metadata buffer holding a FlexBuffer map from signature key to a serialized
tensorflow.SignatureDef. TF Lite's own signature runners (what the converter writes for a
SavedModel's signatures) are another thing, which TF Serving does not read.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from flatbuffers import flexbuffers
from google.protobuf.message import DecodeError

from pyserving.errors import Code, ServingError

METADATA_NAME = "signature_defs_metadata"


def _schema():
    from tensorflow.lite.python import schema_py_generated  # TensorFlow's generated TF Lite schema

    return schema_py_generated


def read(model: bytes) -> dict:
    """key -> tensorflow.SignatureDef, as tflite::GetSignatureDefMap reads them; {} without the entry."""
    from tensorflow.core.protobuf import meta_graph_pb2

    fb = _schema().Model.GetRootAs(model, 0)
    for i in range(fb.MetadataLength()):
        entry = fb.Metadata(i)
        if entry.Name() != METADATA_NAME.encode():
            continue
        data = fb.Buffers(entry.Buffer()).DataAsNumpy()
        if not isinstance(data, np.ndarray) or data.size == 0:
            return {}
        try:
            root = flexbuffers.GetRoot(bytearray(data.tobytes()))
            if not root.IsMap:  # flexbuffers' AsMap gives an empty map for anything else
                return {}
            pairs = [(k.AsKey, v.AsStringBytes if v.IsString else b"") for k, v in zip(root.AsMap.Keys,
                                                                                   root.AsMap.Values)]
        except (IndexError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ServingError(Code.INVALID_ARGUMENT, f"Invalid SignatureDefs found in TfLite model: {exc}") from None
        out = {}
        for key, value in pairs:
            sig = meta_graph_pb2.SignatureDef()
            try:
                # ReadSignatureDefMap copies each value through c_str(): it ends at the first NUL.
                sig.ParseFromString(bytes(value).split(b"\0", 1)[0])
            except DecodeError:
                raise ServingError(Code.INVALID_ARGUMENT, "Invalid SignatureDefs found in TfLite model: "
                                   "Cannot parse signature def found in flatbuffer.") from None
            out[key] = sig
        return out
    return {}


def write(model: bytes, signature_defs: Mapping[str, object]) -> bytes:
    """The model with `signature_defs` (key -> tensorflow.SignatureDef) as its signature_defs_metadata,
    replacing any already there: tflite::SetSignatureDefMap, which the TF Lite pip package lacks."""
    from tensorflow.lite.tools import flatbuffer_utils

    if not signature_defs:
        raise ValueError("signature_def_map should not be empty")
    builder = flexbuffers.Builder()
    with builder.Map():
        for key in sorted(signature_defs):
            builder.Key(key)
            # A FlexBuffer *string* of the proto's bytes, as the C++ builder writes it (Builder.String
            # would UTF-8 encode a str; a blob would read back empty).
            builder._WriteBlob(signature_defs[key].SerializeToString(), append_zero=True,
                               type_=flexbuffers.Type.STRING)
    payload = np.frombuffer(bytes(builder.Finish()), dtype=np.uint8)

    schema = _schema()
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    obj.metadata = obj.metadata or []
    entry = next((m for m in obj.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())), None)
    if entry is None:
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(obj.buffers)
        obj.buffers.append(schema.BufferT())
        obj.metadata.append(entry)
    obj.buffers[entry.buffer].data = payload
    return flatbuffer_utils.convert_object_to_bytearray(obj)
