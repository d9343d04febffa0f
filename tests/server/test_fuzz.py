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
V2 = re.compile(r"/v2(?:/|$)")  # the Open Inference Protocol's paths (case-sensitive, as its routes)
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
    if V2.match(target):
        return judge_v2(method, target, status, content_type, text)
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


def judge_v2(method: str, target: str, status: int, content_type: str, text: bytes):
    """An Open Inference Protocol answer: 200, or JSON {"error": ...} (a not-ready model or server
    is 503 with its {"ready": false} body)."""
    if status == 200 or method == "HEAD":
        return None
    if content_type != "application/json":
        return "non-JSON V2 error"
    try:
        doc = json.loads(text)
    except ValueError:
        return "unparsable V2 error body"
    if status == 503 and isinstance(doc, dict) and doc.get("ready") is False:
        return None
    return None if isinstance(doc, dict) and isinstance(doc.get("error"), str) else "no error key (V2)"


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


# ---- the Open Inference Protocol (/v2 on the REST port, inference.GRPCInferenceService) -------
V2_REST_REQUESTS, V2_GRPC_REQUESTS = 4_000, 1_500
DATATYPES = ["FP32"] * 6 + ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                            "FP16", "FP64", "BYTES", "BF16", "", "fp32", "FLOAT", "\u00e9"]
V2_VALID = [
    '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1.0, 2.0, 5.0]}]}',
    '{"id": "a", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [[1], [2]]}], '
    '"outputs": [{"name": "y", "parameters": {"binary_data": true}}]}',
    '{"parameters": {"signature_name": "predict_x_y_y2", "binary_data_output": true}, '
    '"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [4]}], "outputs": [{"name": "y2"}]}',
    '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 1], "data": []}]}',
]
V2_KEYS = ["inputs", "outputs", "name", "datatype", "shape", "data", "parameters", "id", "binary_data_size",
           "binary_data", "binary_data_output", "signature_name", "x", "y", ""]


