"""The Open Inference Protocol's REST API (KServe V2, inference_rest.md) on the REST port, beside
TF Serving's /v1: routes in the same table, the same data plane, runner, timeouts and metrics.

    GET  /v2                                   server metadata
    GET  /v2/health/live | /v2/health/ready    liveness; readiness (every model has a version AVAILABLE)
    GET  /v2/models/{m}[/versions/{v}]         model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready   model readiness
    POST /v2/models/{m}[/versions/{v}]/infer   inference, JSON or with the binary tensor data extension

The mapping to TF models (datatypes, versions, signatures) is codecs/oip.py's. Errors are
{"error": "..."} with rest.HTTP_STATUS's status for the ServingError code; a path under /v2 that
no route takes is 404, a known path with the wrong method 405.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from concurrent.futures import Future
from typing import Optional
from urllib.parse import unquote

import orjson
from aiohttp import web

from pyserving.codecs import oip
from pyserving.core.dataplane import DataPlane, Prepared
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.protocols.rest import HTTP_STATUS, INLINE_BODY_BYTES, INLINE_OUTPUT_ELEMENTS, RestApi

logger = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
_MODEL = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
ROUTES = (  # (method, pattern, handler name, metrics API name)
    ("POST", _MODEL + r"/infer", "_infer", "ModelInfer"),
    ("GET", _MODEL + r"/ready", "_model_ready", "ModelReady"),
    ("GET", _MODEL, "_model_metadata", "ModelMetadata"),
    ("GET", r"/v2/health/live", "_live", "ServerLive"),
    ("GET", r"/v2/health/ready", "_server_ready", "ServerReady"),
    ("GET", r"/v2/?", "_server_metadata", "ServerMetadata"),
)
V2_RE = re.compile(r"/v2(?:/.*)?")


class OipRest:
    """The /v2 handlers; register() adds them to a RestApi's route table."""

    def __init__(self, rest: RestApi, data_plane: DataPlane, metrics):
        self._rest = rest
        self._data = data_plane
        self._metrics = metrics
        self._version = oip.server_version()

    def register(self) -> None:
        for method, pattern, handler, api in ROUTES:
            self._rest.add_route(method, pattern, functools.partial(self._handle, getattr(self, handler), api))
        self._rest.add_route(None, V2_RE, self._unrouted)

    # ---- plumbing ---------------------------------------------------------------------------
    def _json(self, status: int, doc) -> web.Response:
        return self._rest.json_response(status, orjson.dumps(doc))

    def _error(self, error: ServingError) -> web.Response:
        return self._json(HTTP_STATUS.get(error.code, 500), {"error": error.message})

    async def _unrouted(self, request: web.BaseRequest, match: re.Match) -> web.Response:
        path = match.string
        if any(re.fullmatch(pattern, path) for _m, pattern, _h, _a in ROUTES):
            allowed = sorted({m for m, pattern, _h, _a in ROUTES if re.fullmatch(pattern, path)})
            response = self._json(405, {"error": f"Method {request.method} is not allowed on {path}; use "
                                                 f"{' or '.join(allowed)}"})
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return self._json(404, {"error": f"No Open Inference Protocol endpoint at {request.method} {path}"})

    async def _handle(self, handler, api: str, request: web.BaseRequest, match: re.Match) -> web.StreamResponse:
        started, code = time.perf_counter(), Code.OK
        groups = match.groupdict()
        name = unquote(groups.get("name") or "")
        try:
            response = await handler(request, name, unquote(groups.get("version") or ""))
        except ServingError as exc:
            response, code = self._error(exc), exc.code
        except Exception as exc:  # a bug must cost one request, not the server
            logger.exception("OIP REST handler failed for %s %s", request.method, match.string)
            response, code = self._error(ServingError(Code.INTERNAL, f"Internal error: {exc}")), Code.INTERNAL
        self._metrics.observe_request(name, api, "REST", code.name, time.perf_counter() - started)
        return response

    async def _in_pool(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._rest.pool, fn, *args)

    # ---- health and metadata --------------------------------------------------------------
    async def _live(self, request, name: str, version: str) -> web.Response:
        return self._json(200, {"live": True})

    async def _server_ready(self, request, name: str, version: str) -> web.Response:
        ready = self._data.server_ready()
        return self._json(200 if ready else 503, {"ready": ready})

    async def _server_metadata(self, request, name: str, version: str) -> web.Response:
        return self._json(200, {"name": oip.SERVER_NAME, "version": self._version, "extensions": list(oip.EXTENSIONS)})

    async def _model_ready(self, request, name: str, version: str) -> web.Response:
        ready = self._data.model_ready(oip.model_spec(name, version))
        return self._json(200 if ready else 503, {"name": name, "ready": ready})

    async def _model_metadata(self, request, name: str, version: str) -> web.Response:
        described = await self._in_pool(self._data.describe, oip.model_spec(name, version))
        return self._json(200, model_metadata(described))

    # ---- inference ----------------------------------------------------------------------------
    async def _infer(self, request: web.BaseRequest, name: str, version: str) -> web.Response:
        body = await self._rest.read_body(request)
        header_length = request.headers.get(HEADER_LENGTH)
        if len(body) <= INLINE_BODY_BYTES:
            started = self._start(name, version, body, header_length, False)
        else:
            started = await self._in_pool(self._start, name, version, body, header_length, True)
        prepared, future, answer = started
        outputs = await self._rest.completions.result(future, self._rest.timeout_s)
        if sum(v.size for v in outputs.values()) > INLINE_OUTPUT_ELEMENTS:
            return await self._in_pool(answer.response, prepared, outputs)
        return answer.response(prepared, outputs)

    def _start(self, name: str, version: str, body: bytes, header_length: Optional[str],
               inline: bool) -> tuple[Prepared, Future, "_Answer"]:
        """Split the body, parse its JSON, lease the version, decode against its signature, submit."""
        doc, binary = split_body(body, header_length)
        spec = oip.model_spec(name, version, _parameters(doc.get("parameters"), "request"))
        with self._data.prepare(spec) as prepared:
            inputs = decode_inputs(doc.get("inputs"), binary, prepared.signature.inputs)
            answer = _Answer(self._rest, doc)
            return prepared, prepared.submit(inputs, answer.names, self._rest.timeout_s, inline), answer


