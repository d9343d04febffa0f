"""The live suite: real `python -m pyserving` processes, for what only a process shows.

Flag parsing and its exit codes, start-up failures (`Failed to start server. Error: ...`, exit
255 and the stderr line), the start-up order in the process log, SIGTERM draining and exit 0,
and REST and gRPC answering the same inputs alike in a real process. Every other edge case runs
against in-process servers (tests/server/conftest.py), which pay no process start-up.
"""
from __future__ import annotations

import gc
import http.client
import json
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor, wait

import grpc
import numpy as np
import pytest

from kit.process import free_port, port_open
from tests.helpers import (
    SHARED_TESTDATA,
    CliRun,
    call_json,
    grpc_predict,
    launch,
    predict_request,
    prediction_stub,
    rest_predict,
    run_cli,
    to_numpy,
    wait_for,
    write_config,
    write_gated_model,
)

# ---- the slow processes, started together ---------------------------------------------------
# Each of these pays a Python + TensorFlow start-up of several seconds. Those the selected tests
# need are started when the module begins, all at once, so that their start-ups overlap; each
# test then waits for its own.
SLOW = ("cannot_load", "warmup_fails", "tf_serving_bad_model", "parity_server", "empty_base_server", "drain_server",
        "gated_server", "health_server")


@pytest.fixture(scope="module", autouse=True)
def _start_slow_processes_together(request):
    needed = {name for item in request.session.items if item.module is request.module for name in item.fixturenames}
    for name in SLOW:
        if name in needed:
            request.getfixturevalue(name)


@pytest.fixture(scope="module")
def stopped_at_end():
    """Every process the module fixtures start; stopped by its own pid when the module is done."""
    processes = []
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture(scope="module")
def cannot_load(tmp_path_factory, stopped_at_end):
    tmp = tmp_path_factory.mktemp("cannot_load")
    base = tmp / "broken"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"garbage")
    run = CliRun(tmp, f"--port={free_port()}", f"--model_base_path={base}", "--max_num_load_retries=0")
    stopped_at_end.append(run)
    return run


@pytest.fixture(scope="module")
def warmup_fails(tmp_path_factory, stopped_at_end):
    from pyserving.examples import half_plus_two
    from pyserving.runtime import warmup

    tmp = tmp_path_factory.mktemp("warmup_fails")
    base = tmp / "m"
    version = half_plus_two.write_tf1(str(base), 1)
    warmup.write_requests(version, [warmup.predict_log("no_such_signature", {"x": np.array([[1.0]], np.float32)})])
    run = CliRun(tmp, "--port=0", f"--grpc_socket_path={tmp}/sock", f"--model_base_path={base}",
                 "--max_num_load_retries=0")
    stopped_at_end.append(run)
    return run


@pytest.fixture(scope="module")
def tf_serving_bad_model(tmp_path_factory, stopped_at_end):
    if not SHARED_TESTDATA.is_dir():
        return None
    tmp = tmp_path_factory.mktemp("bad_model")
    run = CliRun(tmp, "--port=0", f"--grpc_socket_path={tmp}/s",
                 f"--model_base_path={SHARED_TESTDATA / 'bad_half_plus_two'}", "--max_num_load_retries=0")
    stopped_at_end.append(run)
    return run


@pytest.fixture(scope="module")
def parity_server(exported, tmp_path_factory, stopped_at_end):
    tmp = tmp_path_factory.mktemp("parity")
    config = write_config(tmp / "models.config", {"hp2": exported / "hp2", "hp2tf2": exported / "hp2tf2"})
    server = launch(tmp, [f"--model_config_file={config}"], wait=False)
    stopped_at_end.append(server)
    return server


@pytest.fixture(scope="module")
def empty_base_server(tmp_path_factory, stopped_at_end):
    """Serves model m from a base path with no version yet."""
    tmp = tmp_path_factory.mktemp("empty_base")
    base = tmp / "m"
    base.mkdir()
    server = launch(tmp, [f"--model_base_path={base}", "--model_name=m"], wait=False)
    server.base = base
    stopped_at_end.append(server)
    return server


