"""A seeded, bounded fuzz of a live server (half_plus_two): its REST and gRPC edges must answer
whatever comes in with a client error, never a server one, and keep serving.

REST: random JSON values and nesting, deep nesting, truncated and mutated valid bodies, random
bytes, odd paths, versions, labels and methods. gRPC: PredictRequests with random dtypes, dims
(negative, 2^40, ...), contents, input names, model specs and output filters. Asserted: no 5xx
but 503 and 504; no gRPC INTERNAL, UNKNOWN or UNAVAILABLE; every non-200 answer under /v1/ is
JSON with an "error" key (a HEAD answer has no body, so only its Content-Type is checked), and
anything else gets libevent's plain HTML 404, as from TF Serving; afterwards the process is
alive, answers a valid request correctly, and its resident memory grew by at most 5% over the
fuzzing (measured after a warm-up round, which reaches the steady state of caches and pools).
Requests are valid HTTP: a path is RFC 3986 characters (percent escapes of any byte included)
and under aiohttp's request-line limit; what a malformed request line gets is the HTTP parser's
business, not the API's. The counts are printed (pytest -s) and carried by every failure message.
"""
from __future__ import annotations

import asyncio
import collections
import json
import random
import re
import string
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from tests.helpers import call, call_json, prediction_stub, to_numpy

SEED = 20261130
MODEL = "half_plus_two"
REST_REQUESTS, GRPC_REQUESTS = 10_000, 2_000
WARMUP_REST, WARMUP_GRPC = 1_500, 300
CONCURRENCY = 8
V1 = re.compile(r"(?i)/v1/")
BAD_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}

VALID_BODIES = [
    '{"instances": [[1.0], [2.0], [5.0]]}', '{"inputs": {"x": [[1.0], [3.0]]}}', '{"instances": [1.0, 2.0]}',
    '{"signature_name": "serving_default", "inputs": [[4.0]]}', '{"instances": [{"x": [1.5]}]}',
    '{"signature_name": "predict_x_y_y2", "instances": [[1.0]]}',
    '{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": [2.0]}]}',
    '{"signature_name": "regress_x_to_y", "context": {"x2": 1.0}, "examples": [{"x": 2.0}]}',
    '{"signature_name": "classify_x_to_y_with_classes", "examples": [{"x": 1.0, "tag": {"b64": "AAE="}}]}',
]
KEYS = ["instances", "inputs", "signature_name", "examples", "context", "x", "x2", "b64", "y", "", "\u00e9"]
SIGNATURES = ["serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x2_to_y3", "predict_x_y_y2",
              "classify_x_to_y_with_classes", "nope", ""]
# Methods HTTP knows; an unknown token ("FOO") never reaches the API: see the end of the test.
METHODS = ["GET"] * 4 + ["POST"] * 10 + ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "LOCK"]
PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
NUMBERS = ["0", "-0", "1", "-1", "2.5", "1e308", "-1e308", "1e400", "5e-324", "16777217", "9007199254740993",
           str(2**31), str(2**63 - 1), str(2**63), str(2**64 - 1), str(2**64), "-" + str(2**63 + 1),
           "1" + "0" * 40, "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x10"]
STRINGS = ['""', '"a"', '"\\u0000"', '"\\ud800"', '"caf\u00e9"', '"\\n\\"\\\\"', '"' + "x" * 300 + '"']


