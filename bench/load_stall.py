"""Load-stall benchmark: what version loads and unloads do to the requests being served.

    .venv/bin/python bench/load_stall.py          (`make bench-stall`, about 2 minutes)

One live pyserving serves two models from a --model_config_file: A, under steady closed-loop
REST and gRPC load (aiohttp and grpc.aio, a few requests in flight each), and B, which takes no
traffic. The benchmark then publishes new versions (atomic folder renames, as `inv publish`
does; the server picks them up at its next file-system poll):
  * A's swaps: version N+1 of A loads, becomes AVAILABLE, then version N unloads
    (the latest-1 policy), all while A is queried;
  * B's swaps: the same for B, whose loads and unloads share the process with A's traffic
    (tensorflow/serving#1866: loading model B lifts model A's p99).
It runs twice: A = a large model (a ~128 MiB variable, so a load reads and restores that much)
and A = half_plus_two; B is always the large model.

Each request is kept with its start and end time; a request belongs to every window it
overlaps. Windows: steady (between swaps, after things settle), load (the new folder's rename
until the new version is AVAILABLE), unload (that moment until 0.25 s after the old version is
END: freeing its memory can trail the state). For
each kind of window it prints p50, p99, p99.9 and max latency, and the longest gap in which no
request completed; also the server's peak resident memory during swaps against steady
(tensorflow/serving#2017: memory doubles on reload). The issue's goal is printed beside them:
p99.9 and max during loads and unloads <= 2x the steady p99.9, no gap over 50 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kit.process import ServerProcess, free_ports  # noqa: E402
from pyserving.version_dir import publish_version  # noqa: E402

LARGE_ROWS, LARGE_COLS = 32768, 1024  # float32: 128 MiB of variables
UNLOAD_TAIL_S = 0.25


def write_large(base_path: str, version: int) -> str:
    """A model whose load is dominated by its variables: y = 0.5 x + 2 (as half_plus_two, so one
    request fits both models), computed next to a 128 MiB matrix of which it reads one element."""
    import tensorflow as tf

    class Large(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_uniform([LARGE_ROWS, LARGE_COLS], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 0.5 * x + 2.0 + 0.0 * self.w[0, 0]}

    def write(path: str) -> None:
        module = Large()
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})

    return publish_version(base_path, version, write)


def write_small(base_path: str, version: int) -> str:
    from pyserving.examples import half_plus_two

    return half_plus_two.write_tf2(base_path, version)


@dataclass
class Timeline:
    """What happened, on one clock (time.monotonic)."""

    requests: list = field(default_factory=list)  # (start, end, ok)
    windows: list = field(default_factory=list)  # (kind, start, end)
    rss: list = field(default_factory=list)  # (time, bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)


async def _load(rest_port: int, grpc_port: int, model: str, concurrency: int, stop: threading.Event,
                timeline: Timeline) -> None:
    import aiohttp
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from pyserving.codecs.tensor_proto import from_numpy

    body = json.dumps({"instances": [[1.0]]}).encode()
    url = f"http://127.0.0.1:{rest_port}/v1/models/{model}:predict"
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))

    async def worker(send):
        while not stop.is_set():
            started = time.monotonic()
            try:
                await send()
                ok = True
            except Exception:  # counted as failed; the run goes on
                ok = False
            timeline.requests.append((started, time.monotonic(), ok))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session, \
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def rest():
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(resp.status)

        async def grpc_call():
            await stub.Predict(request, timeout=30)

        await asyncio.gather(*([worker(rest) for _ in range(concurrency)] +
                               [worker(grpc_call) for _ in range(concurrency)]))


def _rss_sampler(pid: int, stop: threading.Event, timeline: Timeline) -> None:
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        timeline.rss.append((time.monotonic(), int(line.split()[1]) * 1024))
        except OSError:
            return
        time.sleep(0.02)


def _versions(rest_port: int, model: str) -> dict[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/{model}", timeout=10) as resp:
        doc = json.load(resp)
    return {int(v["version"]): v["state"] for v in doc["model_version_status"]}


def _swap(base: str, model: str, version: int, rest_port: int, timeline: Timeline, timeout_s: float = 120) -> None:
    """Publish `version` (a copy of version 1), then time its load and its predecessor's unload."""
    source = os.path.join(base, "1")
    publish_version(base, version, lambda path: shutil.copytree(source, path))
    published = time.monotonic()
    deadline = published + timeout_s
    available = None
    while time.monotonic() < deadline:
        states = _versions(rest_port, model)
        if available is None and states.get(version) == "AVAILABLE":
            available = time.monotonic()
            timeline.windows.append((f"{model} load", published, available))
        if available is not None and all(s == "END" for v, s in states.items() if v != version):
            # Freeing the old version's memory and Python objects can trail its END state: the
            # unload window reaches UNLOAD_TAIL_S past it.
            time.sleep(UNLOAD_TAIL_S)
            timeline.windows.append((f"{model} unload", available, time.monotonic()))
            return
        time.sleep(0.01)
    raise TimeoutError(f"{model} version {version} did not swap in {timeout_s} s: {_versions(rest_port, model)}")


def percentile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summarize(timeline: Timeline, kind: str) -> dict:
    windows = [(s, e) for k, s, e in timeline.windows if k == kind]
    latencies, gaps, failed = [], [], 0
    for start, end in windows:
        inside = [r for r in timeline.requests if r[0] < end and r[1] > start]
        latencies += [(r[1] - r[0]) * 1e3 for r in inside]
        failed += sum(1 for r in inside if not r[2])
        done = sorted([start] + [r[1] for r in inside if start <= r[1] <= end] + [end])
        gaps.append(max(b - a for a, b in zip(done, done[1:])) * 1e3)
    rss = [b for t, b in timeline.rss if any(s <= t <= e for s, e in windows)]
    return {"windows": len(windows), "seconds": sum(e - s for s, e in windows), "requests": len(latencies),
            "failed": failed, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "p99.9": percentile(latencies, 99.9), "max": max(latencies, default=float("nan")),
            "gap": max(gaps, default=float("nan")), "rss": max(rss, default=0)}