def hp2_server(name, exported, tmp_path_factory, stopped_at_end, *flags):
    """half_plus_two as model m, started now and waited for by the test that uses it."""
    server = launch(tmp_path_factory.mktemp(name), [f"--model_base_path={exported / 'hp2'}", "--model_name=m", *flags],
                    wait=False)
    stopped_at_end.append(server)
    return server


@pytest.fixture(scope="module")
def drain_server(exported, tmp_path_factory, stopped_at_end):
    return hp2_server("drain", exported, tmp_path_factory, stopped_at_end)


@pytest.fixture(scope="module")
def health_server(exported, tmp_path_factory, stopped_at_end):
    return hp2_server("health", exported, tmp_path_factory, stopped_at_end, "--enable_grpc_healthcheck_service")


@pytest.fixture(scope="module")
def gated_server(tmp_path_factory, stopped_at_end):
    """Serves model m, a half_plus_two whose calls wait at `server.gate` until the test opens it."""
    tmp = tmp_path_factory.mktemp("gated")
    gate = tmp / "gate"
    gate.mkdir()
    write_gated_model(tmp / "m", 1, gate)
    server = launch(tmp, [f"--model_base_path={tmp / 'm'}", "--model_name=m", "--tensorflow_inter_op_parallelism=8"],
                    wait=False)
    server.gate = gate
    stopped_at_end.append(server)
    return server


# ---- flags ------------------------------------------------------------------------------------
@pytest.mark.flags("version")
def test_version_flag():
    out = run_cli("--version")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ") and lines[1] == "TensorFlow Library: 2.21.0"


@pytest.mark.parametrize("args,needle", [
    (["--no_such_flag=1"], "unknown flag: --no_such_flag"),
    (["--port=abc", "--model_base_path=/x"], "--port: expected an integer, got 'abc'"),
    (["--enable_batching=maybe", "--model_base_path=/x"], "--enable_batching: expected true or false"),
    (["--model_base_path", "/x"], "--model_base_path needs a value"),
    (["--port=8500"], "model_base_path and server_options.model_config_file are empty"),
])
def test_bad_flags_stop_at_once_with_one_line(args, needle):
    out = run_cli(*args)
    assert out.returncode == 255
    assert needle in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_prints_every_flag():
    out = run_cli("--help")
    assert out.returncode == 255  # as tensorflow_model_server does
    for flag in ("--port", "--rest_api_port", "--model_config_file", "--enable_batching", "--prefer_tflite_model"):
        assert flag in out.stdout


def test_batching_parameters_file_needs_enable_batching(exported, tmp_path):
    params = tmp_path / "b.txt"
    params.write_text("max_batch_size { value: 8 }")
    out = run_cli(f"--model_base_path={exported / 'hp2'}", f"--batching_parameters_file={params}")
    assert out.returncode == 255 and "--batching_parameters_file was given without --enable_batching" in out.stderr


def test_monitoring_needs_the_rest_port(exported, tmp_path):
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")
    out = run_cli(f"--model_base_path={exported / 'hp2'}", f"--monitoring_config_file={monitoring}")
    assert out.returncode == 255 and "requires --rest_api_port" in out.stderr


# ---- start-up failures ------------------------------------------------------------------------
def test_model_that_cannot_load_is_fatal(cannot_load):
    out = cannot_load.result(timeout=120)
    assert out.returncode == 255
    assert "Failed to start server. Error:" in out.stderr
    assert "1 model(s) did not become available" in out.stderr
    assert "Running gRPC ModelServer" not in out.stderr