# ---- REST request generation ----------------------------------------------------------------
def json_value(rng: random.Random, depth: int = 0) -> str:
    """Random JSON text (with TF Serving's NaN and Infinity tokens, and some that are not JSON)."""
    roll = rng.random()
    if depth > 4 or roll < 0.35:
        return rng.choice(NUMBERS + STRINGS + ["true", "false", "null", '{"b64": "aGk="}', '{"b64": "!!"}'])
    if roll < 0.7:
        return "[" + ", ".join(json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    items = [f'"{rng.choice(KEYS)}": {json_value(rng, depth + 1)}' for _ in range(rng.randint(0, 4))]
    return "{" + ", ".join(items) + "}"


def deep(rng: random.Random) -> str:
    depth = rng.choice([10, 40, 63, 64, 65, 100, 500, 999, 1000, 1001, 5000, 100_000])
    inner = rng.choice(["1", "1.5", '"s"', "", "{}", '{"x": 1}'])
    shape = rng.choice(["list", "instances", "inputs", "object", "examples"])
    if shape == "object":
        return '{"a": ' * depth + inner + "}" * depth
    nested = "[" * depth + inner + "]" * depth
    if shape == "examples":
        return '{"examples": [{"x": ' + nested + "}]}"
    return nested if shape == "list" else f'{{"{shape}": {nested}}}'


INSERTS = [b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"1e999", b"\xff", b"\x00"]


def mutated(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 6)):
        where = rng.randrange(len(data) + 1)
        edit = rng.random()
        if edit < 0.4 and data:
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif edit < 0.7:
            data[where:where] = rng.choice(INSERTS)
        elif data:
            del data[where:where + rng.randint(1, 8)]
    return bytes(data)


def body(rng: random.Random) -> bytes:
    kind = rng.random()
    valid = rng.choice(VALID_BODIES).encode()
    if kind < 0.2:
        return valid
    if kind < 0.4:
        if rng.random() < 0.2:
            return json_value(rng).encode()
        items = (f'"{rng.choice(KEYS)}": {json_value(rng)}' for _ in range(rng.randint(1, 4)))
        return ("{" + ", ".join(items) + "}").encode()
    if kind < 0.5:
        return deep(rng).encode()
    if kind < 0.65:
        return valid[:rng.randrange(len(valid))]
    if kind < 0.85:
        return mutated(rng, valid)
    return rng.randbytes(rng.choice([0, 1, 7, 100, 5000]))


