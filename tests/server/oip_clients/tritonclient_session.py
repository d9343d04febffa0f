"""NVIDIA's tritonclient (HTTP with JSON tensors, HTTP with binary tensors, gRPC) against a live
server: health, metadata and inference for each case, printed as one JSON document.

Run by tests/server/test_oip_clients.py in a child process with the venv built from
requirements-oip-clients.txt: tritonclient registers the `inference.*` proto names pyserving's
stubs register too, and needs protobuf < 7.

    python tritonclient_session.py HOST:REST_PORT HOST:GRPC_PORT CASES.json

CASES.json: [{"model", "version", "parameters", "inputs": [{"name", "datatype", "shape", "data"}],
"outputs": [names], "errors": [...]}]. Every tensor's data comes back as a flat list (BYTES as
UTF-8 text, BF16/FP16 as floats), with its datatype and shape.
"""
from __future__ import annotations

import json
import sys

import ml_dtypes
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
         "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
         "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_, "BF16": ml_dtypes.bfloat16}


def array(tensor: dict) -> np.ndarray:
    if tensor["datatype"] == "BYTES":
        flat = np.array([s.encode("utf-8") for s in tensor["data"]], dtype=np.object_)
        return flat.reshape(tensor["shape"])
    return np.array(tensor["data"], dtype=NUMPY[tensor["datatype"]]).reshape(tensor["shape"])


def plain(value: np.ndarray) -> list:
    flat = value.ravel()
    if flat.dtype == np.object_:
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    if flat.dtype in (np.float16, ml_dtypes.bfloat16):
        flat = flat.astype(np.float32)
    return flat.tolist()


def infer(module, client, case: dict, binary: bool):
    inputs = []
    for tensor in case["inputs"]:
        item = module.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        if module is httpclient:
            item.set_data_from_numpy(array(tensor), binary_data=binary)
        else:
            item.set_data_from_numpy(array(tensor))
        inputs.append(item)
    outputs = None
    if case.get("outputs"):
        outputs = [module.InferRequestedOutput(name, binary_data=binary) if module is httpclient
                   else module.InferRequestedOutput(name) for name in case["outputs"]]
    result = client.infer(case["model"], inputs, model_version=case.get("version", ""), outputs=outputs,
                          request_id=case.get("id", ""), parameters=case.get("parameters"))
    response = result.get_response()
    if not isinstance(response, dict):  # gRPC: the ModelInferResponse message
        from google.protobuf import json_format
        response = json_format.MessageToDict(response, preserving_proto_field_name=True)
    names = [o["name"] for o in response["outputs"]]
    return {"id": response.get("id", ""), "model_version": response.get("model_version"),
            "outputs": {name: {"datatype": next(o["datatype"] for o in response["outputs"] if o["name"] == name),
                               "shape": list(result.as_numpy(name).shape), "data": plain(result.as_numpy(name))}
                        for name in names}}


def session(module, url: str, cases: list, binary: bool) -> dict:
    client = module.InferenceServerClient(url=url)
    out = {"live": client.is_server_live(), "ready": client.is_server_ready(),
           "server": client.get_server_metadata() if module is httpclient
           else _json(client.get_server_metadata(as_json=True)), "models": []}
    for case in cases:
        metadata = (client.get_model_metadata(case["model"], case.get("version", "")) if module is httpclient
                    else _json(client.get_model_metadata(case["model"], case.get("version", ""), as_json=True)))
        entry = {"model": case["model"], "model_ready": client.is_model_ready(case["model"], case.get("version", "")),
                 "metadata": metadata, "infer": infer(module, client, case, binary), "errors": []}
        for bad in case.get("errors", []):
            try:
                infer(module, client, bad, binary)
                entry["errors"].append({"case": bad.get("what"), "status": "OK"})
            except InferenceServerException as exc:
                entry["errors"].append({"case": bad.get("what"), "status": exc.status(), "message": exc.message()})
        out["models"].append(entry)
    client.close()
    return out


def _json(doc: dict) -> dict:
    """gRPC's as_json dicts carry int64 fields as strings (proto3 JSON): shapes back to numbers."""
    for key in ("inputs", "outputs"):
        for tensor in doc.get(key, []):
            tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
    return doc


def main() -> None:
    rest, grpc_target, cases_file = sys.argv[1:4]
    with open(cases_file) as f:
        cases = json.load(f)
    print(json.dumps({
        "http_json": session(httpclient, rest, cases, binary=False),
        "http_binary": session(httpclient, rest, cases, binary=True),
        "grpc": session(grpcclient, grpc_target, cases, binary=True),
    }, indent=1))


if __name__ == "__main__":
    main()
