"""TF Serving's API vs the Open Inference Protocol on one pyserving, and OIP on MLServer with the
same SavedModel, side by side in one run.

    .venv/bin/python bench/oip.py [--seconds 5] [--levels 1,32] [--mlserver-python VENV/bin/python]
    python -m venv /tmp/mlsvenv && /tmp/mlsvenv/bin/pip install -r bench/mlserver/requirements.txt  # MLServer's venv

One pyserving process serves half_plus_two (TF2); at each concurrency, wrk posts the same one-row
request as TF Serving's JSON (`/v1/models/m:predict`) and as OIP JSON (`/v2/models/m/infer`), and
h2load sends it as a PredictRequest and as a ModelInferRequest (raw_input_contents, as tritonclient
sends). With --mlserver-python (a venv with mlserver and tensorflow-cpu), MLServer serves the same
SavedModel through bench/mlserver/savedmodel_runtime.py with its default settings, and gets the
same OIP requests. Each answer is checked once before the load; the table gives throughput,
p50/p99, and the ratios per transport. Client and servers share the machine (loopback); the
servers run one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
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
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{rest_port}{path}", data=body,
                                                               headers={"Content-Type": "application/json"}),
                                        timeout=30) as resp:
                answer = json.loads(resp.read())
            y = answer["predictions"][0][0] if "predictions" in answer else answer["outputs"][0]["data"][0]
            raw = channel.unary_unary(method)(request, timeout=30)
            assert y == 2.5, (api, answer)
            sizes[api] = len(raw)
    return sizes


def measure(label: str, rest_port: int, grpc_port: int, apis: dict, levels, seconds: float) -> dict:
    """{(transport, c, label/api): LoadResult} for one running server."""
    sizes = response_sizes(rest_port, grpc_port, apis)
    results = {}
    for c in levels:
        for transport in ("REST", "gRPC"):
            for api, (body, path, request, method) in apis.items():
                if transport == "REST":
                    result = c_load.rest("127.0.0.1", rest_port, MODEL, body, c, seconds, path=path)
                else:
                    result = c_load.grpc("127.0.0.1", grpc_port, request, sizes[api], c, seconds, method=method)
                assert not result.failed, result.errors
                results[(transport, c, f"{label} {api}")] = result
                print(f"{transport:4} c={c:<3} {label} {api}: {result.throughput:.0f} req/s", flush=True)
    return results


def serve_pyserving(tmp: str, apis: dict, levels, seconds: float) -> dict:
    grpc_port, rest_port = free_ports(2)
    server = ServerProcess([sys.executable, "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                            f"--model_name={MODEL}", f"--model_base_path={tmp}/{MODEL}"],
                           Path(tmp) / "pyserving.log", ready_port=rest_port)
    server.start()
    try:
        server.wait_ready()
        return measure("pyserving", rest_port, grpc_port, apis, levels, seconds)
    finally:
        server.stop()


def serve_mlserver(tmp: str, python: str, apis: dict, levels, seconds: float) -> dict:
    """MLServer (its defaults) with bench/mlserver/savedmodel_runtime.py over the same SavedModel."""
    http_port, grpc_port, metrics_port = free_ports(3)
    repo = Path(tmp) / "mlserver"
    (repo / MODEL).mkdir(parents=True)
    (repo / "settings.json").write_text(json.dumps({"http_port": http_port, "grpc_port": grpc_port,
                                                    "metrics_port": metrics_port, "host": "127.0.0.1"}))
    (repo / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "savedmodel_runtime.SavedModelRuntime",
        "parameters": {"uri": f"{tmp}/{MODEL}/1"}}))
    mlserver = str(Path(python).parent / "mlserver")
    server = ServerProcess([mlserver, "start", str(repo)], Path(tmp) / "mlserver.log", ready_port=http_port,
                           env={"PYTHONPATH": str(ROOT / "bench" / "mlserver"), "TF_CPP_MIN_LOG_LEVEL": "2"})
    server.start()
    try:
        server.wait_ready(timeout=180)
        deadline = time.monotonic() + 180
        while not _ready(http_port):  # the port opens before the model has loaded
            if time.monotonic() > deadline:
                raise RuntimeError("MLServer's model is not ready:\n" + server.log()[-3000:])
            time.sleep(0.2)
        return measure("MLServer", http_port, grpc_port, {"OIP": apis["OIP"]}, levels, seconds)
    finally:
        server.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", default="1,32")
    parser.add_argument("--mlserver-python", default="",
                        help="python of a venv with mlserver and tensorflow-cpu: also measure MLServer")
    args = parser.parse_args()
    if not c_load.available():
        print("wrk and h2load are needed (Debian: wrk, nghttp2-client)")
        return 1
    levels = [int(c) for c in args.levels.split(",")]
    apis = requests()
    with tempfile.TemporaryDirectory() as tmp:
        from pyserving.examples import half_plus_two

        half_plus_two.write_tf2(f"{tmp}/{MODEL}", 1)
        results = serve_pyserving(tmp, apis, levels, args.seconds)
        if args.mlserver_python:
            results |= serve_mlserver(tmp, args.mlserver_python, apis, levels, args.seconds)
    print(f"\n{'transport':9} {'c':>3}  {'server and API':25} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for (transport, c, what), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{transport:9} {c:>3}  {what:25} {r.throughput:8.0f} {r.percentile(50):7.2f} {r.percentile(99):7.2f}")
    print()
    for c in levels:
        for transport in ("REST", "gRPC"):
            oip, tf_api = results[(transport, c, "pyserving OIP")], results[(transport, c, "pyserving TF Serving API")]
            ratio = oip.throughput / tf_api.throughput
            line = f"{transport:4} c={c:<3} pyserving OIP / its TF Serving API: {ratio:.2f}"
            mls = results.get((transport, c, "MLServer OIP"))
            if mls is not None:
                line += f"; pyserving OIP / MLServer OIP: {oip.throughput / mls.throughput:.2f}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
