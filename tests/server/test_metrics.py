"""Prometheus metrics on the REST port (--monitoring_config_file), with TF Serving's names.

In-process servers; that monitoring without --rest_api_port stops start-up is in test_live.py."""
from __future__ import annotations

import re
import shutil
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from pyserving.examples import half_plus_two
from tests.helpers import call_json, from_numpy, metric, prediction_stub, scrape, status, wait_for


@pytest.mark.flags("monitoring_config_file")
def test_metrics_count_requests_loads_and_batches(exported, tmp_path, serve):
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics/prom" }')
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 16 } batch_timeout_micros { value: 1000 }")
    server = serve([f"--model_base_path={exported / 'hp2'}", "--model_name=hp2",
                    f"--monitoring_config_file={monitoring}", "--enable_batching",
                    f"--batching_parameters_file={batching}"])
    for _ in range(3):
        assert call_json(server, "POST", "/v1/models/hp2:predict", {"instances": [[1.0]]})[0] == 200
    assert call_json(server, "POST", "/v1/models/hp2:predict", {"instances": [["bad"]]})[0] == 400
    assert call_json(server, "POST", "/v1/models/hp2:regress",
                     {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]})[0] == 200
    with grpc.insecure_channel(server.grpc_target) as ch:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "hp2"
        req.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))
        prediction_stub(ch).Predict(req, timeout=10)
    with urllib.request.urlopen(server.rest + "/metrics/prom", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    assert "# TYPE :tensorflow:serving:request_count untyped" in text
    assert metric(text, ":tensorflow:serving:request_count", model_name="hp2", status="OK") == 5
    assert metric(text, ":tensorflow:serving:request_count", model_name="hp2", status="INVALID_ARGUMENT") == 1
    assert metric(text, ":tensorflow:serving:request_latency_count", entrypoint="REST", API="predict") == 4
    assert metric(text, ":tensorflow:serving:request_latency_count", entrypoint="GRPC", API="Predict") == 1
    assert metric(text, ":tensorflow:serving:request_example_count_total", model="hp2") == 0  # Regress: none
    assert metric(text, ":tensorflow:serving:load_attempt_count", model_name="hp2", status="OK") == 1
    assert metric(text, ":tensorflow:serving:load_latency_count", model_name="hp2") == 1
    assert metric(text, ":tensorflow:serving:runtime_latency_count", model_name="hp2") == 5
    assert metric(text, ":tensorflow:serving:batching_session:processed_batch_size_count") == 5
    assert re.search(r":tensorflow:serving:request_latency_bucket\{.*le=\"\+Inf\".*\} 4\.0", text)


def test_metrics_path_is_off_without_config(models_server):
    try:
        urllib.request.urlopen(models_server.rest + "/monitoring/prometheus/metrics", timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as err:
        err.close()
        assert err.code == 404


def test_unload_count_and_batch_padding_with_tf_servings_labels(exported, tmp_path, serve):
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 4 } allowed_batch_sizes: 4 num_batch_threads { value: 1 }")
    base = tmp_path / "m"
    shutil.copytree(exported / "hp2", base)
    server = serve([f"--model_base_path={base}", "--model_name=m", f"--monitoring_config_file={monitoring}",
                    "--enable_batching", f"--batching_parameters_file={batching}"])
    assert call_json(server, "POST", "/v1/models/m:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})
    assert call_json(server, "POST", "/v1/models/m:predict", {"instances": [[1.0], [2.0], [3.0]]})[0] == 200
    half_plus_two.write_tf1(str(base), 2, b=3.0)
    wait_for(lambda: status(server, "m").get(1, {}).get("state") == "END", what="version 1 unloaded")
    text = scrape(server, "/monitoring/prometheus/metrics")
    assert metric(text, ":tensorflow:serving:unload_count", model_name="m") == 1
    # batching_util.h: padding_size{execution_batch_size}, processed_batch_size without labels,
    # both in buckets 1, 2, 4, ... 8192. Batches of 1 and 3 rows, each padded to 4.
    padding = ":tensorflow:serving:batching_session:padding_size"
    assert metric(text, padding + "_count", execution_batch_size="4") == 2
    assert metric(text, padding + "_sum", execution_batch_size="4") == 3 + 1
    assert f'{padding}_bucket{{execution_batch_size="4",le="8192.0"}} 2.0' in text
    processed = ":tensorflow:serving:batching_session:processed_batch_size"
    assert re.search(rf"^{processed}_sum 8\.0$", text, re.MULTILINE)  # no labels at all
    assert f'{processed}_bucket{{le="8192.0"}} 2.0' in text and f'{processed}_bucket{{le="16384.0"}}' not in text
