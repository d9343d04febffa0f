"""The composition root: flags -> Source -> Manager -> Inference -> REST + gRPC; signals.

Start-up follows TF Serving: listeners open only once every configured model is AVAILABLE; a
model that cannot load is fatal (`Failed to start server. Error: ...`, exit 255). SIGTERM and
SIGINT stop accepting, let in-flight requests finish, unload, and exit 0.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Optional, Sequence

from pyserving import cli, gc_policy
from pyserving.errors import ServingError
from pyserving.flags import BY_NAME

logger = logging.getLogger("pyserving")


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _warn_no_effect(settings, given: Sequence[str]) -> None:
    for name in given:
        flag = BY_NAME[name]
        if flag.support == "no-effect" and getattr(settings, name) != flag.default:
            logger.warning("--%s has no effect in pyserving (accepted for compatibility)", name)


def _session_options(settings) -> dict:
    intra = settings.tensorflow_intra_op_parallelism or settings.tensorflow_session_parallelism
    inter = settings.tensorflow_inter_op_parallelism or settings.tensorflow_session_parallelism
    return {
        "tags": tuple(t.strip() for t in settings.saved_model_tags.split(",") if t.strip()),
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "session_config_text": _read(settings.tensorflow_session_config_file),
        # --prefer_tflite_model: model.tflite wins over saved_model.pb; N interpreters per version.
        "tflite_interpreters": (max(settings.num_tflite_pools, 1) * max(settings.num_tflite_interpreters_per_pool, 1)
                                if settings.prefer_tflite_model else 0),
    }


def _read(path: str) -> str:
    if not path:
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def _load_servable(options: dict, warmup_iterations: Optional[int], metrics, batching, name: str, version: int,
                   path: str):
    """Load one version. `batching(path)`, when given, reads the version's own batching
    parameters before the load (a bad file fails it) and returns what applies them to it."""
    from pyserving.runtime import savedmodel  # TensorFlow loads here, not at import time

    own_batching = batching(path) if batching is not None else None
    tflite_interpreters = options.get("tflite_interpreters")
    if tflite_interpreters and os.path.isfile(os.path.join(path, "model.tflite")):
        from pyserving.runtime import tflite

        servable = tflite.load(path, tflite_interpreters)
    else:
        servable = savedmodel.load(path, **{k: v for k, v in options.items() if k != "tflite_interpreters"})
    servable.model_name = name
    if own_batching is not None:
        own_batching(servable)
    if warmup_iterations is None:
        return servable
    from pyserving import warmup

    records_path = warmup.warmup_path(path)
    if not os.path.exists(records_path):
        logger.info("No warmup data file found at %s", records_path)
        return servable
    started, status = time.monotonic(), "OK"
    try:  # warmup runs during LOADING: a failure fails the load
        warmup.replay(servable, path, savedmodel.read_tfrecords(records_path), warmup_iterations)
    except BaseException as exc:
        status = exc.code.name if isinstance(exc, ServingError) else "UNKNOWN"
        servable.close()
        raise
    finally:
        if metrics is not None:
            metrics.warmup_latency.labels(path, status).observe((time.monotonic() - started) * 1e6)
    return servable


def _batching_params(path: str, num_batch_threads: Optional[int] = None):
    """A BatchingParameters text proto -> BatchingParams; unset fields keep TF's defaults.
    `num_batch_threads` overrides the file's (per-model files: the threads are the server's)."""
    from pyserving.config_protos import BatchingParameters, parse_file
    from pyserving.core.batching import BatchingParams

    proto = parse_file(path, BatchingParameters, "batching parameters")
    values = {name: getattr(proto, name).value for name in
              ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
              if proto.HasField(name)}
    if num_batch_threads is not None:
        values["num_batch_threads"] = num_batch_threads
    if proto.HasField("max_execution_batch_size"):
        values["max_execution_batch_size"] = proto.max_execution_batch_size.value
    return BatchingParams(allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
                          pad_variable_length_inputs=proto.pad_variable_length_inputs,
                          enable_large_batch_splitting=proto.enable_large_batch_splitting.value, **values)


PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


def _per_model_batching(batcher, path: str):
    """--enable_per_model_batching_parameters, as bundle_factory_util.cc reads it: a version
    folder's batching_params.pbtxt replaces the server's batching parameters but its threads;
    a version without one is not batched. Read before the load, so a bad file fails it at once."""
    file = os.path.join(path, PER_MODEL_BATCHING_FILE)
    if os.path.exists(file):
        params = _batching_params(file, batcher.params.num_batch_threads)
        logger.info("Batching requests to %s with its own parameters: %s", path, params)
    else:
        params = None
        logger.info("No %s in %s: its requests are not batched", PER_MODEL_BATCHING_FILE, path)
    return lambda servable: batcher.set_params(servable, params)


def _monitoring(settings):
    """(ServingMetrics, Prometheus path) when --monitoring_config_file enables Prometheus, else (None, None)."""
    if not settings.monitoring_config_file:
        return None, None
    from pyserving.config_protos import MonitoringConfig, parse_file
    from pyserving.protocols.metrics import ServingMetrics, monitoring_path

    path = monitoring_path(parse_file(settings.monitoring_config_file, MonitoringConfig, "monitoring config"))
    if path is None:
        return None, None
    if not settings.rest_api_port:
        raise ServingError(3, "Monitoring (prometheus_config) requires --rest_api_port: metrics are served on the REST port")
    return ServingMetrics(), path


def _model_configs(settings):
    from pyserving.core import config

    if settings.model_config_file:
        return config.read_file(settings.model_config_file)
    return config.single_model(settings.model_name, settings.model_base_path)


def _grpc_credentials(settings):
    if not settings.ssl_config_file:
        return None
    import grpc

    from pyserving.config_protos import SSLConfig, parse_file

    ssl = parse_file(settings.ssl_config_file, SSLConfig, "SSL config")
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode() or None,
        require_client_auth=ssl.client_verify,
    )


class ModelServer:
    """Owns every running part; stop() takes them down in the order that drops no request."""

    def __init__(self, settings):
        from pyserving.core.inference import Inference, pool_submitter, run_direct
        from pyserving.core.server_core import ServerCore

        self.settings = settings
        self.metrics, self.metrics_path = _monitoring(settings)
        self.batcher = None
        if settings.enable_batching:
            from pyserving.core.batching import Batcher, BatchingParams

            params = (_batching_params(settings.batching_parameters_file) if settings.batching_parameters_file
                      else BatchingParams())
            # Models that are not batched (per-model parameters) run on the pool for lone runs.
            self.batcher = Batcher(params, on_batch=self.metrics.observe_batch if self.metrics else None,
                                   solo_threads=max(params.num_batch_threads, settings.rest_api_num_threads))
            logger.info("Batching enabled: %s", self.batcher.params)
        per_model = settings.enable_batching and settings.enable_per_model_batching_parameters
        self.core = ServerCore(
            partial(_load_servable, _session_options(settings),
                    settings.num_request_iterations_for_warmup if settings.enable_model_warmup else None,
                    self.metrics, partial(_per_model_batching, self.batcher) if per_model else None),
            file_system_poll_wait_s=settings.file_system_poll_wait_seconds,
            max_load_retries=settings.max_num_load_retries,
            load_retry_interval_s=max(settings.load_retry_interval_micros, 0) / 1e6,
            allow_labels_for_unavailable=settings.allow_version_labels_for_unavailable_models,
            on_state_change=self._on_state_change,
        )
        self._run_pool = None
        runner = submitter = None
        if self.batcher is not None:
            runner, submitter = self.batcher.run, self.batcher.submit_run
        else:
            # Model runs the REST loop hands off (TF Serving runs them on its request threads;
            # the loop is one thread, so it gets a pool of that many).
            self._run_pool = ThreadPoolExecutor(max_workers=max(1, settings.rest_api_num_threads),
                                                thread_name_prefix="run")
            submitter = pool_submitter(self._run_pool)
        if self.metrics is not None:
            runner = self.metrics.timed_runner(runner or run_direct)
            submitter = self.metrics.timed_submitter(submitter)
        self.inference = Inference(self.core.manager, runner=runner, submitter=submitter,
                                   check_method_name=settings.enable_signature_method_name_check)
        self.grpc_server = None
        self.rest = None
        self._config_poller: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    def _on_state_change(self, model: str, version: int, state, error) -> None:
        if self.metrics is not None:
            self.metrics.on_state_change(model, version, state, error)
        gc_policy.after_state_change(state.name)

    def start(self) -> None:
        s = self.settings
        gc_policy.configure()
        self.core.reload(_model_configs(s))
        self._start_grpc()
        self._start_rest()
        if s.model_config_file and s.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config, name="config-poller", daemon=True)
            self._config_poller.start()
        gc_policy.freeze()

    def _start_grpc(self) -> None:
        from pyserving.protocols import grpc as grpc_protocol

        s = self.settings
        self.grpc_server = grpc_protocol.build_server(
            self.core, self.inference,
            max_workers=self._workers(s.grpc_max_threads),
            channel_args=grpc_protocol.channel_arguments(s.grpc_channel_arguments),
            tensor_content_outputs=s.enable_serialization_as_tensor_content,
            health=s.enable_grpc_healthcheck_service,
            metrics=self.metrics,
            max_message_bytes=s.max_request_size_bytes,
            nonblocking_predict=self.batcher is not None,
        )
        credentials = _grpc_credentials(s)
        if s.port:
            address = f"0.0.0.0:{s.port}"
            bound = (self.grpc_server.add_secure_port(address, credentials) if credentials
                     else self.grpc_server.add_insecure_port(address))
            if not bound:
                raise ServingError(14, f"Could not bind gRPC port {s.port}")
        if s.grpc_socket_path:
            self.grpc_server.add_insecure_port(f"unix:{s.grpc_socket_path}")
        self.grpc_server.start()
        if s.port:
            logger.info("Running gRPC ModelServer at 0.0.0.0:%d ...", s.port)
        if s.grpc_socket_path:
            logger.info("Running gRPC ModelServer at UNIX socket %s ...", s.grpc_socket_path)

    def _workers(self, configured: int) -> int:
        # With batching, a request thread mostly waits for its batch: many cheap waiting threads
        # are what lets concurrent requests meet in one batch.
        return max(configured, 256) if self.batcher is not None else max(configured, 1)

    def _start_rest(self) -> None:
        s = self.settings
        if not s.rest_api_port:
            return
        if s.rest_api_port == s.port:
            logger.error("--rest_api_port cannot be same as --port. Please use a different port for HTTP/REST API. Skipped exporting HTTP/REST API.")
            return
        from pyserving.protocols.rest import RestApi

        self.rest = RestApi(
            self.core.manager, self.inference,
            num_threads=self._workers(s.rest_api_num_threads),
            timeout_ms=s.rest_api_timeout_in_ms,
            enable_cors=s.rest_api_enable_cors_support,
            metrics=self.metrics,
            max_body_bytes=s.max_request_size_bytes,
            extra_routes={self.metrics_path: self._serve_metrics} if self.metrics_path else None,
        )
        self.rest.start(s.rest_api_port)
        logger.info("Exporting HTTP/REST API at:localhost:%d ...", s.rest_api_port)

    async def _serve_metrics(self, request):
        from aiohttp import web

        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def _poll_config(self) -> None:
        from pyserving.core import config

        wait = self.settings.model_config_file_poll_wait_seconds
        path = self.settings.model_config_file
        applied = _read(path)
        last_error = None
        while not self._stopping.wait(wait):
            try:
                text = _read(path)
                if text == applied:
                    continue
                self.core.reload(config.from_proto(config.parse_text(text, path)))
                applied, last_error = text, None
                logger.info("Reloaded model config from %s", path)
            except (ServingError, OSError) as exc:
                # The last good config stays in force and the file is tried again at the next
                # poll (a label may point at a version that is still loading); each distinct
                # error is logged once.
                message = getattr(exc, "message", str(exc))
                if message != last_error:
                    logger.error("Failed to reload model config %s: %s", path, message)
                    last_error = message

    def stop(self, grace_s: float = 10.0) -> None:
        self._stopping.set()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace_s).wait()
        if self.rest is not None:
            self.rest.stop(grace_s)
        if self.batcher is not None:
            self.batcher.stop()
        if self._run_pool is not None:
            self._run_pool.shutdown(wait=True)
        self.core.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    settings, given = cli.parse_or_exit(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    _warn_no_effect(settings, given)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = ModelServer(settings)
    except ServingError as exc:
        print(f"Failed to start server. Error: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 255
    failure: list[BaseException] = []
    started = threading.Event()

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, in the main thread
            failure.append(exc)
        started.set()

    # Start in a thread so that a signal during a long load still stops us cleanly.
    threading.Thread(target=start, name="startup", daemon=True).start()
    while not stop.wait(0.2) and not started.is_set():
        pass
    if failure and not stop.is_set():
        exc = failure[0]
        text = f"{exc.code.name}: {exc.message}" if isinstance(exc, ServingError) else str(exc)
        print(f"Failed to start server. Error: {text}", file=sys.stderr)
        server.stop(0)
        return 255
    while not stop.wait(0.5):
        pass
    logger.info("Shutting down: finishing in-flight requests")
    server.stop()
    logger.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
