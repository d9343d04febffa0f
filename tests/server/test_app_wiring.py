"""pyserving/app.py, the composition root, fast and in-process: each flag reaches the part that
honours it, and start() and stop() bring the edges up and down as the flags say. That the parts
honour what they are given is their own tests' business (test_flags.py and test_app.py show it
on servers that serve models); here the servers serve an empty model list, so none loads a model
and each starts in milliseconds. The protocol stacks and TensorFlow, which start() imports, are
imported with this module, once (under `make mutate`, once for every mutant's run)."""
from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

import pyserving.protocols.grpc.server  # noqa: F401 - start() imports these: here, once
import pyserving.protocols.oip_rest  # noqa: F401
import pyserving.protocols.rest  # noqa: F401
import pyserving.runtime.savedmodel  # noqa: F401
from kit.process import free_ports, port_open
from pyserving import cli, config_files
from pyserving.app import HEALTH_NOTICE_S, ModelServer
from pyserving.core.batching import Batcher, BatchingParams
from pyserving.errors import Code, ServingError
from pyserving.metrics import NullMetrics, ServingMetrics
from pyserving.runtime.loader import Loader, SessionOptions
from pyserving.storage.cache import CachingLoader
from pyserving.types import ModelConfig, VersionState
from tests.helpers import wait_for


@pytest.fixture
def server(tmp_path):
    """server(*flags, rest=True, start=True) -> a ModelServer of those flags serving no model, on free
    loopback ports (.grpc_port, .rest_port); every one is stopped at teardown, but those a test
    stops itself with server.stop(built, grace) (stop() is once only)."""
    config = tmp_path / "models.config"
    config.write_text("model_config_list {}\n")
    made: list[ModelServer] = []

    def make(*flags: str, rest: bool = True, start: bool = True) -> ModelServer:
        grpc_port, rest_port = free_ports(2)
        argv = [f"--port={grpc_port}", "--pyserving_listen_address=127.0.0.1", f"--model_config_file={config}",
                *([f"--rest_api_port={rest_port}"] if rest else []), *flags]
        built = ModelServer(cli.parse(argv)[0])
        built.grpc_port, built.rest_port = grpc_port, rest_port
        made.append(built)
        if start:
            built.start()
        return built

    def stop(built: ModelServer, grace_s: float) -> None:
        made.remove(built)
        built.stop(grace_s)

    make.stop = stop
    yield make
    for built in reversed(made):
        built.stop(0)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def model_status(target: str, name: str = "none", padding: int = 0) -> str:
    """GetModelStatus of `name` over gRPC (`padding` bytes of signature name make the request that big): the
    status code's name."""
    with grpc.insecure_channel(target) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = "x" * padding
        try:
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"


def accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def health(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


# ---- what the constructor hands each part ------------------------------------------------------
def test_the_model_flags_reach_the_loader_and_the_core(server, tmp_path):
    session = write(tmp_path / "session.config", "intra_op_parallelism_threads: 2\n")
    built = server("--saved_model_tags=serve,gpu", "--tensorflow_intra_op_parallelism=3",
                   "--tensorflow_inter_op_parallelism=4", f"--tensorflow_session_config_file={session}",
                   "--prefer_tflite_model", "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=3",
                   "--num_request_iterations_for_warmup=7", "--file_system_poll_wait_seconds=9",
                   "--max_num_load_retries=2", "--load_retry_interval_micros=2500000",
                   "--allow_version_labels_for_unavailable_models", start=False)
    caching = built.core.manager._load_fn  # bucket versions go through the local cache first
    assert isinstance(caching, CachingLoader) and caching.cache is built.cache
    loader = caching.loader
    assert isinstance(loader, Loader)
    assert loader._session == SessionOptions(("serve", "gpu"), 3, 4, "intra_op_parallelism_threads: 2\n")
    assert (loader._tflite_interpreters, loader._warmup_iterations, loader._batcher) == (6, 7, None)
    assert loader._metrics is built.metrics
    assert built.core.source.poll_wait_s == 9
    assert (built.core.manager._max_retries, built.core.manager._retry_interval) == (2, 2.5)
    assert built.core._allow_new_labels_unavailable is True
    assert built.core.manager._on_state_change == built._on_state_change
    assert built.data_plane._core is built.core and built.data_plane._check_method_name is False


def test_the_defaults_reach_the_loader_and_the_core(server):
    built = server(start=False)
    loader = built.core.manager._load_fn.loader
    assert loader._session == SessionOptions(("serve",), 0, 0, "")
    assert (loader._tflite_interpreters, loader._warmup_iterations) == (0, 0)
    assert built.core._allow_new_labels_unavailable is False
    assert built.core.source.poll_wait_s == 1


def test_labels_for_a_new_model_are_refused_before_any_load_without_the_flag(server, tmp_path):
    built = server()
    labelled = ModelConfig("m", str(tmp_path / "m"), labels={"stable": 1})
    with pytest.raises(ServingError) as refused:
        built.core.reload([labelled])
    assert refused.value.code == Code.FAILED_PRECONDITION
    assert built.core.configs == {}


def test_without_batching_models_run_on_a_pool_the_size_of_the_rest_threads(server):
    built = server("--rest_api_num_threads=3", "--enable_signature_method_name_check", start=False)
    assert built.batcher is None and built._run_pool._max_workers == 3
    assert built.data_plane._runner._pool is built._run_pool and built.data_plane._metrics is built.metrics
    assert built.data_plane._check_method_name is True
    assert server("--rest_api_num_threads=0", start=False)._run_pool._max_workers == 1


def test_batching_takes_its_parameters_from_the_file(server, tmp_path):
    params = write(tmp_path / "batching.config", "max_batch_size { value: 8 }\nnum_batch_threads { value: 3 }\n")
    built = server("--enable_batching", f"--batching_parameters_file={params}", "--rest_api_num_threads=2",
                   "--enable_per_model_batching_parameters", start=False)
    assert isinstance(built.batcher, Batcher) and built._run_pool is None
    assert built.batcher.params == config_files.batching(params)
    assert built.batcher.params.max_batch_size == 8
    assert built.batcher._solo._max_workers == 3  # lone runs: max(batch threads, REST threads)
    assert built.core.manager._load_fn.loader._batcher is built.batcher  # per-model parameters
    assert built.data_plane._runner is built.batcher  # no monitoring: the runner is not timed
    more_rest = server("--enable_batching", f"--batching_parameters_file={params}", "--rest_api_num_threads=5",
                       start=False)
    assert more_rest.batcher._solo._max_workers == 5 and more_rest.core.manager._load_fn.loader._batcher is None


def test_batching_without_a_file_uses_tf_s_defaults(server):
    built = server("--enable_batching", start=False)
    assert built.batcher.params == BatchingParams()


def test_a_batched_server_counts_its_batches_in_the_metrics(server, tmp_path):
    monitoring = write(tmp_path / "monitoring.config", "prometheus_config { enable: true path: \"/m\" }\n")
    built = server("--enable_batching", f"--monitoring_config_file={monitoring}", start=False)
    assert built.batcher._on_batch == built.metrics.observe_batch


# ---- monitoring ---------------------------------------------------------------------------------
def test_monitoring_serves_the_metrics_on_the_rest_port_at_the_configured_path(server, tmp_path):
    monitoring = write(tmp_path / "monitoring.config", "prometheus_config { enable: true path: \"/m/x\" }\n")
    built = server(f"--monitoring_config_file={monitoring}")
    assert built.metrics_path == "/m/x" and isinstance(built.metrics, ServingMetrics)
    status, headers, body = get(f"http://127.0.0.1:{built.rest_port}/m/x")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # Model runs are timed into the metrics, and load outcomes counted.
    assert type(built.data_plane._runner).__name__ == "_TimedRunner"
    built._on_state_change("m", 1, VersionState.AVAILABLE, None)
    built._on_state_change("m", 2, VersionState.LOADING, None)
    built._on_state_change("m", 2, VersionState.END, ServingError(Code.NOT_FOUND, "gone"))
    metrics = get(f"http://127.0.0.1:{built.rest_port}/m/x")[2]
    assert b'load_attempt_count{model_name="m",status="OK",version="1"} 1.0' in metrics
    assert b'load_attempt_count{model_name="m",status="NOT_FOUND",version="2"} 1.0' in metrics


def test_without_monitoring_there_are_no_metrics(server):
    built = server()
    assert built.metrics_path is None and isinstance(built.metrics, NullMetrics)
    assert get(f"http://127.0.0.1:{built.rest_port}/monitoring/prometheus/metrics")[0] == 404


def test_a_monitoring_config_that_does_not_enable_prometheus_serves_no_metrics(server, tmp_path):
    monitoring = write(tmp_path / "monitoring.config", "prometheus_config { enable: false path: \"/m\" }\n")
    built = server(f"--monitoring_config_file={monitoring}")
    assert built.metrics_path is None and isinstance(built.metrics, NullMetrics)


def test_monitoring_needs_the_rest_port(server, tmp_path):
    monitoring = write(tmp_path / "monitoring.config", "prometheus_config { enable: true }\n")
    with pytest.raises(ServingError) as refused:
        server(f"--monitoring_config_file={monitoring}", rest=False)
    assert refused.value.code == Code.INVALID_ARGUMENT
    assert str(refused.value.message) == ("Monitoring (prometheus_config) requires --rest_api_port: metrics are "
                                          "served on the REST port")


def test_the_ssl_config_is_read_before_anything_loads(server, tmp_path):
    ssl = write(tmp_path / "ssl.config", 'server_key: "KEY" server_cert: "CERT" client_verify: true\n')
    built = server(f"--ssl_config_file={ssl}", start=False)
    assert built._ssl == config_files.ssl(ssl)
    assert server(start=False)._ssl is None


# ---- start(): the edges -------------------------------------------------------------------------
def test_start_opens_both_edges_on_the_given_address(server):
    built = server("--rest_api_num_threads=3", "--grpc_max_threads=5")
    assert port_open(built.grpc_port) and port_open(built.rest_port)
    assert get(f"http://127.0.0.1:{built.rest_port}/v1/models/none")[0] == 404
    assert built.grpc_server._pool._max_workers == 5 and built.rest._pool._max_workers == 3
    assert health(built.grpc_port) == "UNIMPLEMENTED"  # no health service unless asked for
    # Both APIs answer from the data plane: no such model.
    assert model_status(f"127.0.0.1:{built.grpc_port}") == "NOT_FOUND"
    assert get(f"http://127.0.0.1:{built.rest_port}/v2/models/none")[0] == 404
    # Bound to 127.0.0.1 alone: another loopback address is refused.
    assert not accepts("127.0.0.2", built.grpc_port) and not accepts("127.0.0.2", built.rest_port)
    one = server("--rest_api_num_threads=1", "--grpc_max_threads=1")
    assert one.grpc_server._pool._max_workers == 1 and one.rest._pool._max_workers == 1


def test_with_batching_the_request_threads_are_at_least_256(server):
    built = server("--enable_batching", "--rest_api_num_threads=3", "--grpc_max_threads=300")
    assert built.rest._pool._max_workers == 256 and built.grpc_server._pool._max_workers == 300


def test_a_rest_port_equal_to_the_grpc_port_skips_rest(server, caplog):
    caplog.set_level(logging.ERROR, logger="pyserving")
    grpc_port = free_ports(1)[0]
    built = server(f"--port={grpc_port}", f"--rest_api_port={grpc_port}")
    assert built.rest is None and port_open(grpc_port)
    assert "--rest_api_port cannot be same as --port" in caplog.text


def test_without_a_rest_port_only_grpc_listens(server):
    built = server(rest=False)
    assert built.rest is None and port_open(built.grpc_port) and not port_open(built.rest_port)


def test_the_rest_flags_reach_the_rest_api(server):
    built = server("--rest_api_enable_cors_support", "--rest_api_timeout_in_ms=2500", "--max_request_size_bytes=100")
    assert (built.rest._cors, built.rest._timeout_s, built.rest._max_body) == (True, 2.5, 100)
    status, headers, _ = get(f"http://127.0.0.1:{built.rest_port}/v1/models/none")
    assert status == 404 and headers.get("Access-Control-Allow-Origin") == "*"
    plain = server()
    assert get(f"http://127.0.0.1:{plain.rest_port}/v1/models/none")[1].get("Access-Control-Allow-Origin") is None


def test_the_grpc_flags_reach_the_grpc_server(server, tmp_path):
    sock = tmp_path / "grpc.sock"
    built = server("--enable_grpc_healthcheck_service", "--max_request_size_bytes=1000", f"--grpc_socket_path={sock}")
    assert health(built.grpc_port) == "SERVING"
    target = f"127.0.0.1:{built.grpc_port}"
    assert (model_status(target, padding=10), model_status(target, padding=2000)) == ("NOT_FOUND", "RESOURCE_EXHAUSTED")
    assert model_status(f"unix:{sock}") == "NOT_FOUND"


def test_a_config_file_with_a_poll_wait_is_polled(server, tmp_path):
    def pollers() -> int:
        return sum(t.name == "config-poller" for t in threading.enumerate())
    before = pollers()
    server()
    assert pollers() == before
    server("--model_config_file_poll_wait_seconds=30")
    assert pollers() == before + 1


def test_the_polled_config_file_is_the_one_given(server, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pyserving")
    server("--model_config_file_poll_wait_seconds=1")
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: ")  # malformed: the poll says so, naming the file
    wait_for(lambda: f"Invalid protobuf file: '{config}'" in caplog.text, timeout=20, what="the poll to read it")


def test_a_malformed_config_file_stops_start_up_naming_the_file(server, tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: ")
    with pytest.raises(ServingError) as refused:
        server()
    assert f"'{config}'" in str(refused.value)


def test_without_a_config_file_the_single_model_flags_are_served(tmp_path):
    """--model_name and --model_base_path: a version that is no SavedModel fails start-up, named."""
    (tmp_path / "solo" / "1").mkdir(parents=True)
    (tmp_path / "solo" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    built = ModelServer(cli.parse([f"--port={free_ports(1)[0]}", "--model_name=solo", "--max_num_load_retries=0",
                                   f"--model_base_path={tmp_path / 'solo'}"])[0])
    try:
        with pytest.raises(ServingError) as refused:
            built.start()
    finally:
        built.stop(0)
    assert [(c.name, c.base_path) for c in built.core.configs.values()] == [("solo", str(tmp_path / "solo"))]
    assert "{name: solo version: 1}" in str(refused.value)


# ---- stop() --------------------------------------------------------------------------------------
def test_stop_closes_both_edges_and_shuts_the_run_pool(server):
    built = server()
    server.stop(built, 1)
    assert not port_open(built.grpc_port) and not port_open(built.rest_port)
    with pytest.raises(RuntimeError):
        built._run_pool.submit(print)


def test_stop_with_a_health_service_gives_its_watchers_notice_first(server):
    import time

    built = server("--enable_grpc_healthcheck_service")
    started = time.monotonic()
    server.stop(built, 5)
    assert time.monotonic() - started >= HEALTH_NOTICE_S
    short = server("--enable_grpc_healthcheck_service")
    started = time.monotonic()
    server.stop(short, 0.1)
    assert time.monotonic() - started < HEALTH_NOTICE_S  # never longer than the grace
