"""The effect of tensorflow_model_server flags no other module shows, each checked so that it
fails if the flag were parsed and then ignored; and the "accepted, no effect" flags.

In-process servers, except where a flag acts on something process-wide: TensorFlow sizes its
inter- and intra-op thread pools once per process, from the first session's ConfigProto, so the
parallelism flags are seen in a live process of their own. Thread-pool flags are observed
through the "gate" model: its `enter` signature blocks until a token is released, so the number
of requests inside the model at once is exactly the number of threads that may run them.
docs/flag-tests.md lists the test of every flag (tests/kit/devtools/test_flag_tests.py keeps it whole).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from pyserving import cli
from pyserving.errors import Code, ServingError
from pyserving.flags import BY_NAME, FLAGS
from tests.helpers import (
    call_json,
    from_numpy,
    launch,
    predict_request,
    prediction_stub,
    rest_predict,
    status,
    to_numpy,
    wait_for,
    write_config,
)

PREDICT = "tensorflow/serving/predict"


# ---- the gate model -------------------------------------------------------------------------
def write_gate(path: Path) -> None:
    """A TF1 SavedModel of two FIFO queues. `enter` puts a marker in `inside`, reads how many
    markers are there (itself included), waits for a token from `tokens`, takes its marker out
    and answers both; `release` puts its input's values into `tokens`; `inside` counts markers."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        x = v1.placeholder(tf.float32, [None], name="x")
        inside = tf.queue.FIFOQueue(1000, tf.float32, shapes=[[]], name="inside")
        tokens = tf.queue.FIFOQueue(1000, tf.float32, shapes=[[]], name="tokens")
        with tf.control_dependencies([inside.enqueue(1.0)]):
            at_entry = inside.size()
        with tf.control_dependencies([at_entry]):
            token = tokens.dequeue()
        with tf.control_dependencies([token]):
            left = inside.dequeue()
        with tf.control_dependencies([left]):
            entered_with, got = tf.identity(at_entry), tf.identity(token)
        with tf.control_dependencies([tokens.enqueue_many(x)]):
            queued = tokens.size()
        info = v1.saved_model.utils.build_tensor_info

        def signature(outputs):
            return v1.saved_model.signature_def_utils.build_signature_def(
                {"x": info(x)}, {k: info(v) for k, v in outputs.items()}, PREDICT)

        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            "enter": signature({"inside": entered_with, "token": got}),
            "release": signature({"queued": queued}),
            "serving_default": signature({"inside": inside.size()}),
        })
        builder.save()


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("gate") / "gate"
    write_gate(base / "1")
    return base


def gate_rest(server, signature: str, *x: float, timeout: float = 60):
    """The columnar answer: {name: value}, or the value alone for a signature of one output."""
    body = json.dumps({"signature_name": signature, "inputs": {"x": list(x) or [0.0]}}).encode()
    req = urllib.request.Request(f"{server.rest}/v1/models/gate:predict", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())["outputs"]


def gate_grpc(server, signature: str, *x: float, timeout: float = 60) -> dict:
    request = predict_request("gate", list(x) or [0.0], signature=signature)
    with grpc.insecure_channel(server.grpc_target) as channel:
        reply = prediction_stub(channel).Predict(request, timeout=timeout)
    return {k: to_numpy(v).item() for k, v in reply.outputs.items()}


def enter_concurrently(call, n: int) -> tuple[list, list[threading.Thread]]:
    """n `enter` calls, each on a thread of its own; their answers (or errors) land in the list."""
    answers: list = [None] * n

    def run(i):
        try:
            answers[i] = call()
        except Exception as exc:  # kept, so the test reports it rather than a missing answer
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return answers, threads


def through_the_gate(server, enter, release, inside, threads: int) -> list:
    """threads + 1 concurrent `enter` calls: once `threads` of them are inside, wait 1 s (time
    for a pool that ignored its size to let the last one in too), check that it is still
    outside, then release them all. Returns the answers."""
    answers, callers = enter_concurrently(enter, threads + 1)
    try:
        wait_for(lambda: inside() >= threads, timeout=30, what=f"{threads} calls inside the model")
        time.sleep(1.0)
        assert inside() == threads, "more calls ran at once than the flag allows"
        release(threads + 1)
        for t in callers:
            t.join(30)
    finally:
        release(10 * (threads + 1))  # whatever happened, nothing stays blocked in the model
        for t in callers:
            t.join(30)
    return answers