def segment(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return "".join(rng.choice(PATH_CHARS.replace("/", "")) for _ in range(rng.randint(0, 12)))
    if roll < 0.6:
        return "".join(f"%{b:02X}" for b in rng.randbytes(rng.randint(1, 6)))  # any byte, escaped
    return rng.choice(["%", "%ZZ", "%2", "%00", "%2F", "%E2%82%AC", "..", ".", "x" * 3000, ":predict", "%3A"])


def path(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.12:
        return rng.choice(["/", "/v1", "/v1/", "/V1/MODELS/half_plus_two", "/v1//models", "/v2/models/x", "//v1/models",
                           "/monitoring/prometheus/metrics", "/v1/models/", "/v1/models/half_plus_two/",
                           "/v1/models/half_plus_two:predict/", "/v1/models/half_plus_two::predict"])
    if roll < 0.25:
        return "/" + "/".join(segment(rng) for _ in range(rng.randint(1, 5)))
    name = rng.choice([MODEL] * 6 + ["nope", "HALF_PLUS_TWO", "half%5Fplus%5Ftwo", segment(rng)])
    where = rng.random()
    if where < 0.3:
        version = rng.choice(["1", "0", "2", "00001", str(2**63 - 1), str(2**63), str(2**64), "1" * 30, "-1",
                              "1.5", "x", "%31", "1" * 5000])
        name += f"/versions/{version}"
    elif where < 0.5:
        name += "/labels/" + rng.choice(["stable", "", segment(rng), "a" * 200])
    verb = rng.choice([":predict"] * 4 + [":classify", ":regress", "/metadata", "", ":PREDICT", ":explain",
                                          ":predict:predict", "/" + segment(rng)])
    return "/v1/models/" + name + verb


def rest_requests(rng: random.Random, count: int) -> list[tuple[str, str, bytes, dict]]:
    requests = []
    for _ in range(count):
        method = rng.choice(METHODS)
        headers = {"Origin": rng.choice(["http://a.example", "ftp://x", "", "null"])} if method == "OPTIONS" else {}
        requests.append((method, path(rng)[:4000], body(rng) if method != "GET" or rng.random() < 0.1 else b"",
                         headers))
    return requests


# ---- gRPC request generation ----------------------------------------------------------------
VALUE_FIELDS = ["float_val", "double_val", "int_val", "int64_val", "bool_val", "string_val", "half_val",
                "uint32_val", "uint64_val", "scomplex_val", "dcomplex_val"]
DIMS = [0, 1, 1, 2, 3, 5, -1, -7, 2**31, 2**40, 2**62, 2**63 - 1]


def values(rng: random.Random, field: str, n: int) -> list:
    if field in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
        return [rng.choice([rng.uniform(-1e6, 1e6), float("nan"), float("inf"), -0.0, 3.4e38]) for _ in range(n)]
    if field == "bool_val":
        return [rng.random() < 0.5 for _ in range(n)]
    if field == "string_val":
        return [rng.randbytes(rng.randint(0, 20)) for _ in range(n)]
    if field in ("uint32_val", "half_val"):
        return [rng.randrange(2**32 if field == "uint32_val" else 2**31) for _ in range(n)]
    if field == "uint64_val":
        return [rng.randrange(2**64) for _ in range(n)]
    if field == "int_val":
        return [rng.randrange(-(2**31), 2**31) for _ in range(n)]
    return [rng.randrange(-(2**63), 2**63) for _ in range(n)]


def tensor(rng: random.Random) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto()
    proto.dtype = rng.choice([1] * 8 + list(range(0, 24)) + [101, 119, 9999, -3])
    if rng.random() < 0.05:
        proto.tensor_shape.unknown_rank = True
    for _ in range(rng.choice([0, 1, 2, 2, 2, 3, 5])):
        proto.tensor_shape.dim.add().size = rng.choice(DIMS)
    roll = rng.random()
    if roll < 0.15:
        proto.tensor_content = rng.randbytes(rng.choice([0, 1, 3, 4, 8, 16, 40]))
    elif roll < 0.9:
        field = "float_val" if rng.random() < 0.5 else rng.choice(VALUE_FIELDS)
        getattr(proto, field).extend(values(rng, field, rng.choice([0, 1, 2, 3, 6, 50])))
    return proto


def valid_predict(rng: random.Random) -> predict_pb2.PredictRequest:
    """A request the model runs: x of a random batch and width (it broadcasts), random floats."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    rows, width = rng.randint(0, 8), rng.choice([1, 1, 2])
    x = request.inputs["x"]
    x.dtype = 1
    x.tensor_shape.dim.add().size = rows
    x.tensor_shape.dim.add().size = width
    x.float_val.extend(values(rng, "float_val", rows * width))
    request.output_filter.extend(rng.choice([[], ["y"]]))
    return request


def predict_requests(rng: random.Random, count: int) -> list[predict_pb2.PredictRequest]:
    requests = []
    for _ in range(count):
        if rng.random() < 0.25:
            requests.append(valid_predict(rng))
            continue
        request = predict_pb2.PredictRequest()
        spec = request.model_spec
        spec.name = rng.choice([MODEL] * 8 + ["nope", ""])
        spec.signature_name = rng.choice(SIGNATURES)
        pick = rng.random()
        if pick < 0.2:
            spec.version.value = rng.choice([1, 0, 2, -1, 2**63 - 1])
        elif pick < 0.3:
            spec.version_label = rng.choice(["stable", "", "x" * 100])
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            request.inputs[rng.choice(["x", "x", "x2", "inputs", "", "\u00e9"])].CopyFrom(tensor(rng))
        request.output_filter.extend(rng.choice([[], [], ["y"], ["y", "y"], ["y2"], ["nope"], ["", "y"]]))
        requests.append(request)
    return requests


# ---- sending --------------------------------------------------------------------------------
async def send_rest(base: str, requests, counts: collections.Counter, violations: list) -> None:
    import aiohttp
    from yarl import URL

    queue = iter(requests)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        async def worker():
            for method, target, data, headers in queue:
                url = URL(base + target, encoded=True)
                async with session.request(method, url, data=data or None, headers=headers,
                                           skip_auto_headers=["Content-Type"]) as response:
                    text = await response.read()
                    counts[response.status] += 1
                    problem = judge(method, target, response.status, response.headers.get("Content-Type", ""), text)
                    if problem:
                        violations.append((problem, method, target[:200], data[:200], response.status, text[:300]))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def judge(method: str, target: str, status: int, content_type: str, text: bytes):
    """What is wrong with one REST answer, or None."""
    if 500 <= status < 600 and status not in (503, 504):
        return "5xx"
    if not V1.match(target):
        if status != 404 or not content_type.startswith("text/html"):
            return "not libevent's 404 outside /v1"
        return None
    if status == 200:
        return None
    if content_type != "application/json":
        return "non-JSON error"
    if method == "HEAD":
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return "unparsable error body"
    return None if isinstance(doc, dict) and isinstance(doc.get("error"), str) else "no error key"


def send_grpc(target: str, requests, counts: collections.Counter, violations: list) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = prediction_stub(channel)
        for start in range(0, len(requests), 32):
            batch = requests[start:start + 32]
            futures = [stub.Predict.future(r, timeout=60) for r in batch]
            for request, future in zip(batch, futures):
                code = future.code()
                counts[code.name] += 1
                if code in BAD_GRPC:
                    violations.append((code.name, future.details(), str(request)[:400]))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


@pytest.mark.timeout(180)
def test_fuzz_rest_and_grpc(exported, start_server):
    server = start_server([f"--model_base_path={exported / 'hp2'}", f"--model_name={MODEL}"])
    pid = server.process.pid
    rng = random.Random(SEED)
    rest_counts, grpc_counts, violations = collections.Counter(), collections.Counter(), []

    def fuzz(n_rest: int, n_grpc: int) -> None:
        started = time.monotonic()
        rest, grpc_requests = rest_requests(rng, n_rest), predict_requests(rng, n_grpc)
        generated = time.monotonic()
        asyncio.run(send_rest(server.rest, rest, rest_counts, violations))
        sent_rest = time.monotonic()
        send_grpc(server.grpc_target, grpc_requests, grpc_counts, violations)
        print(f"\ngenerate {generated - started:.1f} s, REST {sent_rest - generated:.1f} s, "
              f"gRPC {time.monotonic() - sent_rest:.1f} s")

    fuzz(WARMUP_REST, WARMUP_GRPC)
    rss_before = rss_kib(pid)
    rest_counts.clear()
    grpc_counts.clear()
    fuzz(REST_REQUESTS, GRPC_REQUESTS)
    rss_after = rss_kib(pid)
    summary = (f"REST {sum(rest_counts.values())} requests: {dict(sorted(rest_counts.items()))}; "
               f"gRPC {sum(grpc_counts.values())} requests: {dict(sorted(grpc_counts.items()))}; "
               f"RSS {rss_before} KiB -> {rss_after} KiB ({100 * (rss_after / rss_before - 1):+.1f}%)")
    print("\nfuzz:", summary)

    assert not violations, f"{len(violations)} bad answers, first: {violations[:5]}\n{summary}"
    assert sum(rest_counts.values()) == REST_REQUESTS and sum(grpc_counts.values()) == GRPC_REQUESTS, summary
    assert server.process.proc.poll() is None, summary
    # A method HTTP does not know is refused by aiohttp's parser, before any routing (libevent, too,
    # answers one itself, before TF Serving's handler): a client error all the same, and harmless.
    assert call(server, "FOO", f"/v1/models/{MODEL}:predict", raw=b"{}")[0] == 400, summary
    assert call_json(server, "POST", f"/v1/models/{MODEL}:predict", {"instances": [[1.0], [2.0], [5.0]]}) == (
        200, {"predictions": [[2.5], [3.0], [4.5]]}), summary
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(
            dtype=1, tensor_shape={"dim": [{"size": 2}, {"size": 1}]}, float_val=[1.0, 3.0]))
        reply = prediction_stub(channel).Predict(request, timeout=30)
        assert np.array_equal(to_numpy(reply.outputs["y"]), [[2.5], [3.5]]), summary
    assert rss_after <= rss_before * 1.05, summary


def test_the_seed_bodies_are_json():
    # They seed the truncations and mutations: a typo here would only ever fuzz the parser.
    for text in VALID_BODIES:
        assert isinstance(json.loads(text), dict)
