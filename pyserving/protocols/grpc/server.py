"""The gRPC server: grpc.aio on an event loop thread of its own, driven from plain threads.

build_server puts servicers.py's PredictionService and ModelService, oip.py's
inference.GRPCInferenceService (and, when asked, the grpc.health.v1 service) on one grpc.aio
server; LoopServer binds, starts and stops it for the app, which runs on plain threads.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
from concurrent import futures
from typing import Callable, Optional, Sequence

import grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from pyserving.config_files import SslConfig
from pyserving.core.dataplane import DataPlane
from pyserving.errors import Code, ServingError, invalid_argument
from pyserving.protocols.completions import Completions
from pyserving.protocols.grpc import oip
from pyserving.protocols.grpc.oip_pb import open_inference_grpc_pb2_grpc
from pyserving.protocols.grpc.servicers import BlockingPredictionServicer, ModelServicer, PredictionServicer
from pyserving.protocols.loops import run_until_stopped

logger = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1


def channel_arguments(text: str) -> list[tuple[str, object]]:
    """--grpc_channel_arguments `k=v,k=v`; values that parse as ints are passed as ints."""
    args: list[tuple[str, object]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise invalid_argument(f"Invalid gRPC channel argument (expected key=value): {item}")
        try:
            args.append((key, int(value)))
        except ValueError:
            args.append((key, value))
    return args


HEALTH_SERVICES = ("", "tensorflow.serving.ModelService", "tensorflow.serving.PredictionService",
                   "ModelService", "PredictionService", "inference.GRPCInferenceService")


def draining_health():
    """The health servicer of --enable_grpc_healthcheck_service (grpc_health imported only then)."""
    from grpc_health.v1 import health

    class DrainingHealth(health.aio.HealthServicer):
        """grpc.health.v1 on the server's loop, whose Watch streams end once the server is going
        away (after they said NOT_SERVING): open ones would otherwise hold the drain for its whole
        grace period, as the stop waits for every RPC."""

        def __init__(self):
            super().__init__()
            self._draining = asyncio.Event()

        async def Watch(self, request, context):
            watch = asyncio.ensure_future(super().Watch(request, context))
            draining = asyncio.ensure_future(self._draining.wait())
            await asyncio.wait({watch, draining}, return_when=asyncio.FIRST_COMPLETED)
            draining.cancel()
            if not watch.done():
                await asyncio.sleep(0.05)  # its NOT_SERVING is written first
                watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

        async def enter_graceful_shutdown(self) -> None:
            await super().enter_graceful_shutdown()
            self._draining.set()

    return DrainingHealth()


class LoopServer:
    """A grpc.aio server on an event loop thread of its own, driven from plain threads.

    The app calls listen() (binds, starts, logs as TF Serving does) and stop(grace).
    """

    def __init__(self, make_server: Callable[[], "grpc.aio.Server"], pool: futures.ThreadPoolExecutor,
                 health=None):
        self._pool = pool
        self.health = health  # the grpc.health.v1 servicer, when --enable_grpc_healthcheck_service
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=run_until_stopped, args=(self._loop,), name="grpc-loop", daemon=True)
        self._thread.start()
        self._server = self._on_loop(make_server)

    def _on_loop(self, fn, *args):
        async def call():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def listen(self, port: int, socket_path: str = "", ssl: Optional[SslConfig] = None, host: str = "0.0.0.0",
               private_port: int = 0) -> None:
        """Serve on host:port (0: not on TCP), and on a UNIX socket when given; TLS with `ssl`.
        private_port: also on 127.0.0.1:private_port (a worker's own port, pyserving/worker.py)."""
        if private_port and not self._bind(self._server.add_insecure_port, f"127.0.0.1:{private_port}"):
            raise ServingError(Code.UNAVAILABLE, f"Could not bind the worker's private gRPC port {private_port}")
        if port:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets
            if ssl is not None:
                credentials = grpc.ssl_server_credentials([(ssl.server_key, ssl.server_cert)],
                                                          root_certificates=ssl.custom_ca,
                                                          require_client_auth=ssl.client_verify)
                bound = self._bind(self._server.add_secure_port, address, credentials)
            else:
                bound = self._bind(self._server.add_insecure_port, address)
            if not bound:
                raise ServingError(Code.UNAVAILABLE, f"Could not bind gRPC port {port}")
        if socket_path:
            self._bind(self._server.add_insecure_port, f"unix:{socket_path}")
        self.start()
        if port:
            logger.info("Running gRPC ModelServer at %s ...", address)
        if socket_path:
            logger.info("Running gRPC ModelServer at UNIX socket %s ...", socket_path)

    def _bind(self, add, *args) -> int:
        try:
            return self._on_loop(add, *args)
        except RuntimeError as exc:  # grpc.aio raises where grpc.Server returned 0
            logger.error("gRPC could not bind %s: %s", args[0], exc)
            return 0

    def start(self) -> None:
        self.run(self._server.start())

    def run(self, coroutine):
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def not_serving(self) -> bool:
        """Tell health-checking clients (gRPC client-side health checking, a `grpc:` probe) that this
        server is going away: every service NOT_SERVING from now on. False without a health service."""
        if self.health is None:
            return False
        self.run(self.health.enter_graceful_shutdown())
        return True

    def stop(self, grace: Optional[float]) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` s, then end and close the loop."""
        self.run(self._server.stop(grace))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False)


SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", oip.SERVICE)
HEALTH_SERVICE = "grpc.health.v1.Health"


def register_service_files() -> None:
    """Put the two services' .proto files in the default descriptor pool, where reflection looks
    them up (describe, FileContainingSymbol). tensorflow-serving-api 2.20 ships them as protoc-3
    era modules that stop under protobuf >= 4 on `DESCRIPTOR.has_options = True`, one line after
    their file has been added to the pool: that registration is all reflection needs, and the
    server never uses these modules otherwise (the *_pb2_grpc stubs do not import them)."""
    for module in ("prediction_service_pb2", "model_service_pb2"):
        try:
            importlib.import_module(f"tensorflow_serving.apis.{module}")
        except AttributeError:
            pass  # registered already; see above


def build_server(
    data_plane: DataPlane,
    metrics,
    max_workers: int,
    channel_args: Sequence[tuple[str, object]] = (),
    tensor_content_outputs: bool = False,
    health: bool = False,
    max_message_bytes: int = INT32_MAX,
    nonblocking_predict: bool = True,
    reuse_port: bool = False,
) -> LoopServer:
    """nonblocking_predict: Predict awaits its run on the loop (pays off with batching, where a
    blocking thread would sit parked until its batch runs); otherwise the whole Predict runs on
    a pool thread, which saves a hand-off per request when every request is its own run.
    reuse_port: SO_REUSEPORT on, for workers sharing the port; off otherwise, so that a second
    server on a port in use fails to bind as TF Serving's does (gRPC turns it on by default,
    grpc/grpc#10755). A grpc.so_reuseport in --grpc_channel_arguments wins (gRPC reads the first
    of two, so ours is left out then)."""
    options = [
        ("grpc.max_receive_message_length", min(max_message_bytes, INT32_MAX)),
        ("grpc.max_send_message_length", INT32_MAX),
        *channel_args,
    ]
    if not any(key == "grpc.so_reuseport" for key, _ in channel_args):
        options.append(("grpc.so_reuseport", 1 if reuse_port else 0))
    pool = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
    health_servicer = draining_health() if health else None
    register_service_files()

    def make_server():
        server = grpc.aio.server(migration_thread_pool=pool, options=options)
        servicer = PredictionServicer if nonblocking_predict else BlockingPredictionServicer
        predictions = servicer(data_plane, Completions(asyncio.get_running_loop()), pool, metrics,
                               tensor_content_outputs, max_elements=max_message_bytes)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(data_plane, metrics), server)
        # The Open Inference Protocol (KServe V2) beside TF Serving's API, on the same port.
        inference = oip.OipServicer if nonblocking_predict else oip.BlockingOipServicer
        open_inference_grpc_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            inference(data_plane, Completions(asyncio.get_running_loop()), pool, metrics), server)
        names = list(SERVICES)
        if health_servicer is not None:
            from grpc_health.v1 import health_pb2_grpc

            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            names.append(HEALTH_SERVICE)
        # Server reflection, as TF Serving links it in since 2.15 (grpc++_reflection): `grpcurl list`
        # and `grpc_cli ls` work against the server with no .proto files at hand.
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        return server

    loop_server = LoopServer(make_server, pool, health_servicer)
    if health_servicer is not None:
        from grpc_health.v1 import health_pb2

        for service in HEALTH_SERVICES:  # set on the loop: the aio servicer's state lives there
            loop_server.run(health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING))
    return loop_server