@pytest.mark.flags("rest_api_num_threads")
def test_rest_api_num_threads_is_how_many_rest_predicts_run_at_once(gate, serve):
    server = serve([f"--model_base_path={gate}", "--model_name=gate", "--rest_api_num_threads=2"])
    answers = through_the_gate(
        server, enter=lambda: gate_rest(server, "enter"),
        release=lambda n: gate_grpc(server, "release", *[1.0] * n),  # gRPC: not on the REST threads
        inside=lambda: gate_grpc(server, "serving_default")["inside"], threads=2)
    assert [a["token"] for a in answers] == [1.0, 1.0, 1.0]
    assert max(a["inside"] for a in answers) == 2  # the third entered only once one had left


@pytest.mark.flags("grpc_max_threads")
def test_grpc_max_threads_is_how_many_grpc_calls_run_at_once(gate, serve):
    server = serve([f"--model_base_path={gate}", "--model_name=gate", "--grpc_max_threads=2"])
    answers = through_the_gate(
        server, enter=lambda: gate_grpc(server, "enter"),
        release=lambda n: gate_rest(server, "release", *[1.0] * n),  # REST: not on the gRPC threads
        inside=lambda: gate_rest(server, "serving_default"), threads=2)
    assert [a["token"] for a in answers] == [1.0, 1.0, 1.0]
    assert max(a["inside"] for a in answers) == 2


@pytest.mark.flags("tensorflow_session_config_file")
def test_the_session_config_file_configures_the_model_s_session(gate, serve, tmp_path):
    # ConfigProto.operation_timeout_in_ms bounds every run of the session that has no deadline
    # of its own; with REST timeouts off, only the file can end a run that waits for a token.
    config = tmp_path / "session.config"
    config.write_text("operation_timeout_in_ms: 300\n")
    server = serve([f"--model_base_path={gate}", "--model_name=gate", f"--tensorflow_session_config_file={config}",
                    "--rest_api_timeout_in_ms=0"])
    try:
        code, body = call_json(server, "POST", "/v1/models/gate:predict",
                               {"signature_name": "enter", "inputs": {"x": [0.0]}}, timeout=30)
        assert code == 504 and "Timed out" in body["error"]  # DEADLINE_EXCEEDED, from the session
    finally:
        gate_grpc(server, "release", *[1.0] * 5)


def test_a_malformed_session_config_file_stops_start_up(gate, serve, tmp_path):
    # server.cc parses the file with ParseProtoTextFile before any model loads.
    config = tmp_path / "session.config"
    config.write_text("operation_timeout_in_ms: soon\n")
    with pytest.raises(ServingError) as err:
        serve([f"--model_base_path={gate}", "--model_name=gate", f"--tensorflow_session_config_file={config}"])
    assert (err.value.code, err.value.message) == (Code.INVALID_ARGUMENT, f"Invalid protobuf file: '{config}'")
    assert err.value.parser_line.startswith("Error parsing text-format tensorflow.ConfigProto: 1:26: ")


