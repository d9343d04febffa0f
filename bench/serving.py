"""Serving benchmark: REST and gRPC predict against a live pyserving, beside in-process calls.

One command (`make bench` or `.venv/bin/python bench/serving.py`). For each model it exports
(half_plus_two, whose call costs less than a request's protocol work, and a tabular "wide"
model whose call costs a few hundred microseconds whatever the batch size, see wide_model.py),
it measures in the same run:
  * in-process, one call at a time: the TF2 concrete function, Session.run, and the direct
    TF_SessionRun path pyserving uses,
  * in-process, 32 rows per call (rows/s),
  * REST and gRPC predict throughput and p50/p99 latency against a real server process on
    loopback (client and server share the machine), batching off and on, at concurrency
    1, 8, 32 and 128,
  * the same load against the protocol stacks alone (bench/null_servers.py: aiohttp and
    grpc.aio answering a fixed response), the most any server on them could do,
and prints the ratios: batched / unbatched server, and server / in-process one-call rates.
The load comes from wrk and h2load when installed (`make bench` installs them with apt when
it can), else from the Python client, which competes with the server for the two cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench import c_load, wide_model  # noqa: E402
from client import loadgen  # noqa: E402
from kit.process import ServerProcess, free_ports  # noqa: E402

# TF Serving's batching guide for online serving: max_batch_size near the expected concurrency,
# a timeout of a few milliseconds. One batch thread: TensorFlow already spreads one call over
# both cores, and a second thread splits the requests of a wave into two smaller batches.
CLIENTS = {"c": "wrk (REST) and h2load (gRPC), C programs", "python": "client/loadgen.py (Python, asyncio)"}
BATCHING = ("max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } "
            "num_batch_threads { value: 1 } max_enqueued_batches { value: 1000 }")


@dataclass(frozen=True)
class Model:
    name: str
    export: Callable[[str], str]  # base path -> version path
    row: list  # one instance
    output: str


def _hp2(base: str) -> str:
    from pyserving.examples import half_plus_two

    half_plus_two.write_tf2(base, 1)
    return f"{base}/1"


MODELS = {
    "half_plus_two": Model("half_plus_two", _hp2, [1.0], "y"),
    "wide": Model("wide", wide_model.write, [0.5] * wide_model.FEATURES, "probabilities"),
}


def rate(fn, seconds: float) -> float:
    for _ in range(50):
        fn()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(20):
            fn()
        n += 20
    return n / (time.perf_counter() - started)


def in_process_rates(model: Model, version_dir: str, seconds: float) -> dict[str, float]:
    import tensorflow as tf

    from pyserving.runtime.savedmodel import SavedModelServable

    x = np.array([model.row], np.float32)
    rates = {}
    fn = tf.saved_model.load(version_dir).signatures["serving_default"]
    rates["tf2 concrete function"] = rate(lambda: fn(x=tf.constant(x))[model.output].numpy(), seconds)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)
    sig = meta.signature_def["serving_default"]
    feed, fetch = sig.inputs["x"].name, sig.outputs[model.output].name
    rates["Session.run"] = rate(lambda: session.run(fetch, {feed: x}), seconds)
    servable = SavedModelServable(version_dir)
    rates["pyserving runtime (TF_SessionRun)"] = rate(
        lambda: servable.run("serving_default", {"x": x}, [model.output]), seconds)
    x32 = np.repeat(x, 32, axis=0)
    rates["pyserving runtime, 32 rows per call"] = 32 * rate(
        lambda: servable.run("serving_default", {"x": x32}, [model.output]), seconds)
    servable.close()
    session.close()
    return rates


@dataclass
class Client:
    """Sends one model's predict request over REST or gRPC: C tools (bench/c_load.py) or the
    Python load generator (client/loadgen.py)."""

    kind: str  # "c" | "python"
    model: Model
    seconds: float

    def request_bytes(self) -> tuple[bytes, bytes]:
        from tensorflow_serving.apis import predict_pb2

        from pyserving.codecs.tensor_proto import from_numpy

        body = json.dumps({"signature_name": "serving_default", "instances": [self.model.row]}).encode()
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model.name
        request.model_spec.signature_name = "serving_default"
        request.inputs["x"].CopyFrom(from_numpy(np.array([self.model.row], np.float32)))
        return body, request.SerializeToString()

    def answers(self, rest_port: int, grpc_port: int) -> tuple[bytes, bytes]:
        """One predict over each protocol, checked; returns (REST body, serialized PredictResponse)."""
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        body, request = self.request_bytes()
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{rest_port}/v1/models/{self.model.name}:predict", data=body,
                headers={"Content-Type": "application/json"}), timeout=30) as resp:
            rest_answer = resp.read()
        predictions = json.loads(rest_answer)["predictions"]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_pb2.PredictRequest.FromString(request), timeout=30)
        from pyserving.codecs.tensor_proto import to_numpy

        got = to_numpy(response.outputs[self.model.output])
        assert np.allclose(got, predictions, rtol=1e-6), "REST and gRPC disagree"
        return rest_answer, response.SerializeToString()

    def measure(self, protocol: str, port: int, concurrency: int, response_size: int):
        body, request = self.request_bytes()
        if self.kind == "python":
            return loadgen.run(protocol, "127.0.0.1", port, self.model.name, [self.model.row],
                               concurrency=concurrency, duration_s=self.seconds)
        if protocol == "rest":
            return c_load.rest("127.0.0.1", port, self.model.name, body, concurrency, self.seconds)
        return c_load.grpc("127.0.0.1", port, request, response_size, concurrency, self.seconds)


def _row(label: str, protocol: str, c: int, r, bases: dict) -> None:
    ratios = "  ".join(f"{r.throughput / base:5.2f}x" for base in bases.values())
    print(f"  {label:<8} {protocol:<6} {c:>4} {r.throughput:9.0f} {r.percentile(50):8.2f} "
          f"{r.percentile(99):8.2f} {r.failed:>6}  {ratios}", flush=True)
    if r.failed:
        print(f"    errors: {r.errors[:3]}", flush=True)


def measure_levels(client: Client, label: str, rest_port: int, grpc_port: int, answers: tuple, levels,
                   bases: dict) -> dict:
    """(protocol, concurrency) -> LoadResult, each printed as it comes."""
    results = {}
    for protocol, port in (("rest", rest_port), ("grpc", grpc_port)):
        for c in levels:
            r = results[(protocol, c)] = client.measure(protocol, port, c, len(answers[1]))
            _row(label, protocol, c, r, bases)
    return results


def serve_and_measure(tmp: str, client: Client, batching: bool, levels, bases: dict,
                      server_root: Path = ROOT, server_python: str = sys.executable) -> tuple[dict, tuple]:
    model = client.model
    grpc_port, rest_port = free_ports(2)
    flags = []
    if batching:
        Path(f"{tmp}/batching.txt").write_text(BATCHING)
        flags = ["--enable_batching", f"--batching_parameters_file={tmp}/batching.txt"]
    # -P: the server imports pyserving from server_root (PYTHONPATH), not from the current folder,
    # so bench/ab.py can run this same client against another revision's server.
    server = ServerProcess(
        [server_python, "-P", "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_name={model.name}", f"--model_base_path={tmp}/{model.name}", *flags],
        Path(tmp) / f"server-{model.name}-{batching}.log", ready_port=rest_port, env={"PYTHONPATH": str(server_root)},
    )
    server.start()
    try:
        server.wait_ready()
        answers = client.answers(rest_port, grpc_port)
        label = "on" if batching else "off"
        return measure_levels(client, label, rest_port, grpc_port, answers, levels, bases), answers
    finally:
        server.stop()


def measure_null_servers(tmp: str, client: Client, answers: tuple, levels, bases: dict) -> dict:
    """The same client against the protocol stacks alone (bench/null_servers.py)."""
    rest_port, grpc_port = free_ports(2)
    Path(f"{tmp}/rest_answer.json").write_bytes(answers[0])
    Path(f"{tmp}/grpc_answer.bin").write_bytes(answers[1])
    server = ServerProcess(
        [sys.executable, "-m", "bench.null_servers", f"--rest_port={rest_port}", f"--grpc_port={grpc_port}",
         f"--rest_answer={tmp}/rest_answer.json", f"--grpc_answer={tmp}/grpc_answer.bin"],
        Path(tmp) / "null-servers.log", ready_port=grpc_port, env={"PYTHONPATH": str(ROOT)},
    )
    server.start()
    try:
        server.wait_ready()
        assert client.answers(rest_port, grpc_port) == answers
        return measure_levels(client, "null", rest_port, grpc_port, answers, levels, bases)
    finally:
        server.stop()


def bench_model(tmp: str, client: Client, levels, server_root: Path = ROOT, in_process: bool = True,
                server_python: str = sys.executable) -> dict:
    model = client.model
    version_dir = model.export(f"{tmp}/{model.name}")
    print(f"\n## {model.name}: one instance {len(model.row)} float(s), {os.cpu_count()} CPUs, "
          f"{client.seconds:.0f} s per measurement, client: {CLIENTS[client.kind]}, server: {server_root} "
          f"({server_python})")
    rates = in_process_rates(model, version_dir, client.seconds) if in_process else {}
    print("in-process, one call at a time (calls/s), and 32-row calls (rows/s):")
    for name, value in rates.items():
        unit = f"({1e6 / value:6.0f} us/call)" if "32 rows" not in name else f"({32e6 / value:6.0f} us/call)"
        print(f"  {name:<38} {value:9.0f}   {unit}")
    bases = ({"TF_SessionRun": rates["pyserving runtime (TF_SessionRun)"], "TF2 fn": rates["tf2 concrete function"]}
             if in_process else {})
    print(f"\nserver predict, closed loop ({BATCHING}):")
    print(f"  {'batching':<8} {'proto':<6} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6}  "
          f"vs one-call in-process: {', '.join(bases)}")
    off, answers = serve_and_measure(tmp, client, False, levels, bases, server_root, server_python)
    on, _ = serve_and_measure(tmp, client, True, levels, bases, server_root, server_python)
    print("  null = the protocol stack alone, a fixed answer and no model (bench/null_servers.py):")
    null = measure_null_servers(tmp, client, answers, levels, bases)
    print("\nbatched / unbatched throughput, and what the stack alone reaches, in multiples of unbatched:")
    for (protocol, c), r in on.items():
        unbatched = max(off[(protocol, c)].throughput, 1e-9)
        print(f"  {protocol:<6} {c:>4}  batched {r.throughput / unbatched:5.2f}x   "
              f"stack alone {null[(protocol, c)].throughput / unbatched:5.2f}x")
    return {"rates": rates, "off": off, "on": on, "null": null}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each measurement")
    parser.add_argument("--concurrency", default="1,8,32,128", help="comma-separated client concurrency levels")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--client", choices=["auto", *CLIENTS], default="auto",
                        help="load generator: c (wrk and h2load), python (client/loadgen.py); auto = c when installed")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="the source tree whose pyserving the servers run (bench/ab.py passes another revision's)")
    parser.add_argument("--server-python", default=sys.executable,
                        help="the Python (and so the TensorFlow) the servers run with; bench/ab.py --base-python")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process rates")
    parser.add_argument("--json", type=Path, help="also write the servers' req/s here, as "
                        "{model: {batching (off/on/null): {protocol: {concurrency: req/s}}}}")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    kind = args.client
    if kind == "auto":
        kind = "c" if c_load.available() else "python"
        if kind == "python":
            print("wrk or h2load not found (Debian: wrk, nghttp2-client): using the Python client, which "
                  "shares the CPUs with the server and lowers every server figure.")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            results = bench_model(tmp, Client(kind, MODELS[name], args.seconds), levels, args.server_root.resolve(),
                                  not args.no_in_process, args.server_python)
            report[name] = {label: _throughputs(results[label]) for label in ("off", "on", "null")}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def _throughputs(results: dict) -> dict:
    by_protocol: dict = {}
    for (protocol, c), r in results.items():
        by_protocol.setdefault(protocol, {})[str(c)] = r.throughput
    return by_protocol


if __name__ == "__main__":
    sys.exit(main())