class _Answer:
    """What a request asked of its answer: the id to echo, which outputs, and which as binary."""

    def __init__(self, rest: RestApi, doc: dict):
        self._rest = rest
        self.id = doc.get("id")
        if self.id is not None and not isinstance(self.id, str):
            raise invalid_argument("'id' must be a string")
        default_binary = _parameters(doc.get("parameters"), "request").get("binary_data_output", False)
        if not isinstance(default_binary, bool):
            raise invalid_argument("Parameter 'binary_data_output' must be a boolean")
        requested = doc.get("outputs") or []
        if not isinstance(requested, list):
            raise invalid_argument("'outputs' must be a list of {\"name\": ...} objects")
        self.names: list[str] = []
        self._binary: dict[str, bool] = {}
        self._default_binary = default_binary
        for item in requested:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise invalid_argument("Each requested output must be an object with a string 'name'")
            binary = _parameters(item.get("parameters"), f"output '{item['name']}'").get("binary_data", default_binary)
            if not isinstance(binary, bool):
                raise invalid_argument(f"Output '{item['name']}': parameter 'binary_data' must be a boolean")
            self.names.append(item["name"])
            self._binary[item["name"]] = binary

    def response(self, prepared: Prepared, outputs) -> web.Response:
        doc = {"model_name": prepared.model_name, "model_version": str(prepared.version)}
        if self.id is not None:
            doc["id"] = self.id
        tensors, blobs = [], []
        for name, array in outputs.items():
            tensor = {"name": name, "datatype": oip.datatype_of(array), "shape": oip.output_shape(array)}
            if self._binary.get(name, self._default_binary):
                blob = oip.to_raw(array)
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = oip.to_json_data(array)
            tensors.append(tensor)
        doc["outputs"] = tensors
        text = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        if not blobs:
            return self._rest.json_response(200, text)
        response = self._rest.json_response(200, b"".join([text, *blobs]))
        response.headers["Content-Type"] = "application/octet-stream"
        response.headers[HEADER_LENGTH] = str(len(text))
        return response


def _parameters(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_argument(f"The {what}'s 'parameters' must be an object")
    return value


def split_body(body: bytes, header_length: Optional[str]) -> tuple[dict, bytes]:
    """The request's JSON object and the binary data after it (Inference-Header-Content-Length)."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.strip().isdigit():
            raise invalid_argument(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length!r}")
        size = int(header_length)
        if size > len(body):
            raise invalid_argument(f"{HEADER_LENGTH} is {size} but the body holds only {len(body)} bytes")
        json_part, binary = body[:size], body[size:]
    if not json_part:
        raise invalid_argument("The request body holds no JSON object")
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise invalid_argument(f"Malformed JSON in the request: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid_argument("The request must be a JSON object")
    return doc, binary


def decode_inputs(items, binary: bytes, signature_inputs) -> dict:
    """The request's inputs against the signature's: JSON `data`, or `binary_data_size` bytes
    taken in order from the binary part, which they must use up exactly."""
    if not isinstance(items, list) or not items:
        raise invalid_argument("'inputs' must be a non-empty list of tensors")
    inputs, offset = {}, 0
    for item in items:
        if not isinstance(item, dict):
            raise invalid_argument("Each input must be a JSON object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        count = oip.check_input(name, datatype, shape, signature_inputs)
        if name in inputs:
            raise invalid_argument(f"Input '{name}' is given twice")
        size = _parameters(item.get("parameters"), f"input '{name}'").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise invalid_argument(f"Input '{name}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise invalid_argument(f"Input '{name}': binary_data_size {size} runs past the binary data "
                                       f"({len(binary) - offset} bytes left)")
            if "data" in item:
                raise invalid_argument(f"Input '{name}' has both 'data' and binary_data_size")
            inputs[name] = oip.from_raw(name, datatype, shape, count, binary[offset:offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = oip.from_json(name, datatype, shape, count, item["data"])
        else:
            raise invalid_argument(f"Input '{name}' has neither 'data' nor a binary_data_size parameter")
    if offset != len(binary):
        raise invalid_argument(f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size")
    return inputs


def model_metadata(described) -> dict:
    return {
        "name": described.model_name,
        "versions": [str(v) for v in described.versions],
        "platform": described.platform,
        "inputs": oip.tensor_metadata(described.signature.inputs),
        "outputs": oip.tensor_metadata(described.signature.outputs),
    }