# ---- saved_model_tags -----------------------------------------------------------------------
def write_tagged(path: Path, tags: list[str]) -> None:
    """y = x + 1, saved under `tags` only."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        info = v1.saved_model.utils.build_tensor_info
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(sess, tags, signature_def_map={
            "serving_default": v1.saved_model.signature_def_utils.build_signature_def(
                {"x": info(x)}, {"y": info(x + 1.0)}, PREDICT)})
        builder.save()


@pytest.mark.flags("saved_model_tags")
def test_saved_model_tags_pick_the_metagraph_to_load(serve, tmp_path):
    # Every server here is told not to retry a failed load (TF Serving's default is 5 retries a
    # minute apart): a tag set that names no MetaGraph fails in a second, and so would the last
    # server's load if the flag were ignored, instead of after five minutes.
    base = tmp_path / "m"
    write_tagged(base / "1", ["serve", "tpu_free"])
    model = [f"--model_base_path={base}", "--model_name=m", "--max_num_load_retries=0"]
    # The default, "serve" alone, and a part of the exported set: TensorFlow matches the set whole.
    for wrong, asked in (([], "serve"), (["--saved_model_tags=tpu_free"], "tpu_free")):
        started = time.monotonic()
        with pytest.raises(ServingError) as err:
            serve([*model, *wrong])
        assert time.monotonic() - started < 30
        assert err.value.code == Code.UNKNOWN and "did not become available" in err.value.message
        assert f"MetaGraphDef associated with tags '{asked}' could not be found in SavedModel" in err.value.message
    server = serve([*model, "--saved_model_tags=tpu_free,serve"])
    assert rest_predict(server, "m", 2.0) == 3.0


# ---- labels ---------------------------------------------------------------------------------
@pytest.mark.flags("allow_version_labels_for_unavailable_models")
def test_labels_for_unavailable_versions_need_the_flag(exported, serve, tmp_path):
    labelled = (exported / "hp2", 'version_labels { key: "next" value: 9 }')
    config = write_config(tmp_path / "models.config", {"m": labelled})
    with pytest.raises(ServingError) as err:
        serve([f"--model_config_file={config}"])
    assert (err.value.code, err.value.message) == (
        Code.FAILED_PRECONDITION, "Request to assign label to version 9 of model m, which is not currently available "
                                  "for inference")
    server = serve([f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models=true",
                    "--model_config_file_poll_wait_seconds=1"])
    assert rest_predict(server, "m") == 2.5
    code, body = call_json(server, "POST", "/v1/models/m/labels/next:predict", {"instances": [[1.0]]})
    assert code == 404 and body["error"].startswith("Servable not found for request: Specific(m, 9)")
    # server_core.cc allows a label it already has at the same version: a later config that keeps
    # `next` on 9 while adding a model is applied; moving `next` to another unavailable version is not.
    write_config(config, {"m": labelled, "b": exported / "hp2tf2"})
    wait_for(lambda: status(server, "b").get(1, {}).get("state") == "AVAILABLE", timeout=30,
             what="model b added by the reload")
    assert rest_predict(server, "b") == 2.5


# ---- gRPC -----------------------------------------------------------------------------------
@pytest.mark.flags("grpc_channel_arguments")
def test_grpc_channel_arguments_reach_the_grpc_server(exported, serve):
    # gRPC binds with SO_REUSEPORT unless told grpc.so_reuseport=0: with it a second server
    # shares a port a first one holds; without it the second cannot bind.
    holder = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    holder.bind(("::", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        model = [f"--model_base_path={exported / 'hp2'}", "--model_name=m"]
        with pytest.raises(ServingError) as err:
            serve([*model, "--grpc_channel_arguments=grpc.so_reuseport=0"], rest=False, grpc_port=port)
        assert err.value.message == f"Could not bind gRPC port {port}"
        serve([*model, "--grpc_channel_arguments=grpc.so_reuseport=1,grpc.max_concurrent_streams=8"], rest=False,
              grpc_port=port)
    finally:
        holder.close()


def serialized(value) -> tensor_pb2.TensorProto:
    """What TensorFlow's Tensor::AsProtoTensorContent writes for `value`, the TensorProto TF
    Serving answers with --enable_serialization_as_tensor_content (predict_util.cc). For numbers,
    tf.io.serialize_tensor calls it; for strings (which serialize_tensor writes as string_val)
    it is Helper<tstring>::Encode, port::EncodeStringList: each length as a varint (one byte
    below 128), then the bytes."""
    import tensorflow as tf

    if isinstance(value, list) and isinstance(value[0], bytes):
        assert all(len(v) < 128 for v in value)
        proto = tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum,
                                       tensor_content=bytes(len(v) for v in value) + b"".join(value))
        proto.tensor_shape.dim.add().size = len(value)
        assert tf.io.parse_tensor(proto.SerializeToString(), tf.string).numpy().tolist() == value  # FromProto
        return proto
    return tensor_pb2.TensorProto.FromString(tf.io.serialize_tensor(tf.constant(value)).numpy())


@pytest.mark.flags("enable_serialization_as_tensor_content")
def test_predict_outputs_as_tensor_content(exported, serve, models_server):
    server = serve([f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2",
                    "--enable_serialization_as_tensor_content=true"])
    echo = predict_pb2.PredictRequest()
    echo.model_spec.name, echo.model_spec.signature_name = "hp2tf2", "echo"
    echo.inputs["text"].CopyFrom(from_numpy(np.array([b"a", b"bcd"], dtype=object)))
    echo.inputs["count"].CopyFrom(from_numpy(np.array([1, 3], np.int64)))
    expected = {"y": serialized(np.array([[2.5], [3.5]], np.float32)),
                "text": serialized([b"a", b"bcd"]), "raw_bytes": serialized([b"a", b"bcd"]),
                "count": serialized(np.array([2, 6], np.int64)), "flag": serialized([False, True])}
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_stub(channel)
        reply = stub.Predict(predict_request("hp2tf2", [[1.0], [3.0]]), timeout=30)
        outputs = dict(reply.outputs)
        outputs.update(stub.Predict(echo, timeout=30).outputs)
    assert outputs == expected
    assert outputs["y"].tensor_content and not outputs["y"].float_val
    with grpc.insecure_channel(models_server.grpc_target) as channel:  # without the flag: typed fields
        y = prediction_stub(channel).Predict(predict_request("hp2tf2", [[1.0], [3.0]]), timeout=30).outputs["y"]
    assert list(y.float_val) == [2.5, 3.5] and not y.tensor_content


# ---- load retries ---------------------------------------------------------------------------
@pytest.mark.flags("load_retry_interval_micros", "max_num_load_retries")
def test_failed_loads_are_retried_at_the_interval_the_flag_sets(exported, serve, tmp_path, caplog):
    import shutil

    caplog.set_level("ERROR", logger="pyserving.core.manager")
    base = tmp_path / "m"
    shutil.copytree(exported / "hp2", base)
    server = serve([f"--model_base_path={base}", "--model_name=m", "--max_num_load_retries=2",
                    "--load_retry_interval_micros=700000"])
    staged = tmp_path / "staged" / "2"
    staged.mkdir(parents=True)
    (staged / "saved_model.pb").write_bytes(b"not a SavedModel")
    staged.rename(base / "2")
    # The default interval is a minute: with the flag ignored, version 2 would still be loading.
    states = wait_for(lambda: (s := status(server, "m")).get(2, {}).get("state") == "END" and s, timeout=20,
                      what="version 2 to fail its 3 attempts")
    assert states[2]["status"]["error_code"] != "OK"
    failed = [r.created for r in caplog.records
              if "Loading servable version {name: m version: 2} failed" in r.getMessage()]
    assert len(failed) == 3  # the first attempt and --max_num_load_retries=2 retries
    assert all(later - earlier >= 0.7 for earlier, later in zip(failed, failed[1:]))  # never sooner than asked
    assert rest_predict(server, "m") == 2.5  # version 1 kept serving


# ---- version polling -----------------------------------------------------------------------
@pytest.mark.flags("file_system_poll_wait_seconds")
def test_file_system_poll_wait_seconds_zero_looks_for_versions_once(exported, serve, tmp_path):
    from pyserving.examples import half_plus_two

    base = tmp_path / "m"
    half_plus_two.write_tf1(str(base), 1)
    server = serve([f"--model_base_path={base}", "--model_name=m", "--file_system_poll_wait_seconds=0"])
    half_plus_two.write_tf1(str(base), 2, b=3.0)
    time.sleep(3.0)  # with the default of 1 s, version 2 would be seen, settled and loaded by now
    assert list(status(server, "m")) == [1] and rest_predict(server, "m") == 2.5


@pytest.mark.flags("file_system_poll_wait_seconds")
def test_file_system_poll_wait_seconds_above_one_is_the_wait_between_looks(serve, tmp_path):
    # Two servers alike but for the flag, given a version 2 at the same moment: with 1, it serves
    # within moments; with 30, the source does not look again for half a minute. The slow one is
    # watched for as long as the fast one took and 3 s more, far less than 30 s and enough for
    # any value read as 1 (or as the default, 1) to have taken version 2 up.
    from pyserving.examples import half_plus_two

    servers = {}
    for wait in (1, 30):
        half_plus_two.write_tf1(str(tmp_path / f"m{wait}"), 1)
        servers[wait] = serve([f"--model_base_path={tmp_path / f'm{wait}'}", "--model_name=m",
                               f"--file_system_poll_wait_seconds={wait}"])
    started = time.monotonic()
    for wait in (30, 1):
        half_plus_two.write_tf1(str(tmp_path / f"m{wait}"), 2, b=3.0)
    wait_for(lambda: rest_predict(servers[1], "m") == 3.5, timeout=30, what="version 2 served with a 1 s poll")
    fast = time.monotonic() - started
    # Negative: that version 2 is NOT taken up can only be seen by waiting; bounded, far below 30 s.
    time.sleep(3.0)
    assert list(status(servers[30], "m")) == [1] and rest_predict(servers[30], "m") == 2.5, (
        f"with a 30 s poll, version 2 was taken up {time.monotonic() - started:.1f} s after it was written "
        f"(with a 1 s poll: {fast:.1f} s)")
    # The rest of the schedule, without waiting for it: the source the flag made waits 30 s.
    assert servers[30].model_server.core.source.poll_wait_s == 30


# ---- TensorFlow's thread pools, and the flags without effect, in processes of their own ---------
# flags.py's "no-effect" flags, named here so that each test below says which flags it covers.
NO_EFFECT_NAMES = ("num_load_threads", "num_unload_threads", "flush_filesystem_caches", "platform_config_file",
                   "per_process_gpu_memory_fraction", "remove_unused_fields_from_bundle_metagraph",
                   "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled", "enable_profiler",
                   "thread_pool_factory_config_file", "mixed_precision", "skip_initialize_tpu")
NO_EFFECT = [BY_NAME[name] for name in NO_EFFECT_NAMES]


def test_the_list_of_flags_without_effect_is_whole():
    assert NO_EFFECT_NAMES == tuple(f.name for f in FLAGS if f.support == "no-effect")


def _set(flag) -> str:
    """The flag set to a value other than its default."""
    value = {bool: str(not flag.default).lower(), int: "3", float: "0.5", str: "x"}[flag.type]
    return f"--{flag.name}={value}"


@pytest.fixture(scope="module")
def tuned(exported, tmp_path_factory):
    """Two live servers of hp2, started together: {(intra, inter): server}, one sized by the
    intra/inter-op flags, the other by --tensorflow_session_parallelism and also given every flag
    without effect (set to a value other than its default). `threads` is each one's thread count
    once it serves, before any request."""
    tmp = tmp_path_factory.mktemp("tuned")
    model = [f"--model_base_path={exported / 'hp2'}"]
    servers = {
        (1, 5): launch(tmp, [*model, "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=5"],
                       rest=False, wait=False),
        (7, 7): launch(tmp, [*model, "--tensorflow_session_parallelism=7", *(_set(f) for f in NO_EFFECT)],
                       rest=False, wait=False),
    }
    try:
        for server in servers.values():
            server.wait_ready()
        for server in servers.values():  # counted before any request: a request may start a pool thread
            server.threads = len(os.listdir(f"/proc/{server.process.pid}/task"))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.flags("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
                   "tensorflow_session_parallelism")
def test_tensorflow_parallelism_flags_size_tensorflow_s_thread_pools(tuned):
    # TensorFlow starts its intra-op (Eigen) and inter-op pools whole when the process's first
    # session is made, and does not name their threads. The two servers differ in nothing else
    # that starts threads, so their thread counts differ by the difference of the pools' sizes
    # (the sizes are chosen so that no flag ignored, i.e. at its default of one thread per CPU,
    # gives the same difference on a machine of 2, 3, 4 or 6 CPUs).
    assert tuned[(7, 7)].threads - tuned[(1, 5)].threads == (7 + 7) - (1 + 5)


@pytest.mark.flags("num_load_threads", "num_unload_threads", "flush_filesystem_caches",
                   "platform_config_file", "per_process_gpu_memory_fraction",
                   "remove_unused_fields_from_bundle_metagraph", "xla_cpu_compilation_enabled",
                   "xla_gpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file",
                   "mixed_precision", "skip_initialize_tpu")
def test_a_process_given_every_flag_without_effect_serves_and_warns_once_for_each(tuned):
    server = tuned[(7, 7)]
    with grpc.insecure_channel(server.grpc_target) as channel:
        reply = prediction_stub(channel).Predict(predict_request("default", [[1.0]]), timeout=30)
    assert to_numpy(reply.outputs["y"]).tolist() == [[2.5]]
    log = server.process.log()
    for flag in NO_EFFECT:
        assert log.count(f"--{flag.name} has no effect in pyserving (accepted for compatibility)") == 1, flag.name


@pytest.mark.flags("num_load_threads", "num_unload_threads", "flush_filesystem_caches",
                   "platform_config_file", "per_process_gpu_memory_fraction",
                   "remove_unused_fields_from_bundle_metagraph", "xla_cpu_compilation_enabled",
                   "xla_gpu_compilation_enabled", "enable_profiler", "thread_pool_factory_config_file",
                   "mixed_precision", "skip_initialize_tpu")
@pytest.mark.parametrize("flag", NO_EFFECT, ids=lambda f: f.name)
def test_each_flag_without_effect_warns_once_however_often_it_is_given(flag):
    settings, given = cli.parse([_set(flag), f"--{flag.name}={str(flag.default).lower()}", _set(flag)])
    assert cli.no_effect_warnings(settings, given) == [
        f"--{flag.name} has no effect in pyserving (accepted for compatibility)"]
    settings, given = cli.parse([f"--{flag.name}={str(flag.default).lower()}"])
    assert cli.no_effect_warnings(settings, given) == []  # at its default: nothing to say


@pytest.mark.flags("use_alts_credentials")
def test_alts_credentials_are_refused_when_asked_for(exported):
    settings, given = cli.parse(["--use_alts_credentials=true", f"--model_base_path={exported / 'hp2'}"])
    assert cli.validate(settings) == ["--use_alts_credentials: ALTS is not available in pyserving"]
    settings, given = cli.parse(["--use_alts_credentials=false", f"--model_base_path={exported / 'hp2'}"])
    assert cli.validate(settings) == [] and cli.no_effect_warnings(settings, given) == []
