"""TF Serving's API vs the Open Inference Protocol on one pyserving, side by side in one run.

    .venv/bin/python bench/oip.py [--seconds 5] [--levels 1,32]

One server process serves half_plus_two; at each concurrency, wrk posts the same one-row request
as TF Serving's JSON (`/v1/models/m:predict`) and as OIP JSON (`/v2/models/m/infer`), and h2load
sends it as a PredictRequest and as a ModelInferRequest (raw_input_contents, as tritonclient
sends). Each answer is checked once before the load; the table gives throughput, p50/p99 and
OIP / TF API per transport. Client and server share the machine (loopback). MLServer is not
measured here (it needs a venv of its own with TensorFlow and a custom runtime).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench import c_load  # noqa: E402
from kit.process import ServerProcess, free_ports  # noqa: E402

MODEL = "half_plus_two"
ROW = [1.0]


def requests() -> dict:
    """(REST body, REST path, gRPC request, gRPC method) for each API."""
    from tensorflow_serving.apis import predict_pb2

    from pyserving.codecs.tensor_proto import from_numpy
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["x"].CopyFrom(from_numpy(np.array([ROW], np.float32)))
    infer = pb.ModelInferRequest(model_name=MODEL)
    infer.inputs.add(name="x", datatype="FP32", shape=[1, len(ROW)])
    infer.raw_input_contents.append(np.array([ROW], "<f4").tobytes())
    v2_body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, len(ROW)], "data": ROW}]}
    return {
        "TF Serving API": (json.dumps({"instances": [ROW]}).encode(), f"/v1/models/{MODEL}:predict",
                           predict.SerializeToString(), "/tensorflow.serving.PredictionService/Predict"),
        "OIP": (json.dumps(v2_body).encode(), f"/v2/models/{MODEL}/infer",
                infer.SerializeToString(), "/inference.GRPCInferenceService/ModelInfer"),
    }


def response_sizes(rest_port: int, grpc_port: int, apis: dict) -> dict:
    """Each API's answer, checked (y = 2.5 for x = 1), and the size of its gRPC response."""
    import grpc

    sizes = {}
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        for api, (body, path, request, method) in apis.items():
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{rest_port}{path}", data=body),
                                        timeout=30) as resp:
                answer = json.loads(resp.read())
            y = answer["predictions"][0][0] if "predictions" in answer else answer["outputs"][0]["data"][0]
            raw = channel.unary_unary(method)(request, timeout=30)
            assert y == 2.5, (api, answer)
            sizes[api] = len(raw)
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="1,32")
    args = parser.parse_args()
    if not c_load.available():
        print("wrk and h2load are needed (Debian: wrk, nghttp2-client)")
        return 1
    levels = [int(c) for c in args.levels.split(",")]
    apis = requests()
    with tempfile.TemporaryDirectory() as tmp:
        from pyserving.examples import half_plus_two

        half_plus_two.write_tf2(f"{tmp}/{MODEL}", 1)
        grpc_port, rest_port = free_ports(2)
        server = ServerProcess([sys.executable, "-m", "pyserving", f"--port={grpc_port}",
                                f"--rest_api_port={rest_port}", f"--model_name={MODEL}",
                                f"--model_base_path={tmp}/{MODEL}"], Path(tmp) / "server.log", ready_port=rest_port)
        server.start()
        try:
            server.wait_ready()
            sizes = response_sizes(rest_port, grpc_port, apis)
            rows = []
            for c in levels:
                for transport in ("REST", "gRPC"):
                    got = {}
                    for api, (body, path, request, method) in apis.items():
                        if transport == "REST":
                            result = c_load.rest("127.0.0.1", rest_port, MODEL, body, c, args.seconds, path=path)
                        else:
                            result = c_load.grpc("127.0.0.1", grpc_port, request, sizes[api], c, args.seconds,
                                                 method=method)
                        assert not result.failed, result.errors
                        got[api] = result
                        rows.append((transport, c, api, result))
                    ratio = got["OIP"].throughput / got["TF Serving API"].throughput
                    print(f"{transport:4} c={c:<3} OIP / TF Serving API: {ratio:.2f}", flush=True)
        finally:
            server.stop()
    print(f"\n{'transport':9} {'c':>3}  {'API':15} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for transport, c, api, r in rows:
        print(f"{transport:9} {c:>3}  {api:15} {r.throughput:8.0f} {r.percentile(50):7.2f} {r.percentile(99):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
