"""The composition root: Settings -> loader, core, runner, data plane -> REST + gRPC.

Start-up follows TF Serving: listeners open only once every configured model is AVAILABLE (a
model that cannot load makes start() raise); stop() stops accepting, lets in-flight requests
finish, and unloads. cli.main runs it as a process, with TF Serving's exit codes and signals.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from pyserving import config_files, gc_policy
from pyserving.core import config
from pyserving.core.batching import Batcher, BatchingParams
from pyserving.core.dataplane import DataPlane
from pyserving.core.runners import PoolRunner
from pyserving.core.server_core import ServerCore
from pyserving.errors import Code, ServingError
from pyserving.metrics import NullMetrics, ServingMetrics
from pyserving.runtime.loader import Loader, SessionOptions
from pyserving.settings import Settings
from pyserving.storage.cache import CachingLoader, VersionCache
from pyserving.worker import StatusBoard, Worker

logger = logging.getLogger("pyserving")
HEALTH_NOTICE_S = 0.5  # NOT_SERVING before the edges stop: a health watch hears it within milliseconds


class ModelServer:
    """Owns every running part; stop() takes them down in the order that drops no request."""

    def __init__(self, settings: Settings, worker: Optional[Worker] = None):
        s = self.settings = settings
        self.worker = worker  # one of several sharing the ports (pyserving/supervisor.py), or None
        self.board = None
        self.metrics_path = config_files.prometheus_path(s.monitoring_config_file) if s.monitoring_config_file else None
        if self.metrics_path and not s.rest_api_port:
            raise ServingError(Code.INVALID_ARGUMENT, "Monitoring (prometheus_config) requires --rest_api_port: "
                                                      "metrics are served on the REST port")
        self.metrics = ServingMetrics() if self.metrics_path else NullMetrics()
        self._ssl = config_files.ssl(s.ssl_config_file) if s.ssl_config_file else None  # read before any load
        self.batcher = self._run_pool = None
        if s.enable_batching:
            params = (config_files.batching(s.batching_parameters_file) if s.batching_parameters_file
                      else BatchingParams())
            # Models that are not batched (per-model parameters) run on its pool for lone runs.
            self.batcher = Batcher(params, on_batch=self.metrics.observe_batch,
                                   solo_threads=max(params.num_batch_threads, s.rest_api_num_threads))
            logger.info("Batching enabled: %s", params)
        else:  # TF Serving runs models on its request threads; the REST loop is one thread, so a pool
            self._run_pool = ThreadPoolExecutor(max(1, s.rest_api_num_threads), thread_name_prefix="run")
        session = SessionOptions(s.saved_model_tag_set, s.intra_op_threads, s.inter_op_threads,
                                 config_files.session_config_text(s.tensorflow_session_config_file))
        loader = Loader(session, self.metrics, s.tflite_interpreters, s.warmup_iterations, self.batcher,
                        per_model_batching=s.enable_per_model_batching_parameters)
        # Bucket versions are copied to a local cache first (pyserving/storage/cache.py).
        self.cache = VersionCache.from_env()
        self.core = ServerCore(CachingLoader(loader, self.cache),
                               file_system_poll_wait_s=s.file_system_poll_wait_seconds,
                               max_load_retries=s.max_num_load_retries, load_retry_interval_s=s.load_retry_interval_s,
                               allow_labels_for_unavailable=s.allow_version_labels_for_unavailable_models,
                               on_state_change=self._on_state_change)
        runner = self.batcher or PoolRunner(self._run_pool)
        if worker is not None:
            self.board = StatusBoard(worker, self._statuses)
            self.board.publish(serving=False)
        self.data_plane = DataPlane(self.core, self.metrics.timed(runner), self.metrics,
                                    check_method_name=s.enable_signature_method_name_check,
                                    status_view=self.board.merged if self.board is not None else None)
        self.grpc_server = self.rest = None

    def _on_state_change(self, model: str, version: int, state, error) -> None:
        self.metrics.on_state_change(model, version, state, error)
        gc_policy.after_state_change(state.name)
        if self.board is not None:
            self.board.publish()

    def _statuses(self) -> dict:
        """Every model's version statuses in this process (what a worker publishes)."""
        found = {}
        for name in self.core.manager.model_names():
            try:
                found[name] = self.core.manager.status(name)
            except ServingError:  # no version yet
                found[name] = []
        return found

    def start(self) -> None:
        s = self.settings
        gc_policy.configure()
        # Import TensorFlow and the protocol stacks now, and freeze what they built: before any
        # model version exists, so that no version is frozen with them (pyserving/gc_policy.py).
        from pyserving.protocols import rest  # noqa: F401
        from pyserving.protocols.grpc import server  # noqa: F401
        from pyserving.runtime import savedmodel  # noqa: F401
        gc_policy.freeze_imports()
        if s.model_config_file:
            text = config.read_text(s.model_config_file)
            self.core.reload(config.models_from_text(text, s.model_config_file))
            if self.worker is not None and s.polls_model_config:
                text = self._catch_up(text)
        else:
            self.core.reload(config.single_model(s.model_name, s.model_base_path))
        self._start_grpc()
        self._start_rest()
        if self.board is not None:
            self.board.publish(serving=True)
        if s.polls_model_config:
            self.core.poll_config_file(s.model_config_file, s.model_config_file_poll_wait_seconds, text)

    def _catch_up(self, text: str, rounds: int = 3) -> str:
        """A worker (re)started while a rollout runs: the config may have changed during its
        load. Load the config as it is now before opening the shared ports, so that a worker
        joining after a rollout step was acknowledged never answers with the step before."""
        s = self.settings
        for _ in range(rounds):
            newer = config.read_text(s.model_config_file)
            if newer == text:
                break
            logger.info("%s changed while loading: loading it as it is now", s.model_config_file)
            text = newer
            self.core.reload(config.models_from_text(text, s.model_config_file))
        return text

    def _workers(self, configured: int) -> int:
        # With batching, a request thread mostly waits for its batch: many cheap waiting threads
        # are what lets concurrent requests meet in one batch.
        return max(configured, 256) if self.batcher is not None else max(configured, 1)

    def _start_grpc(self) -> None:
        from pyserving.protocols.grpc.server import build_server, channel_arguments

        s = self.settings
        self.grpc_server = build_server(
            self.data_plane, self.metrics, max_workers=self._workers(s.grpc_max_threads),
            channel_args=channel_arguments(s.grpc_channel_arguments),
            tensor_content_outputs=s.enable_serialization_as_tensor_content,
            health=s.enable_grpc_healthcheck_service, max_message_bytes=s.max_request_size_bytes,
            nonblocking_predict=self.batcher is not None, reuse_port=self.worker is not None)
        self.grpc_server.listen(s.port, s.grpc_socket_path, self._ssl, host=s.listen_host,
                                private_port=self.worker.private_grpc_port if self.worker else 0)

    def _start_rest(self) -> None:
        s = self.settings
        if not s.rest_api_port:
            return
        if s.rest_api_port == s.port:
            logger.error("--rest_api_port cannot be same as --port. Please use a different port for HTTP/REST API. "
                         "Skipped exporting HTTP/REST API.")
            return
        from pyserving.protocols.oip_rest import OipRest
        from pyserving.protocols.rest import RestApi

        self.rest = RestApi(self.data_plane, self.metrics, num_threads=self._workers(s.rest_api_num_threads),
                            timeout_ms=s.rest_api_timeout_in_ms, enable_cors=s.rest_api_enable_cors_support,
                            max_body_bytes=s.max_request_size_bytes, metrics_path=self.metrics_path)
        OipRest(self.rest, self.data_plane, self.metrics).register()  # the Open Inference Protocol's /v2
        self.rest.start(s.rest_api_port, host=s.listen_host, reuse_port=self.worker is not None,
                        private_port=self.worker.private_rest_port if self.worker else 0)
        logger.info("Exporting HTTP/REST API at:localhost:%d ...", s.rest_api_port)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.board is not None:  # the other workers' status stops counting this one
            self.board.publish(serving=False)
        # Health-checking gRPC clients hear NOT_SERVING first and move to other replicas while this
        # one still answers: once it stops accepting, calls that had reached it but no handler yet
        # would end CANCELLED (grpc/grpc#41785), and such clients send none by then.
        if self.grpc_server is not None and self.grpc_server.not_serving():
            time.sleep(min(HEALTH_NOTICE_S, grace_s))
        # Both edges stop accepting at once and drain side by side: one after the other, the
        # second would keep accepting new requests while the first drained.
        edges = [edge for edge in (self.grpc_server, self.rest) if edge is not None]
        if edges:
            with ThreadPoolExecutor(len(edges), thread_name_prefix="stop") as pool:
                for stopped in [pool.submit(edge.stop, grace_s) for edge in edges]:
                    stopped.result()
        if self.batcher is not None:
            self.batcher.stop()
        if self._run_pool is not None:
            self._run_pool.shutdown(wait=True)
        self.core.stop()
        self.cache.close()