@pytest.mark.parametrize("flags,message_type", [
    ([], "tensorflow.serving.ModelServerConfig"),
    (["--enable_batching", "--batching_parameters_file={bad}"], "tensorflow.serving.BatchingParameters"),
    (["--rest_api_port=1", "--monitoring_config_file={bad}"], "tensorflow.serving.MonitoringConfig"),
    (["--ssl_config_file={bad}"], "tensorflow.serving.SSLConfig"),
])
def test_a_malformed_text_proto_is_fatal_in_tf_servings_words(tmp_path, flags, message_type):
    # ParseProtoTextFile: protobuf's parser line, then the status naming the file.
    bad = tmp_path / "bad.txt"
    bad.write_text("improperly formatted")
    good = write_config(tmp_path / "models.config", {"m": tmp_path / "m"})
    config = bad if not flags else good
    out = run_cli(f"--model_config_file={config}", *(f.format(bad=bad) for f in flags))
    assert out.returncode == 255
    assert (f'Error parsing text-format {message_type}: 1:1: Message type "{message_type}" has no field named '
            '"improperly".') in out.stderr
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{bad}'" in out.stderr


def test_failing_warmup_request_is_fatal_at_start_up_unless_warmup_is_off(warmup_fails):
    # (warmup off: tests/server/test_warmup.py::test_warmup_off_ignores_the_file)
    out = warmup_fails.result(timeout=120)
    assert out.returncode == 255
    assert "Warmup request 1 of" in out.stderr and "no_such_signature" in out.stderr


@pytest.mark.skipif(not SHARED_TESTDATA.is_dir(), reason="../shared/testdata/tfserving not present")
def test_tf_serving_bad_model_and_bad_config_fail_start_up(tf_serving_bad_model):
    out = tf_serving_bad_model.result(timeout=120)
    assert out.returncode == 255 and "did not become available" in out.stderr
    out = run_cli(f"--model_config_file={SHARED_TESTDATA / 'bad_model_config.txt'}")
    assert out.returncode == 255 and "Invalid protobuf file" in out.stderr


# ---- a running process: start-up order, REST and gRPC alike, SIGTERM -------------------------
def test_rest_and_grpc_answer_alike_in_a_live_process(parity_server):
    server = parity_server
    server.wait_ready()
    x = [[0.1], [7.0], [-3.5]]
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = prediction_stub(ch)
        for model in ("hp2", "hp2tf2"):
            grpc_out = to_numpy(stub.Predict(predict_request(model, x), timeout=10).outputs["y"])
            status, body = call_json(server, "POST", f"/v1/models/{model}:predict", {"instances": x})
            assert status == 200
            np.testing.assert_array_equal(grpc_out, np.array(body["predictions"], dtype=np.float32))


def test_a_missing_base_path_is_said_at_every_poll_while_the_server_waits(tmp_path, start_server):
    base = tmp_path / "nowhere"
    server = start_server([f"--model_base_path={base}", "--model_name=m"], wait=False)
    said = f"FileSystemStoragePathSource encountered a filesystem access error: Could not find base path {base} " \
           "for servable m"
    wait_for(lambda: server.process.log().count(said) >= 2, what="two polls saying why the server waits", timeout=120)
    assert not port_open(server.rest_port) and not port_open(server.grpc_port)


def test_listeners_open_only_when_models_are_available_and_sigterm_exits_zero(exported, empty_base_server):
    server, base = empty_base_server, empty_base_server.base
    wait_for(lambda: "No versions of servable m found under base path" in server.process.log(),
             what="the server polling an empty base path", timeout=120)
    assert not port_open(server.rest_port) and not port_open(server.grpc_port)
    shutil.copytree(exported / "hp2" / "1", base / "1")
    server.wait_ready(120)
    log = server.process.log()
    assert "Successfully loaded servable version {name: m version: 1}" in log
    assert f"Running gRPC ModelServer at 0.0.0.0:{server.grpc_port} ..." in log
    assert f"Exporting HTTP/REST API at:localhost:{server.rest_port} ..." in log
    assert log.index("Successfully loaded servable version") < log.index("Running gRPC ModelServer")
    assert rest_predict(server) == 2.5
    server.process.proc.send_signal(signal.SIGTERM)
    assert server.process.proc.wait(30) == 0
    assert not port_open(server.rest_port) and not port_open(server.grpc_port)