def run_case(tmp: str, a_writer, label: str, args) -> dict:
    base_a, base_b = f"{tmp}/{label}/A", f"{tmp}/{label}/B"
    versions = [a_writer(base_a, 1), write_large(base_b, 1)]
    if args.warmup:  # one record per version: its first run happens while it loads, not on a request
        from pyserving.runtime import warmup

        for version_dir in versions:
            warmup.write_requests(version_dir, [warmup.predict_log("serving_default",
                                                                   {"x": np.array([[1.0]], np.float32)})])
    config = Path(tmp, label, "models.config")
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in (("A", base_a), ("B", base_b))) + "}\n")
    rest_port, grpc_port = free_ports(2)
    # -P and PYTHONPATH: the server runs the pyserving of --server-root (another revision's for a before/after)
    server = ServerProcess(
        [sys.executable, "-P", "-m", "pyserving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"],
        Path(tmp, label, "server.log"), ready_port=rest_port, env={"PYTHONPATH": str(args.server_root)})
    timeline, stop = Timeline(), threading.Event()
    server.start()
    try:
        server.wait_ready()
        sampler = threading.Thread(target=_rss_sampler, args=(server.pid, stop, timeline), daemon=True)
        loader = threading.Thread(target=lambda: asyncio.run(
            _load(rest_port, grpc_port, "A", args.concurrency, stop, timeline)), daemon=True)
        sampler.start()
        loader.start()
        time.sleep(args.settle)  # first requests (connections, first runs) are not "steady"
        version = {"A": 1, "B": 1}
        for model, base in [("A", base_a)] * args.swaps + [("B", base_b)] * args.swaps:
            quiet_from = time.monotonic()
            time.sleep(args.steady)
            timeline.windows.append(("steady", quiet_from, time.monotonic()))
            version[model] += 1
            _swap(base, model, version[model], rest_port, timeline)
            time.sleep(args.settle)
        quiet_from = time.monotonic()
        time.sleep(args.steady)
        timeline.windows.append(("steady", quiet_from, time.monotonic()))
        stop.set()
        loader.join(60)
        sampler.join(5)
    finally:
        stop.set()
        server.stop()
    rows = {kind: summarize(timeline, kind) for kind in ("steady", "A load", "A unload", "B load", "B unload")}
    first_swap = min(s for k, s, _ in timeline.windows if k != "steady")
    rows["memory"] = {"before first swap": max((b for t, b in timeline.rss if t < first_swap), default=0),
                      "peak": max((b for _, b in timeline.rss), default=0),
                      "at the end": timeline.rss[-1][1] if timeline.rss else 0}
    return rows


def report(label: str, rows: dict, server_root: Path, warmup: bool = False) -> None:
    steady = rows["steady"]
    print(f"\n## A = {label}, B = large ({LARGE_ROWS}x{LARGE_COLS} float32), server: {server_root}"
          + (", warmup records" if warmup else ""))
    print(f"  {'window':<9} {'n':>3} {'s':>6} {'requests':>8} {'failed':>6} {'p50 ms':>7} {'p99':>7} {'p99.9':>7} "
          f"{'max':>7} {'gap ms':>7} {'peak RSS MiB':>12}  goal (<= 2x steady p99.9, gap <= 50 ms)")
    for kind, r in rows.items():
        if kind == "memory":
            continue
        goal = ""
        if kind != "steady":
            ok = r["p99.9"] <= 2 * steady["p99.9"] and r["max"] <= 2 * steady["p99.9"] and r["gap"] <= 50
            goal = "met" if ok else "missed"
        print(f"  {kind:<9} {r['windows']:>3} {r['seconds']:6.1f} {r['requests']:>8} {r['failed']:>6} "
              f"{r['p50']:7.1f} {r['p99']:7.1f} {r['p99.9']:7.1f} {r['max']:7.1f} {r['gap']:7.1f} "
              f"{r['rss'] / 2**20:12.0f}  {goal}")
    memory = {k: v / 2**20 for k, v in rows["memory"].items()}
    print(f"  server RSS: {memory['before first swap']:.0f} MiB before the first swap, peak {memory['peak']:.0f} MiB "
          f"({memory['peak'] / max(memory['before first swap'], 1):.2f}x), {memory['at the end']:.0f} MiB at the end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=3, help="swaps of A, then of B, per case")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds of steady load before each swap")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after a swap before steady counts")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight per protocol")
    parser.add_argument("--cases", default="large,half_plus_two", help="what A is, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    parser.add_argument("--warmup", action="store_true",
                        help="give every version a warmup record (assets.extra/tf_serving_warmup_requests)")
    parser.add_argument("--server-root", type=Path, default=ROOT, help="the source tree whose pyserving serves")
    args = parser.parse_args()
    writers = {"large": write_large, "half_plus_two": write_small}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.cases.split(","):
            results[label] = run_case(tmp, writers[label], label, args)
            report(label, results[label], args.server_root, args.warmup)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    steady = [r["steady"]["p99.9"] for r in results.values()]
    print(f"\nsteady p99.9 across cases: {', '.join(f'{v:.1f}' for v in steady)} ms "
          f"(median {statistics.median(steady):.1f}); client and server share the machine's {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
