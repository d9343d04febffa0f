"""Warmup: TF Serving's tf_serving_warmup_requests file is replayed while a version loads.

In-process servers; a failing warmup request stopping start-up (exit 255) is in test_live.py."""
from __future__ import annotations

import logging
import re
import shutil

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from pyserving.errors import ServingError
from pyserving.examples import half_plus_two
from pyserving.runtime import warmup
from tests.helpers import metric, prediction_stub, rest_predict, scrape, status, to_numpy, wait_for


def logs_for_hp2():
    classify = prediction_log_pb2.PredictionLog()
    req = classify.classify_log.request
    req.model_spec.signature_name = "classify_x_to_y"
    req.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    regress = prediction_log_pb2.PredictionLog()
    req = regress.regress_log.request
    req.model_spec.signature_name = "regress_x_to_y"
    req.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    return [warmup.predict_log("serving_default", {"x": np.array([[1.0]], np.float32)}), classify, regress]


@pytest.mark.flags("model_name", "model_base_path")
def test_warmup_records_are_replayed_before_the_version_serves(tmp_path, serve, caplog):
    caplog.set_level(logging.INFO)
    base = tmp_path / "m"
    version = half_plus_two.write_tf1(str(base), 1)
    warmup.write_requests(version, logs_for_hp2())
    server = serve([f"--model_base_path={base}", "--model_name=m", "--num_request_iterations_for_warmup=2"])
    log = caplog.text
    assert "Number of warmup records read: 3." in log
    assert log.index("Number of warmup records read") < log.index("Successfully loaded servable version")
    assert rest_predict(server) == 2.5


def test_malformed_warmup_file_fails_the_load_and_old_version_keeps_serving(tmp_path, exported, serve):
    base = tmp_path / "m"
    shutil.copytree(exported / "hp2", base)
    server = serve([f"--model_base_path={base}", "--model_name=m", "--max_num_load_retries=0"])
    staged = tmp_path / "staged"
    v2 = half_plus_two.write_tf1(str(staged), 2, b=3.0)
    (staged / "2" / "assets.extra").mkdir()
    (staged / "2" / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not a tfrecord at all")
    shutil.move(v2, base / "2")
    states = wait_for(lambda: (s := status(server)).get(2, {}).get("state") == "END" and s, what="v2 END")
    assert "warmup" in states[2]["status"]["error_message"].lower()
    assert rest_predict(server) == 2.5


@pytest.mark.flags("enable_model_warmup")
def test_warmup_off_ignores_the_file(tmp_path, serve):
    base = tmp_path / "m"
    version = half_plus_two.write_tf1(str(base), 1)
    warmup.write_requests(version, [warmup.predict_log("no_such_signature", {"x": np.array([[1.0]], np.float32)})])
    server = serve([f"--model_base_path={base}", "--model_name=m", "--enable_model_warmup=false"])
    assert rest_predict(server) == 2.5


# ---- warmup of a stateful model: how often each record runs ------------------------------------
def write_counter(base, version: int = 1) -> str:
    """TF Serving's counter model (servables/tensorflow/testdata/export_counter.py), exported
    here: a float variable with get_counter, incr_counter, incr_counter_by(delta) and
    reset_counter signatures, each answering the counter's value afterwards."""
    import tensorflow as tf

    v1 = tf.compat.v1
    path = str(base / str(version))
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        counter = v1.Variable(0.0, dtype=tf.float32, name="counter")
        delta = v1.placeholder(tf.float32, name="delta")
        # tf.identity: a resource variable's assign answers a lazy read, not a tensor of its own.
        outputs = {"get_counter": ({}, counter.read_value()),
                   "incr_counter": ({}, tf.identity(counter.assign_add(1.0))),
                   "incr_counter_by": ({"delta": delta}, tf.identity(counter.assign_add(delta))),
                   "reset_counter": ({}, tf.identity(counter.assign(0.0)))}
        sess.run(v1.global_variables_initializer())
        info = v1.saved_model.utils.build_tensor_info
        builder = v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
            name: v1.saved_model.signature_def_utils.build_signature_def(
                {k: info(v) for k, v in inputs.items()}, {"output": info(output)}, "tensorflow/serving/predict")
            for name, (inputs, output) in outputs.items()})
        builder.save()
    return path


