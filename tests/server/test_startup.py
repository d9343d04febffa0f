"""Start-up, flags, config file polling and shutdown of the real server process."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from kit.process import free_port, port_open
from tests.conftest import write_config
from tests.server.test_versions import rest_predict, status, wait_for


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "pyserving", *args], capture_output=True, text=True, timeout=timeout)


def test_version_flag():
    out = run_cli("--version")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ") and lines[1] == "TensorFlow Library: 2.20.0"


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


def test_model_that_cannot_load_is_fatal(tmp_path):
    base = tmp_path / "broken"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"garbage")
    grpc_port = free_port()
    out = run_cli(f"--port={grpc_port}", f"--model_base_path={base}", "--max_num_load_retries=0", timeout=120)
    assert out.returncode == 255
    assert "Failed to start server. Error:" in out.stderr
    assert "1 model(s) did not become available" in out.stderr
    assert "Running gRPC ModelServer" not in out.stderr


def test_malformed_config_file_is_fatal(tmp_path):
    config = tmp_path / "bad.config"
    config.write_text("model_config_list { config { name: ")
    out = run_cli(f"--model_config_file={config}")
    assert out.returncode == 255
    assert f"Invalid protobuf file: '{config}'" in out.stderr


def test_listeners_open_only_when_models_are_available_and_sigterm_exits_zero(exported, tmp_path, start_server):
    base = tmp_path / "m"
    base.mkdir()
    server = start_server([f"--model_base_path={base}", "--model_name=m"], wait=False)
    time.sleep(3)
    assert not port_open(server.rest_port) and not port_open(server.grpc_port)
    shutil.copytree(exported / "hp2" / "1", base / "1")
    server.process.wait_ready(120)
    log = server.process.log()
    assert "Successfully loaded servable version {name: m version: 1}" in log
    assert f"Running gRPC ModelServer at 0.0.0.0:{server.grpc_port} ..." in log
    assert f"Exporting HTTP/REST API at:localhost:{server.rest_port} ..." in log
    assert log.index("Successfully loaded servable version") < log.index("Running gRPC ModelServer")
    assert rest_predict(server) == 2.5
    # In-flight requests finish during shutdown.
    results = []
    threads = [threading.Thread(target=lambda: results.append(rest_predict(server))) for _ in range(4)]
    for t in threads:
        t.start()
    server.process.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert server.process.proc.wait(30) == 0
    assert not port_open(server.rest_port)


def test_request_on_a_connection_opened_before_sigterm_is_answered(exported, start_server):
    """The listener closes at SIGTERM, but a client that connected just before may still be
    sending its request: it is answered (and told to close), not dropped."""
    import http.client

    server = start_server([f"--model_base_path={exported / 'hp2'}", "--model_name=m"])
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.connect()
    server.process.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not port_open(server.rest_port), what="REST listener closed", timeout=30)
    conn.request("POST", "/v1/models/m:predict", body=json.dumps({"instances": [[1.0]]}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["predictions"] == [[2.5]]
    assert resp.getheader("Connection") == "close"
    assert server.process.proc.wait(30) == 0


def test_config_file_polling_adds_and_removes_models_and_keeps_last_good(exported, tmp_path, start_server):
    config = write_config(tmp_path / "models.config", {"a": exported / "hp2"})
    server = start_server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    assert rest_predict(server, "a") == 2.5
    write_config(config, {"a": exported / "hp2", "b": exported / "hp2tf2"})
    wait_for(lambda: status(server, "b").get(1, {}).get("state") == "AVAILABLE", what="model b loaded")
    assert rest_predict(server, "b") == 2.5
    config.write_text("model_config_list { config { name: ")  # malformed: last good config stays
    time.sleep(2.5)
    assert rest_predict(server, "a") == 2.5 and rest_predict(server, "b") == 2.5
    assert "Failed to reload model config" in server.process.log()
    write_config(config, {"b": exported / "hp2tf2"})
    wait_for(lambda: not status(server, "a"), what="model a unloaded")
    assert rest_predict(server, "b") == 2.5


def test_rest_port_equal_to_grpc_port_skips_rest(exported, tmp_path):
    from kit.process import ServerProcess

    port = free_port()
    proc = ServerProcess([sys.executable, "-m", "pyserving", f"--port={port}", f"--rest_api_port={port}",
                          f"--model_base_path={exported / 'hp2'}"], tmp_path / "log.txt", ready_port=port).start()
    try:
        proc.wait_ready()
        wait_for(lambda: "Skipped exporting HTTP/REST API" in proc.log(), what="REST skipped")
    finally:
        assert proc.stop() == 0


def test_label_on_unavailable_version_is_refused_on_reload(exported, tmp_path, start_server):
    config = write_config(tmp_path / "models.config", {"a": exported / "hp2"})
    server = start_server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    write_config(config, {"a": (exported / "hp2", 'version_labels { key: "canary" value: 42 }')})
    wait_for(lambda: "which is not currently available for inference" in server.process.log(), what="label refused")
    assert rest_predict(server, "a") == 2.5
