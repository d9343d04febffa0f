"""Warmup: TF Serving's tf_serving_warmup_requests file is replayed while a version loads.

In-process servers; a failing warmup request stopping start-up (exit 255) is in test_live.py."""
from __future__ import annotations

import logging
import shutil

import numpy as np
from tensorflow_serving.apis import prediction_log_pb2

from pyserving.examples import half_plus_two
from pyserving.runtime import warmup
from tests.helpers import rest_predict, status, wait_for


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


def test_warmup_off_ignores_the_file(tmp_path, serve):
    base = tmp_path / "m"
    version = half_plus_two.write_tf1(str(base), 1)
    warmup.write_requests(version, [warmup.predict_log("no_such_signature", {"x": np.array([[1.0]], np.float32)})])
    server = serve([f"--model_base_path={base}", "--model_name=m", "--enable_model_warmup=false"])
    assert rest_predict(server) == 2.5
