"""One pyserving process vs two workers on the same port pair (--pyserving_num_workers), side by
side in one run: REST and gRPC, batching off and on.

    .venv/bin/python bench/workers.py [--seconds 6] [--concurrency 32] [--models DIR]

half_plus_two (TF2) is served by one process, then by a supervisor with two workers; wrk posts
TF Serving's JSON predict on `concurrency` keep-alive connections, h2load sends PredictRequests on
`concurrency` HTTP/2 connections (one stream each; the kernel spreads connections over the
workers). For each run: req/s, p50/p99, and the server's CPU-seconds per 1,000 requests, summed
over the supervisor and every worker from /proc/<pid>/stat (utime + stime, before and after the
load): the scaling argument past this machine's cores is that a request must not cost more CPU
with workers. Then the resident memory of the supervisor, each worker and the total, idle after
the load (with --models DIR: a models.config in DIR served instead, e.g. the kit's build/models).
Client and server share the machine (loopback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench import c_load  # noqa: E402
from kit.process import ServerProcess, free_ports  # noqa: E402

MODEL = "half_plus_two"
# As bench/serving.py: TF Serving's online-serving advice, max_batch_size near the concurrency.
BATCHING = ("max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } "
            "num_batch_threads { value: 1 } max_enqueued_batches { value: 1000 }")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Served:
    """One pyserving run (1 process, or a supervisor and its workers) and its pids."""

    def __init__(self, tmp: Path, workers: int, batching: bool, config: Path | None = None):
        self.grpc_port, self.rest_port = free_ports(2)
        flags = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                 "--pyserving_listen_address=127.0.0.1"]
        flags += ([f"--model_config_file={config}"] if config else
                  [f"--model_name={MODEL}", f"--model_base_path={tmp}/{MODEL}"])
        if batching:
            (tmp / "batching.txt").write_text(BATCHING)
            flags += ["--enable_batching", f"--batching_parameters_file={tmp}/batching.txt"]
        if workers > 1:
            flags.append(f"--pyserving_num_workers={workers}")
        self.workers = workers
        self.process = ServerProcess([sys.executable, "-m", "pyserving", *flags],
                                     tmp / f"server-{workers}-{batching}.log", ready_port=self.rest_port)

    def __enter__(self) -> "Served":
        self.process.start()
        try:
            self.process.wait_ready(300)
            deadline = time.monotonic() + 300
            while len(self.worker_pids()) < self.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers not serving:\n" + self.process.log()[-3000:])
                time.sleep(0.2)
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop(60)

    def worker_pids(self) -> list[int]:
        """The serving workers' pids; [the process] without workers."""
        if self.workers == 1:
            return [self.process.pid]
        from pyserving import supervisor

        try:
            state = json.loads(supervisor.state_path(self.process.pid).read_text())
        except (OSError, ValueError):
            return []
        return [w["pid"] for w in state["workers"] if w["serving"] and w["pid"]]

    def pids(self) -> list[int]:
        return [self.process.pid] + (self.worker_pids() if self.workers > 1 else [])

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def memory(self) -> dict:
        workers = {str(i): round(rss_mb(pid), 1) for i, pid in enumerate(self.worker_pids())}
        supervisor_mb = round(rss_mb(self.process.pid), 1) if self.workers > 1 else 0.0
        return {"supervisor": supervisor_mb, "workers": workers,
                "total": round(supervisor_mb + sum(workers.values()), 1)}


def requests() -> tuple[bytes, bytes]:
    """(REST body, gRPC PredictRequest)."""
    from tensorflow_serving.apis import predict_pb2

    from pyserving.codecs.tensor_proto import from_numpy

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = MODEL
    predict.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))
    return json.dumps({"instances": [[1.0]]}).encode(), predict.SerializeToString()


def response_size(served: Served, request: bytes) -> int:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(request, timeout=30)
    return len(raw)


def measure(served: Served, body: bytes, request: bytes, concurrency: int, seconds: float) -> dict:
    size = response_size(served, request)
    out = {}
    for transport in ("REST", "gRPC"):
        before = served.cpu()
        if transport == "REST":
            result = c_load.rest("127.0.0.1", served.rest_port, MODEL, body, concurrency, seconds)
        else:
            result = c_load.grpc("127.0.0.1", served.grpc_port, request, size, concurrency, seconds)
        used = served.cpu() - before
        assert not result.failed, result.errors
        out[transport] = {"rps": result.throughput, "p50": result.percentile(50), "p99": result.percentile(99),
                          "cpu_s": used, "requests": result.sent,
                          "cpu_s_per_1000": 1000 * used / max(result.sent, 1)}
        print(f"  {transport:4} {result.throughput:8.0f} req/s, {out[transport]['cpu_s_per_1000']:.3f} CPU-s per "
              f"1,000 requests", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--models", default="", help="also: resident memory serving DIR/models.config (1 and 2 "
                                                     "workers), e.g. build/models")
    args = parser.parse_args()
    if not c_load.available():
        print("wrk and h2load are needed (Debian: wrk, nghttp2-client)")
        return 1
    body, request = requests()
    results, memory = {}, {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        from pyserving.examples import half_plus_two

        half_plus_two.write_tf2(f"{tmp}/{MODEL}", 1)
        for batching in (False, True):
            for workers in (1, 2):
                print(f"{workers} worker(s), batching {'on' if batching else 'off'}:", flush=True)
                with Served(tmp, workers, batching) as served:
                    results[(workers, batching)] = measure(served, body, request, args.concurrency, args.seconds)
                    time.sleep(1.0)
                    memory[(workers, batching, MODEL)] = served.memory()
        if args.models:
            config = Path(args.models).resolve() / "models.config"
            for workers in (1, 2):
                with Served(tmp, workers, False, config) as served:
                    time.sleep(2.0)
                    memory[(workers, False, str(config))] = served.memory()
    c = args.concurrency
    print(f"\nc={c}, {args.seconds:.0f} s each; CPU: supervisor + workers, from /proc (utime + stime)")
    print(f"{'transport':9} {'batching':8} {'workers':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU-s/1k req':>12} {'CPU-s':>6}")
    for transport in ("REST", "gRPC"):
        for batching in (False, True):
            for workers in (1, 2):
                r = results[(workers, batching)][transport]
                print(f"{transport:9} {'on' if batching else 'off':8} {workers:>7} {r['rps']:8.0f} {r['p50']:7.2f} "
                      f"{r['p99']:7.2f} {r['cpu_s_per_1000']:12.3f} {r['cpu_s']:6.1f}")
    print("\n2 workers / 1 worker:")
    for transport in ("REST", "gRPC"):
        for batching in (False, True):
            one, two = results[(1, batching)][transport], results[(2, batching)][transport]
            print(f"  {transport:4} batching {'on ' if batching else 'off'}: req/s x{two['rps'] / one['rps']:.2f}, "
                  f"CPU per request x{two['cpu_s_per_1000'] / one['cpu_s_per_1000']:.2f}")
    print("\nresident memory, MB (idle, after the load):")
    for (workers, batching, what), m in memory.items():
        each = ", ".join(f"worker {k} {v:.0f}" for k, v in m["workers"].items())
        print(f"  {what}, {workers} worker(s){', batching' if batching else ''}: supervisor {m['supervisor']:.0f}, "
              f"{each}; total {m['total']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