def test_sigterm_stops_accepting_and_answers_every_request_in_flight_over_rest_and_grpc(gated_server):
    server, gate = gated_server, gated_server.gate
    server.wait_ready()
    xs = [float(x) for x in range(6)]  # three over REST, three over gRPC, each its own x
    with ThreadPoolExecutor(len(xs)) as pool:
        rest_calls = [pool.submit(rest_predict, server, "m", x) for x in xs[:3]]
        grpc_calls = [pool.submit(grpc_predict, server, [[x]]) for x in xs[3:]]
        try:
            wait_for(lambda: len(list(gate.glob("started-*"))) == len(xs), what="every request inside the model")
            server.process.proc.send_signal(signal.SIGTERM)
            # Both edges stop accepting at once, while the six calls are still held in the model.
            wait_for(lambda: not port_open(server.rest_port) and not port_open(server.grpc_port),
                     what="both listeners closed", timeout=15)
            assert not any(call.done() for call in rest_calls + grpc_calls)
        finally:
            (gate / "open").touch()
            wait(rest_calls + grpc_calls, timeout=30)
    assert [call.result(0) for call in rest_calls] == [x / 2 + 2 for x in xs[:3]]
    assert [call.result(0) for call in grpc_calls] == [[[x / 2 + 2]] for x in xs[3:]]
    assert server.process.proc.wait(30) == 0
    log = server.process.log()
    assert log.index("Shutting down: finishing in-flight requests") < log.index("Server stopped")


def test_request_on_a_connection_opened_before_sigterm_is_answered(drain_server):
    """The listener closes at SIGTERM, but a client that connected just before may still be
    sending its request: it is answered (and told to close), not dropped."""
    server = drain_server
    server.wait_ready()
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    # The request must follow the listener's close within the server's drain (rest.DRAIN_S, 1 s):
    # no full collection over this process's TensorFlow objects may stall it (one failed so).
    gc.disable()
    try:
        conn.connect()
        server.process.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not port_open(server.rest_port), what="REST listener closed", timeout=30, interval=0.02)
        conn.request("POST", "/v1/models/m:predict", body=json.dumps({"instances": [[1.0]]}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        gc.enable()
        conn.close()  # also on failure: an unclosed socket would fail a later test with a ResourceWarning
    assert resp.status == 200 and json.loads(body)["predictions"] == [[2.5]]
    assert resp.getheader("Connection") == "close"
    assert server.process.proc.wait(30) == 0


@pytest.mark.flags("enable_grpc_healthcheck_service")
def test_sigterm_says_not_serving_to_health_watchers_first_and_their_watch_does_not_hold_the_exit(health_server):
    """gRPC clients that health-check (client-side health checking, Envoy, a grpc probe) hear
    NOT_SERVING while the server still answers, so they stop sending before it stops accepting;
    their open Watch streams then end, rather than holding the drain for its whole grace period."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = health_server
    server.wait_ready()
    with grpc.insecure_channel(server.grpc_target) as channel:
        def predict():
            reply = prediction_stub(channel).Predict(predict_request("m", [[1.0]]), timeout=60)
            return to_numpy(reply.outputs["y"]).tolist()

        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING and predict() == [[2.5]]
        gc.disable()  # the predict must fall within the notice (app.HEALTH_NOTICE_S, 0.5 s): no GC stall here
        try:
            server.process.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert predict() == [[2.5]]  # still answering while watchers move away
        finally:
            gc.enable()
        assert list(watch) == []  # the stream ends (OK), it is not left open
        assert watch.code() == grpc.StatusCode.OK
    assert server.process.proc.wait(30) == 0
    log = server.process.log()
    assert "Shutting down: finishing in-flight requests" in log and "Server stopped" in log
