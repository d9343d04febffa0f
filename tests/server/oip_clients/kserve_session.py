"""KServe's Python SDK clients (InferenceRESTClient with protocol v2, InferenceGRPCClient) against
a live server: live, ready, model ready and inference for each case, printed as one JSON document.
Neither client has a metadata call. The same case file as tritonclient_session.py.

Run by tests/server/test_oip_clients.py in a child process, in the venv built from
requirements-oip-clients.txt (kserve registers the same `inference.*` names as pyserving).

    python kserve_session.py HOST:REST_PORT HOST:GRPC_PORT CASES.json
"""
from __future__ import annotations

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32,
         "FP64": np.float64, "BYTES": np.object_}


def request(case: dict, grpc: bool) -> InferRequest:
    inputs = []
    for tensor in case["inputs"]:
        item = InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
        if tensor["datatype"] == "BYTES":
            data = np.array([s.encode("utf-8") for s in tensor["data"]], dtype=np.object_).reshape(tensor["shape"])
        else:
            data = np.array(tensor["data"], dtype=NUMPY[tensor["datatype"]]).reshape(tensor["shape"])
        item.set_data_from_numpy(data, binary_data=False)
        inputs.append(item)
    outputs = [RequestedOutput(name) for name in case["outputs"]] if case.get("outputs") else None
    return InferRequest(model_name=case["model"], infer_inputs=inputs, request_id=case.get("id"),
                        parameters=case.get("parameters"), model_version=case.get("version") or None,
                        request_outputs=outputs, from_grpc=False)


def plain(value: np.ndarray) -> list:
    flat = np.asarray(value).ravel()
    if flat.dtype == np.object_:
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def answer(response) -> dict:
    return {"id": response.id or "", "model_version": response.model_version,
            "outputs": {o.name: {"datatype": o.datatype, "shape": list(o.shape), "data": plain(o.as_numpy())}
                        for o in response.outputs}}


async def rest_session(url: str, cases: list) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    base = f"http://{url}"
    out = {"live": await client.is_server_live(base), "ready": await client.is_server_ready(base), "models": []}
    for case in cases:
        entry = {"model": case["model"], "model_ready": await client.is_model_ready(base, case["model"])}
        entry["infer"] = answer(await client.infer(base, request(case, grpc=False), model_name=case["model"]))
        entry["errors"] = []
        for bad in case.get("errors", []):
            try:
                await client.infer(base, request(bad, grpc=False), model_name=bad["model"])
                entry["errors"].append({"case": bad.get("what"), "status": "OK"})
            except httpx.HTTPStatusError as exc:  # the client's error for a non-2xx answer
                entry["errors"].append({"case": bad.get("what"), "status": str(exc.response.status_code),
                                        "message": exc.response.json()["error"]})
        out["models"].append(entry)
    await client.close()
    return out


async def grpc_session(url: str, cases: list) -> dict:
    import grpc

    client = InferenceGRPCClient(url, timeout=30)
    out = {"live": await client.is_server_live(), "ready": await client.is_server_ready(), "models": []}
    for case in cases:
        entry = {"model": case["model"], "model_ready": await client.is_model_ready(case["model"])}
        entry["infer"] = answer(await client.infer(request(case, grpc=True)))
        entry["errors"] = []
        for bad in case.get("errors", []):
            try:
                await client.infer(request(bad, grpc=True))
                entry["errors"].append({"case": bad.get("what"), "status": "OK"})
            except grpc.aio.AioRpcError as exc:
                entry["errors"].append({"case": bad.get("what"), "status": str(exc.code()), "message": exc.details()})
        out["models"].append(entry)
    await client.close()
    return out


def main() -> None:
    rest, grpc_target, cases_file = sys.argv[1:4]
    with open(cases_file) as f:
        cases = json.load(f)
    print(json.dumps({"kserve_rest_v2": asyncio.run(rest_session(rest, cases)),
                      "kserve_grpc_v2": asyncio.run(grpc_session(grpc_target, cases))}, indent=1))


if __name__ == "__main__":
    main()
