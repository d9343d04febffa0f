"""Closed-loop load from C load generators: wrk (REST) and h2load (gRPC over HTTP/2).

The Python client (client/loadgen.py) spends ~150-250 us of CPU per request, about as much as
the server does, and on this 2-core machine it runs beside the server: it would cap and blur
what is measured. wrk and h2load cost a few microseconds a request. Same loopback-only rule and
the same LoadResult as the Python client, so the benchmark prints either.

h2load counts HTTP statuses, and gRPC answers errors with HTTP 200 and a grpc-status trailer,
so a gRPC request counts as answered only by the bytes of data it got back: a PredictResponse
carries the expected message, an error carries none (trailers only).
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from client.loadgen import LoadResult, _check_loopback

TOOLS = ("wrk", "h2load")


def available() -> bool:
    return all(shutil.which(tool) for tool in TOOLS)


GRPC_PREFIX_BYTES = 5  # compressed flag + 4-byte length before each gRPC message


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message (uncompressed)."""
    return b"\0" + struct.pack(">I", len(message)) + message


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{path}", "rb")); wrk.body = f:read("*a"); f:close()
"""


def _ms(text: str) -> float:
    """wrk's durations: 812.00us, 4.21ms, 1.02s, 1.00m."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def rest(host: str, port: int, model: str, body: bytes, concurrency: int, duration_s: float,
         path: str = "") -> LoadResult:
    """POST `body` to :predict (or to `path`, e.g. an Open Inference Protocol /infer) with wrk,
    `concurrency` keep-alive connections."""
    _check_loopback(host)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "body.json").write_bytes(body)
        Path(tmp, "post.lua").write_text(_WRK_SCRIPT.format(path=Path(tmp, "body.json")))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--latency", "--timeout", "30s",
             "-s", f"{tmp}/post.lua", f"http://{host}:{port}{path or f'/v1/models/{model}:predict'}"],
            capture_output=True, text=True, check=True, timeout=duration_s + 60,
        ).stdout
    total, took = re.search(r"(\d+) requests in (\S+),", out).groups()
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        bad += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    result = LoadResult("rest", concurrency, sent=int(total), failed=min(bad, int(total)), elapsed_s=_ms(took) / 1000,
                        summary_ms={int(q): _ms(v) for q, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M)})
    if bad:
        result.errors.append(out.strip().splitlines()[-3:])
    return result


def grpc(host: str, port: int, request: bytes, response_size: int, concurrency: int, duration_s: float,
         method: str = "/tensorflow.serving.PredictionService/Predict") -> LoadResult:
    """Unary PredictionService/Predict calls (or `method`'s) with h2load, one stream on each of
    `concurrency` HTTP/2 connections. `request` is a serialized PredictRequest; `response_size`
    the size of the serialized PredictResponse a success carries (all requests are the same)."""
    _check_loopback(host)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "request.bin").write_bytes(grpc_frame(request))
        log = Path(tmp, "requests.tsv")
        out = subprocess.run(
            ["h2load", "-D", str(max(1, round(duration_s))), "-c", str(concurrency), "-m", "1",
             "-d", f"{tmp}/request.bin", "-H", "content-type: application/grpc", "-H", "te: trailers",
             f"--log-file={log}", f"http://{host}:{port}{method}"],
            capture_output=True, text=True, check=True, timeout=duration_s + 60,
        ).stdout
        latencies_us = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2]
    elapsed = float(re.search(r"finished in ([\d.]+)s", out).group(1))
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    data = int(re.search(r"\((\d+)\) data", out).group(1))
    answered = min(done, data // (GRPC_PREFIX_BYTES + response_size))
    result = LoadResult("grpc", concurrency, sent=done, failed=done - answered, elapsed_s=elapsed,
                        latencies_ms=[us / 1000 for us in latencies_us])
    if result.failed:
        result.errors.append(f"{result.failed} of {done} answers carried no PredictResponse (a gRPC error status)")
    return result
