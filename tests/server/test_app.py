"""The composition root (pyserving/app.py) in-process: config file polling, REST off when its port
is the gRPC port, labels checked on reload, and stop()."""
from __future__ import annotations

import gc
import ipaddress
import logging
import socket
import threading
import time
import warnings

import grpc
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from kit.process import free_port, port_open
from pyserving.errors import Code, ServingError
from tests.helpers import grpc_predict, rest_predict, status, wait_for, write_config


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


@pytest.mark.flags("model_config_file", "model_config_file_poll_wait_seconds")
def test_config_file_polling_adds_and_removes_models_and_keeps_last_good(exported, tmp_path, serve, logs):
    config = write_config(tmp_path / "models.config", {"a": exported / "hp2"})
    server = serve([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    assert rest_predict(server, "a") == 2.5
    write_config(config, {"a": exported / "hp2", "b": exported / "hp2tf2"})
    wait_for(lambda: status(server, "b").get(1, {}).get("state") == "AVAILABLE", what="model b loaded")
    assert rest_predict(server, "b") == 2.5
    config.write_text("model_config_list { config { name: ")  # malformed: last good config stays
    wait_for(lambda: f"Invalid protobuf file: '{config}'" in logs.text, timeout=30, what="the malformed config refused")
    assert "Failed to reload model config" in logs.text
    # Negative: nothing more is logged, and nothing unloaded, at the polls that read the same
    # malformed file again; only a bounded wait shows that (2 s: at least one more 1 s poll).
    time.sleep(2.0)
    assert rest_predict(server, "a") == 2.5 and rest_predict(server, "b") == 2.5
    parser_line = "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:36: '': Expected string but found"
    assert logs.text.count(parser_line) == 1  # logged with the failure, once however often it is polled
    write_config(config, {"b": exported / "hp2tf2"})
    wait_for(lambda: not status(server, "a"), what="model a unloaded")
    assert rest_predict(server, "b") == 2.5


def test_label_on_unavailable_version_is_refused_on_reload(exported, tmp_path, serve, logs):
    config = write_config(tmp_path / "models.config", {"a": exported / "hp2"})
    server = serve([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    write_config(config, {"a": (exported / "hp2", 'version_labels { key: "canary" value: 42 }')})
    wait_for(lambda: "which is not currently available for inference" in logs.text, what="label refused")
    assert rest_predict(server, "a") == 2.5


def test_a_config_change_written_while_start_up_loads_models_is_applied(exported, tmp_path, serve, logs):
    config = write_config(tmp_path / "models.config", {"a": exported / "hp2"})
    started = []
    starting = threading.Thread(target=lambda: started.append(
        serve([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])))
    starting.start()
    wait_for(lambda: "Loading servable version {name: a version: 1}" in logs.text, what="start-up loading a",
             interval=0.005)
    write_config(config, {"a": exported / "hp2", "b": exported / "hp2tf2"})
    starting.join(60)
    wait_for(lambda: status(started[0], "b").get(1, {}).get("state") == "AVAILABLE", timeout=2.5,
             what="model b loaded")


@pytest.mark.flags("port", "rest_api_port")
def test_rest_port_equal_to_grpc_port_skips_rest(exported, serve, logs):
    port = free_port()
    serve([f"--rest_api_port={port}", f"--model_base_path={exported / 'hp2'}"], rest=False, grpc_port=port)
    assert port_open(port)  # gRPC serves on it
    assert "Skipped exporting HTTP/REST API" in logs.text


def test_stop_closes_its_event_loops(exported, serve):
    serve([f"--model_base_path={exported / 'hp2'}", "--model_name=hp2"]).stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):  # the loop threads let go of their loops within moments of stop()
            gc.unfreeze()  # start() froze the loops with everything else (pyserving/gc_policy.py)
            gc.collect()
            time.sleep(0.1)
    assert not [str(w.message) for w in caught if "unclosed event loop" in str(w.message)]


@pytest.mark.parametrize("uri", ["hdfs://namenode/models/m", "az://container/models/m"])
def test_a_base_path_of_an_unread_scheme_is_refused_at_start_up_and_on_reload(uri, exported, tmp_path, serve):
    # pyserving reads local paths, gs:// and s3:// (tests/server/test_storage_buckets.py); TF Serving
    # would poll another URI (and, without that file system, log "File system scheme ... not
    # implemented" every second while start-up waits).
    scheme = uri.split("://")[0]
    message = (f"Model m: base path {uri} has a scheme pyserving does not read ({scheme}://); use a local path, "
               "gs:// or s3://")
    with pytest.raises(ServingError) as err:
        serve([f"--model_base_path={uri}", "--model_name=m"])
    assert (err.value.code, err.value.message) == (Code.UNIMPLEMENTED, message)
    server = serve([f"--model_config_file={write_config(tmp_path / 'models.config', {'a': exported / 'hp2'})}"])
    request = model_management_pb2.ReloadConfigRequest()
    for name, base in (("a", str(exported / "hp2")), ("b", uri)):
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, base, "tensorflow"
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as rpc:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)
    assert rpc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert rpc.value.details() == message.replace("Model m:", "Model b:")
    assert rest_predict(server, "a") == 2.5 and status(server, "b") == {}


def listening_on(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port`, read from the kernel's tables."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, local_port = local.split(":")
            if state != "0A" or int(local_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(socket.inet_ntop(family, packed))
            mapped = getattr(ip, "ipv4_mapped", None)  # gRPC binds IPv6 sockets, ::ffff:127.0.0.1 for 127.0.0.1
            found.add(str(mapped or ip))
    return found


EVERY_INTERFACE = {"0.0.0.0", "::"}  # gRPC's 0.0.0.0 binds IPv6's wildcard, which takes IPv4 too


@pytest.mark.flags("pyserving_listen_address")
@pytest.mark.parametrize("flags,address", [([], "0.0.0.0"), (["--pyserving_listen_address=127.0.0.1"], "127.0.0.1")])
def test_both_listeners_bind_every_interface_unless_pyserving_listen_address_names_one(exported, serve, logs,
                                                                                        flags, address):
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=m", *flags])
    expected = EVERY_INTERFACE if address == "0.0.0.0" else {address}
    for port in (server.rest_port, server.grpc_port):
        assert listening_on(port) and listening_on(port) <= expected, (port, listening_on(port))
    assert f"Running gRPC ModelServer at {address}:{server.grpc_port} ..." in logs.text
    assert rest_predict(server) == 2.5 and grpc_predict(server, [[1.0]]) == [[2.5]]
