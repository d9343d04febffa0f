"""A bounded load generator for TF Serving's predict API, over REST or gRPC.

Sends `concurrency` requests at a time for `duration_s` (or `max_requests`), to a loopback
server only, and reports throughput and latency percentiles. Used by the benchmarks and the
soak task; any TF Serving (ours or the real one) can be the target.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    protocol: str
    concurrency: int
    sent: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    summary_ms: dict = field(default_factory=dict)  # percentile -> ms, from a tool that keeps no samples

    @property
    def throughput(self) -> float:
        return (self.sent - self.failed) / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        if self.latencies_ms:
            return float(np.percentile(self.latencies_ms, q))
        return self.summary_ms.get(q, float("nan"))


def _check_loopback(host: str) -> None:
    if host not in LOOPBACK and not host.startswith("127."):
        raise ValueError(f"load is only sent to loopback addresses, not {host}")


async def _drive(send, concurrency: int, duration_s: float, max_requests: Optional[int], result: LoadResult):
    deadline = time.perf_counter() + duration_s
    budget = [max_requests if max_requests is not None else float("inf")]

    async def worker():
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                await send()
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            except Exception as exc:  # counted, never raised: the run goes on
                result.failed += 1
                if len(result.errors) < 10:
                    result.errors.append(repr(exc))
            result.sent += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started


async def _rest(host, port, model, instances, concurrency, duration_s, max_requests, signature):
    import aiohttp

    _check_loopback(host)
    url = f"http://{host}:{port}/v1/models/{model}:predict"
    body = json.dumps({"signature_name": signature, "instances": instances}).encode()
    result = LoadResult("rest", concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def send():
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")

        await _drive(send, concurrency, duration_s, max_requests, result)
    return result


async def _grpc(host, port, model, instances, concurrency, duration_s, max_requests, signature, input_name):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from pyserving.codecs.tensor_proto import from_numpy

    _check_loopback(host)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[input_name].CopyFrom(from_numpy(np.asarray(instances, dtype=np.float32)))
    result = LoadResult("grpc", concurrency)
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def send():
            await stub.Predict(request, timeout=30)

        await _drive(send, concurrency, duration_s, max_requests, result)
    return result


def run(protocol: str, host: str, port: int, model: str, instances, concurrency: int = 1,
        duration_s: float = 5.0, max_requests: Optional[int] = None, signature: str = "serving_default",
        input_name: str = "x") -> LoadResult:
    if protocol == "rest":
        coro = _rest(host, port, model, instances, concurrency, duration_s, max_requests, signature)
    elif protocol == "grpc":
        coro = _grpc(host, port, model, instances, concurrency, duration_s, max_requests, signature, input_name)
    else:
        raise ValueError(f"unknown protocol {protocol}")
    return asyncio.run(coro)