def counter_value(server) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "counter", "get_counter"
    with grpc.insecure_channel(server.grpc_target) as channel:
        return to_numpy(prediction_stub(channel).Predict(request, timeout=30).outputs["output"]).item()


def increments(n: int) -> list:
    return [warmup.predict_log("incr_counter", {}) for _ in range(n)]


@pytest.mark.flags("num_request_iterations_for_warmup")
def test_each_warmup_record_runs_as_many_times_as_the_flag_says(tmp_path, serve):
    base = tmp_path / "counter"
    warmup.write_requests(write_counter(base), increments(2))
    server = serve([f"--model_base_path={base}", "--model_name=counter", "--num_request_iterations_for_warmup=3",
                    "--max_num_load_retries=0"])
    assert counter_value(server) == 6.0  # 2 records x 3 iterations (saved_model_warmup_util.cc)
    other = serve([f"--model_base_path={base}", "--model_name=counter", "--max_num_load_retries=0"])
    assert counter_value(other) == 2.0  # each version has its own session: 2 records, once each


def test_at_most_1000_warmup_records(tmp_path, serve):
    # saved_model_warmup_util.cc: WarmupConsts::kMaxNumRecords = 1000; one record more fails the load.
    base = tmp_path / "counter"
    warmup.write_requests(write_counter(base), increments(1000))
    server = serve([f"--model_base_path={base}", "--model_name=counter", "--max_num_load_retries=0"])
    assert counter_value(server) == 1000.0
    over = tmp_path / "over"
    path = write_counter(over)
    warmup.write_requests(path, increments(1001))
    with pytest.raises(ServingError) as err:
        serve([f"--model_base_path={over}", "--model_name=counter", "--max_num_load_retries=0"])
    assert (f"Number of warmup records exceeds the maximum (1000) at {path}/assets.extra/tf_serving_warmup_requests"
            in err.value.message)


def test_warmup_latency_is_recorded_per_version_path_with_tf_servings_status(tmp_path, serve):
    # saved_model_warmup_util.cc: model_warmup_latency{model_path, status}, recorded when the file
    # has been read to its end ("OK") or reading it failed; a failing record returns before that.
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")
    base = tmp_path / "counter"
    v1 = write_counter(base, 1)
    warmup.write_requests(v1, increments(2))
    server = serve([f"--model_base_path={base}", "--model_name=counter", f"--monitoring_config_file={monitoring}",
                    "--max_num_load_retries=0"])
    staged = tmp_path / "staged"
    v2 = write_counter(staged, 2)
    (staged / "2" / "assets.extra").mkdir()
    (staged / "2" / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not a tfrecord at all")
    shutil.move(v2, base / "2")
    wait_for(lambda: status(server, "counter").get(2, {}).get("state") == "END", what="version 2 failed")
    v3 = write_counter(staged, 3)
    warmup.write_requests(v3, [warmup.predict_log("no_such_signature", {})])
    shutil.move(v3, base / "3")
    wait_for(lambda: status(server, "counter").get(3, {}).get("state") == "END", what="version 3 failed")
    text = scrape(server, "/monitoring/prometheus/metrics")
    name = ":tensorflow:serving:model_warmup_latency_count"
    assert metric(text, name, model_path=v1, status="OK") == 1
    assert metric(text, name, model_path=str(base / "2")) == 1
    assert re.search(rf'{name}{{model_path="{base / "2"}",status="DATA_LOSS: [^"]+"}} 1.0', text)
    assert metric(text, name, model_path=str(base / "3")) == 0
    assert metric(text, name) == 2
