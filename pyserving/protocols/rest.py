"""TF Serving's REST API on aiohttp: a route table, JSON codecs, errors as {"error": ...}.

Every request goes through one route table (routes.py): TF Serving's /v1 routes, the monitoring
path and CORS preflight are entries in it, and another API joins them on the same port with
add_route. Handlers only translate: JSON -> data plane -> JSON. A predict is decoded against the
served signature and handed to the runner, and the loop awaits its Future, so no thread sits
parked while a request waits for its batch. Where the decoding runs is the one choice: on the
event loop for small bodies (a thread hop costs more than decoding a few kilobytes of JSON), in
the thread pool for large ones, so the loop never stalls. Status, metadata, classify and regress
run whole in the pool.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Awaitable, Iterable, Optional, Union

from aiohttp import web

from pyserving.codecs import example as example_codec
from pyserving.codecs import json_tensor
from pyserving.core.dataplane import DataPlane
from pyserving.core.signatures import SignatureNotFound
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.protocols import messages
from pyserving.protocols.completions import Completions
from pyserving.protocols.loops import run_until_stopped
from pyserving.protocols.routes import V1_RE, V1_ROUTES, Handler, Route, RouteTable, malformed
from pyserving.types import ModelSpec

logger = logging.getLogger(__name__)

# ServingError code -> HTTP status (http_server.cc ToHTTPStatusCode).
HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}
NOT_FOUND_PAGE = (
    "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
)
# Above these sizes, decoding or encoding moves off the event loop into the thread pool.
INLINE_BODY_BYTES = 64 * 1024
INLINE_OUTPUT_ELEMENTS = 16 * 1024
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# At shutdown, how long open connections may still bring a request after the listener closed.
DRAIN_S = 1.0

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
# Exactly the header http_rest_api_util.cc AddHeaders sets (no charset parameter).
JSON_HEADERS = {"Content-Type": "application/json"}


class RestApi:
    def __init__(
        self,
        data_plane: DataPlane,
        metrics,
        num_threads: int = 8,
        timeout_ms: int = 30000,
        enable_cors: bool = False,
        max_body_bytes: int = 1 << 30,
        metrics_path: Optional[str] = None,
    ):
        self._data = data_plane
        self._metrics = metrics  # ServingMetrics, or NullMetrics when monitoring is off
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_threads), thread_name_prefix="rest")
        self._timeout_s = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self._cors = enable_cors
        self._max_body = max_body_bytes
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._completions: Optional[Completions] = None
        self._runner: Optional[web.ServerRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._draining = False  # set at shutdown: every answer then closes its connection
        self._routes = RouteTable(self._not_found)
        if metrics_path:  # where Prometheus scrapes; first, as it answers GET even under /v1
            self.add_route("GET", re.escape(metrics_path), self._exposition)
        for method, pattern, to_route in V1_ROUTES:  # POST predict first: the hot path
            self.add_route(method, pattern, functools.partial(self._v1, to_route))
        self.add_route("OPTIONS", V1_RE, self._preflight)
        self.add_route(None, V1_RE, self._malformed)  # any other /v1 request: TF Serving's 400

    # ---- what another API on this port shares ------------------------------------------
    @property
    def pool(self) -> ThreadPoolExecutor:
        """Where work too large for the event loop runs."""
        return self._pool

    @property
    def completions(self) -> Completions:
        """Hands finished runs back to the event loop (set once the server runs)."""
        return self._completions

    @property
    def timeout_s(self) -> Optional[float]:
        return self._timeout_s

    # ---- routing ------------------------------------------------------------------------
    def add_route(self, methods: Union[str, Iterable[str], None], pattern: Union[str, re.Pattern],
                  handler: Handler) -> None:
        """Answer a request whose method is in `methods` ("POST", several, or None for any) and
        whose whole raw path matches `pattern` with `await handler(request, match)`, a
        web.StreamResponse. Routes are tried in the order added, so a new API takes paths the
        ones before leave (TF Serving's take the monitoring path and every /v1/... path)."""
        self._routes.add(methods, pattern, handler)

    def handle(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """Every request: the answer of the first route that takes it, or TF Serving's 404 page.
        The handler's coroutine is handed to aiohttp to await: no coroutine of handle's own."""
        return self._routes.dispatch(request.method, request.rel_url.raw_path, request)

    async def _not_found(self, request: web.BaseRequest, match: None) -> web.Response:
        return web.Response(status=404, text=NOT_FOUND_PAGE, content_type="text/html")

    async def _exposition(self, request: web.BaseRequest, match: re.Match) -> web.Response:
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": PROMETHEUS_TYPE})

    async def _preflight(self, request: web.BaseRequest, match: re.Match) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not re.match(r"https?://", origin):
            return self._error(invalid_argument("Origin header is missing in CORS preflight"))
        return web.Response(status=200, headers=CORS_HEADERS if self._cors else None)

    async def _malformed(self, request: web.BaseRequest, match: re.Match) -> web.Response:
        return self._error(malformed(request.method, match.string))

    # ---- /v1 request handling ---------------------------------------------------------------
    def json_response(self, status: int, text: Union[str, bytes]) -> web.Response:
        """A JSON answer as every /v1 answer is sent: CORS headers when enabled, and closing its
        connection while the server drains."""
        headers = {**CORS_HEADERS, **JSON_HEADERS} if self._cors else JSON_HEADERS
        response = web.Response(status=status, body=text if isinstance(text, bytes) else text.encode(),
                                headers=headers)
        if self._draining:
            response.force_close()
        return response

    def _error(self, error: ServingError) -> web.Response:
        return self.json_response(HTTP_STATUS.get(error.code, 500), json.dumps({"error": error.message}))

    async def _v1(self, to_route, request: web.BaseRequest, match: re.Match) -> web.Response:
        """A /v1 request V1_ROUTES take: to_route(match) -> the data plane -> JSON, every error
        answered as {"error": ...}."""
        started = time.perf_counter()
        route = None
        try:
            route = to_route(match)
            body = await self.read_body(request) if request.method == "POST" else b""
            if route.kind == "predict":
                text = await self._predict(route, body)
            else:
                text = await asyncio.get_running_loop().run_in_executor(self._pool, self._process, route, body)
            response, code = self.json_response(200, text), Code.OK
        except ServingError as exc:
            response, code = self._error(exc), exc.code
        except Exception as exc:  # a bug must cost one request, not the server
            logger.exception("REST handler failed for %s %s", request.method, match.string)
            response, code = self._error(ServingError(Code.INTERNAL, f"Internal error: {exc}")), Code.INTERNAL
        if route is not None:
            self._metrics.observe_request(route.name, route.kind, "REST", code.name, time.perf_counter() - started)
        return response

    async def read_body(self, request: web.BaseRequest) -> bytes:
        """A request's body within --max_request_size_bytes, for every REST API (/v1 and /v2): one
        declared larger, or found larger while read (chunked), is RESOURCE_EXHAUSTED."""
        if request.content_length is not None and request.content_length > self._max_body:
            raise ServingError(Code.RESOURCE_EXHAUSTED, self._too_large(request.content_length))
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:  # aiohttp stops at the limit: the whole size is unknown
            raise ServingError(Code.RESOURCE_EXHAUSTED,
                               f"Request body exceeds the limit of {self._max_body} bytes") from None

    def _too_large(self, size) -> str:
        return f"Request body of {size} bytes exceeds the limit of {self._max_body} bytes"

    def _process(self, route: Route, body: bytes) -> str:
        """Runs in the thread pool: status, metadata, classify and regress, start to end."""
        if route.kind == "status":
            # TF Serving parses a label here but ignores it: all versions are returned.
            statuses = self._data.status(route.name, route.version)
            return json.dumps(messages.to_json_dict(messages.status_response(statuses)))
        if route.kind == "metadata":
            result = self._data.metadata(ModelSpec(route.name, version=route.version, label=route.label))
            return json.dumps(messages.metadata_json_dict(result.model_name, result.version, result.value))
        doc = json_tensor.parse(body)
        spec = ModelSpec(route.name, route.version, route.label, json_tensor.signature_name(doc))
        examples = example_codec.examples_from_json(doc)
        if route.kind == "classify":
            return json_tensor.encode_classify(self._data.classify(spec, examples, self._timeout_s).value)
        return json_tensor.encode_regress(self._data.regress(spec, examples, self._timeout_s).value)

    async def _predict(self, route: Route, body: bytes) -> str:
        """edge -> codec -> data plane -> runner ... -> codec -> edge; large bodies decode in the pool."""
        if len(body) <= INLINE_BODY_BYTES:
            fmt, future = self._start_predict(route, body, False)
        else:
            fmt, future = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._start_predict, route, body, True)
        outputs = await self._completions.result(future, self._timeout_s)
        if sum(v.size for v in outputs.values()) > INLINE_OUTPUT_ELEMENTS:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, json_tensor.encode_predict, outputs, fmt)
        return json_tensor.encode_predict(outputs, fmt)

    def _start_predict(self, route: Route, body: bytes, inline: bool) -> tuple[str, Future]:
        """Parse, lease the version, decode against its signature, submit: (answer format, outputs)."""
        doc = json_tensor.parse(body)
        spec = ModelSpec(route.name, route.version, route.label, json_tensor.signature_name(doc))
        try:
            prepared = self._data.prepare(spec)
        except SignatureNotFound as exc:  # REST words it differently from gRPC (http_rest_api_handler.cc)
            raise invalid_argument(
                f'Serving signature name: "{exc.signature_name}" not found in signature def') from None
        with prepared:
            fmt, inputs = json_tensor.decode_predict(doc, prepared.signature)
            return fmt, prepared.submit(inputs, (), self._timeout_s, inline)

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, port: int, host: str = "0.0.0.0", reuse_port: bool = False, private_port: int = 0) -> None:
        """Listen on `port` from a thread of its own; returns once the socket is bound.
        reuse_port: SO_REUSEPORT, for workers sharing the port; private_port: also listen on
        127.0.0.1:private_port (a worker's own port, pyserving/worker.py)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._completions = Completions(loop)
            asyncio.set_event_loop(loop)
            try:
                # aiohttp's low-level server: handle() routes every path by its own table, so the
                # Application's router and middleware chain would only add per-request work.
                def make_request(message, payload, protocol, writer, task):
                    return web.BaseRequest(message, payload, protocol, writer, task, loop,
                                           client_max_size=self._max_body)

                server = web.Server(self.handle, request_factory=make_request, access_log=None, loop=loop)
                self._runner = web.ServerRunner(server, handle_signals=False)
                loop.run_until_complete(self._runner.setup())
                if private_port:
                    loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", private_port,
                                                        reuse_address=True, backlog=1024).start())
                site = web.TCPSite(self._runner, host, port, reuse_address=True, reuse_port=reuse_port or None,
                                   backlog=1024)
                loop.run_until_complete(site.start())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                self._runner = None  # nothing to clean up: stop() becomes a no-op
                loop.close()
                ready.set()
                return
            ready.set()
            run_until_stopped(loop)

        self._thread = threading.Thread(target=run, name="rest-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    async def _shutdown(self, grace_s: float) -> None:
        """Close the listeners, then drain: a connection accepted just before may still be
        sending its request, which aiohttp's cleanup alone would drop unanswered. Answers during
        the drain close their connection; idle keep-alive connections get DRAIN_S at most."""
        for site in list(self._runner.sites):
            await site.stop()
        self._draining = True
        server = self._runner.server
        deadline = time.monotonic() + min(grace_s, DRAIN_S)
        while server is not None and server.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self._runner.cleanup()  # waits for handlers still running, then closes the rest

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to grace_s), then close."""
        if self._loop is None or self._runner is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(grace_s), self._loop)
        try:
            future.result(timeout=grace_s + 5)
        except Exception as exc:
            logger.warning("REST server did not shut down cleanly: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)