def v2_json(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice(NUMBERS[:-6] + STRINGS + ["true", "false", "null", '"FP32"', '"BYTES"', "[3, 1]", "[-1]",
                                                    str(2**63), "[]", '"x"'])
    if roll < 0.7:
        return "[" + ", ".join(v2_json(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    items = [f'"{rng.choice(V2_KEYS)}": {v2_json(rng, depth + 1)}' for _ in range(rng.randint(0, 4))]
    return "{" + ", ".join(items) + "}"


def v2_tensor(rng: random.Random) -> dict:
    shape = [rng.choice([0, 1, 1, 2, 3, -1, 2**40, 2**63]) for _ in range(rng.choice([0, 1, 2, 2, 3]))]
    tensor = {"name": rng.choice(["x"] * 5 + ["y", "", "\u00e9"]), "datatype": rng.choice(DATATYPES),
              "shape": shape if rng.random() < 0.9 else rng.choice(["3", None, [1.5], [True]])}
    roll = rng.random()
    if roll < 0.6:
        size = rng.choice([0, 1, 2, 3, 6])
        tensor["data"] = [rng.choice([1.5, 2, True, "s", None, [1.0], 2**64, -(2**63)]) if rng.random() < 0.2
                          else rng.uniform(-9, 9) for _ in range(size)]
    elif roll < 0.9:
        tensor["parameters"] = {"binary_data_size": rng.choice([0, 4, 8, 12, 7, -4, 2**62, "4", 1.5])}
    return tensor


def v2_body(rng: random.Random) -> tuple[bytes, dict]:
    """(body, headers): JSON, valid or not, with binary tensor data after it sometimes."""
    roll = rng.random()
    valid = rng.choice(V2_VALID).encode()
    if roll < 0.15:
        doc = valid
    elif roll < 0.45:
        request = {"inputs": [v2_tensor(rng) for _ in range(rng.choice([0, 1, 1, 1, 2]))]}
        if rng.random() < 0.3:
            request["outputs"] = [{"name": rng.choice(["y", "y2", "nope", 3]),
                                   "parameters": {"binary_data": rng.choice([True, False, 1])}}]
        if rng.random() < 0.3:
            request["parameters"] = {rng.choice(["signature_name", "binary_data_output"]):
                                     rng.choice(["predict_x_y_y2", "nope", 1, True, None])}
        if rng.random() < 0.1:
            request["id"] = rng.choice(["q", 7, None])
        doc = json.dumps(request).encode()
    elif roll < 0.6:
        doc = v2_json(rng).encode()
    elif roll < 0.8:
        doc = mutated(rng, valid)
    else:
        doc = valid[:rng.randrange(len(valid))]
    if rng.random() < 0.35:
        binary = rng.randbytes(rng.choice([0, 1, 4, 8, 12, 13, 100]))
        length = rng.choice([str(len(doc))] * 4 + ["0", "-1", "x", str(len(doc) + len(binary) + 1), " 3", "1e3"])
        return doc + binary, {"Inference-Header-Content-Length": length}
    return doc, {}


def v2_path(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(["/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/v2/health", "/v2/models",
                           "/v2/models/", "/v2//models/half_plus_two", "/v2/health/live/x"])
    name = rng.choice([MODEL] * 6 + ["nope", "half%5Fplus%5Ftwo", segment(rng)])
    if rng.random() < 0.4:
        name += "/versions/" + rng.choice(["1", "0", "2", "00001", str(2**63), "1" * 30, "-1", "x", "%31",
                                           segment(rng)])
    verb = rng.choice(["/infer"] * 6 + ["/ready"] * 2 + ["", "/", "/infer/x", "/" + segment(rng)])
    return "/v2/models/" + name + verb


def v2_rest_requests(rng: random.Random, count: int) -> list[tuple[str, str, bytes, dict]]:
    requests = []
    for _ in range(count):
        target = v2_path(rng)[:4000]
        method = "POST" if target.endswith("/infer") and rng.random() < 0.85 else rng.choice(METHODS)
        data, headers = v2_body(rng) if method == "POST" else (b"", {})
        requests.append((method, target, data, headers))
    return requests


def v2_grpc_requests(rng: random.Random, count: int) -> list:
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb

    fields = ["fp32_contents"] * 4 + ["bool_contents", "int_contents", "int64_contents", "uint_contents",
                                      "uint64_contents", "fp64_contents", "bytes_contents"]
    requests = []
    for _ in range(count):
        roll = rng.random()
        name = rng.choice([MODEL] * 6 + ["nope", ""])
        version = rng.choice([""] * 5 + ["1", "2", "x", str(2**63), "\u00e9"])
        if roll < 0.1:
            requests.append(("ModelMetadata", pb.ModelMetadataRequest(name=name, version=version)))
            continue
        if roll < 0.2:
            requests.append(("ModelReady", pb.ModelReadyRequest(name=name, version=version)))
            continue
        request = pb.ModelInferRequest(model_name=name, model_version=version, id=rng.choice(["", "q"]))
        raw = rng.random() < 0.3
        for _ in range(rng.choice([0, 1, 1, 1, 2])):
            shape = [rng.choice([0, 1, 1, 2, 3, -1, 2**40, 2**62]) for _ in range(rng.choice([0, 1, 2, 2]))]
            tensor = request.inputs.add(name=rng.choice(["x"] * 5 + ["y", ""]), datatype=rng.choice(DATATYPES),
                                        shape=shape)
            if raw:
                request.raw_input_contents.append(rng.randbytes(rng.choice([0, 1, 4, 8, 12, 16])))
            elif rng.random() < 0.9:
                field = rng.choice(fields)
                n = rng.choice([0, 1, 2, 3, 6])
                if field == "bytes_contents":
                    getattr(tensor.contents, field).extend(rng.randbytes(3) for _ in range(n))
                elif field == "bool_contents":
                    getattr(tensor.contents, field).extend(rng.random() < 0.5 for _ in range(n))
                elif field in ("fp32_contents", "fp64_contents"):
                    getattr(tensor.contents, field).extend(rng.uniform(-9, 9) for _ in range(n))
                else:
                    top = {"int_contents": 2**31, "int64_contents": 2**63}.get(field)
                    low, high = (-top, top - 1) if top else (0, 2**32 - 1 if field == "uint_contents" else 2**64 - 1)
                    getattr(tensor.contents, field).extend(rng.randint(low, high) for _ in range(n))
        if raw and rng.random() < 0.2:
            request.raw_input_contents.append(b"extra")
        if rng.random() < 0.2:
            request.outputs.add(name=rng.choice(["y", "y2", "nope", ""]))
        if rng.random() < 0.2:
            parameter = request.parameters["signature_name"]
            if rng.random() < 0.8:
                parameter.string_param = rng.choice(["predict_x_y_y2", "classify_x_to_y", "nope", ""])
            else:
                parameter.int64_param = 1
        requests.append(("ModelInfer", request))
    return requests


def send_v2_grpc(target: str, requests, counts: collections.Counter, violations: list) -> None:
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for start in range(0, len(requests), 32):
            batch = requests[start:start + 32]
            futures = [getattr(stub, method).future(r, timeout=60) for method, r in batch]
            for (method, request), future in zip(batch, futures):
                code = future.code()
                counts[code.name] += 1
                if code in BAD_GRPC:
                    violations.append((method, code.name, future.details(), str(request)[:400]))


@pytest.mark.timeout(120)
def test_fuzz_open_inference_protocol(exported, start_server):
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2 as pb
    from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc as pb_grpc

    server = start_server([f"--model_base_path={exported / 'hp2'}", f"--model_name={MODEL}"])
    rng = random.Random(SEED + 2)
    rest_counts, grpc_counts, violations = collections.Counter(), collections.Counter(), []
    asyncio.run(send_rest(server.rest, v2_rest_requests(rng, V2_REST_REQUESTS), rest_counts, violations))
    send_v2_grpc(server.grpc_target, v2_grpc_requests(rng, V2_GRPC_REQUESTS), grpc_counts, violations)
    summary = (f"V2 REST {sum(rest_counts.values())} requests: {dict(sorted(rest_counts.items()))}; "
               f"V2 gRPC {sum(grpc_counts.values())} requests: {dict(sorted(grpc_counts.items()))}")
    print("\nfuzz:", summary)

    assert not violations, f"{len(violations)} bad answers, first: {violations[:5]}\n{summary}"
    assert sum(rest_counts.values()) == V2_REST_REQUESTS and sum(grpc_counts.values()) == V2_GRPC_REQUESTS
    assert rest_counts[200] and grpc_counts["OK"], summary  # some requests were valid and ran
    assert server.process.proc.poll() is None, summary
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1.0, 2.0, 5.0]}]}
    status, answer = call_json(server, "POST", f"/v2/models/{MODEL}/infer", doc)
    assert (status, answer["outputs"][0]["data"]) == (200, [2.5, 3.0, 4.5]), summary
    with grpc.insecure_channel(server.grpc_target) as channel:
        request = pb.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="x", datatype="FP32", shape=[2, 1]).contents.fp32_contents.extend([1.0, 3.0])
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        assert np.frombuffer(reply.raw_output_contents[0], "<f4").tolist() == [2.5, 3.5], summary
