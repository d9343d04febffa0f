"""Batching in a live server: answers identical to the unbatched server's, under concurrency."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from pyserving.codecs.tensor_proto import from_numpy, to_numpy
from tests.conftest import launch


def rest(server, body, model="hp2tf2"):
    req = urllib.request.Request(f"{server.rest}/v1/models/{model}:predict", data=json.dumps(body).encode(),
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def grpc_predict(server, x, model="hp2tf2"):
    with grpc.insecure_channel(server.grpc_target) as ch:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        req.inputs["x"].CopyFrom(from_numpy(np.asarray(x, np.float32)))
        return to_numpy(prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=60).outputs["y"]).tolist()


@pytest.fixture(scope="module")
def servers(exported, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching")
    params = tmp / "batching.txt"
    params.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 3000 } "
                      "max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }")
    config = tmp / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "hp2tf2" base_path: "{exported / "hp2tf2"}" '
                      f'model_platform: "tensorflow" }} config {{ name: "hp2" base_path: "{exported / "hp2"}" '
                      'model_platform: "tensorflow" } }')
    batched = launch(tmp / "b", [f"--model_config_file={config}", "--enable_batching",
                                 f"--batching_parameters_file={params}"])
    plain = launch(tmp / "p", [f"--model_config_file={config}"])
    yield batched, plain
    batched.stop()
    plain.stop()


def concurrently(calls):
    results = [None] * len(calls)

    def run(i):
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def workload(server):
    calls = []
    for i in range(24):
        rows = [[float(i) + r / 10] for r in range(1 + i % 3)]
        calls.append(lambda rows=rows: rest(server, {"instances": rows}))
        calls.append(lambda rows=rows: grpc_predict(server, rows))
        calls.append(lambda i=i: rest(server, {"signature_name": "regress_x_to_y", "examples": [{"x": float(i)}]},
                                      model="hp2"))
    big = [[float(r) for r in range(20000)]]  # one row, > 64 KiB on either wire: decoded in the pool
    calls.append(lambda: rest(server, {"instances": big}))
    calls.append(lambda: grpc_predict(server, big))
    calls.append(lambda: rest(server, {"signature_name": "dot", "instances": [[1.0, 2.0]]}))
    calls.append(lambda: rest(server, {"signature_name": "dot", "instances": [[1.0, 2.0, 3.0]]}))  # bad inner shape
    calls.append(lambda: rest(server, {"signature_name": "dot", "instances": [[5.0, 6.0], [7.0, 8.0]]}))
    return calls


def test_batched_answers_equal_unbatched_ones_under_concurrency(servers):
    batched, plain = servers
    got = concurrently(workload(batched))
    want = concurrently(workload(plain))
    assert got == want
    assert got[-3] == (200, {"predictions": [[3.0]]})
    assert got[-2][0] == 400 and "Matrix size-incompatible" in got[-2][1]["error"]
    assert got[-1] == (200, {"predictions": [[11.0], [15.0]]})


def test_full_queue_answers_503_at_once_and_server_keeps_serving(exported, tmp_path):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 1 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }")
    server = launch(tmp_path, [f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2",
                               "--enable_batching", f"--batching_parameters_file={params}"])
    try:
        slow = {"signature_name": "slow", "instances": [300000]}  # ~1.5 s of graph loop each
        started = time.monotonic()
        results = concurrently([lambda: rest(server, slow) for _ in range(5)])
        statuses = sorted(status for status, _body in results)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 1, results
        refusal = next(body for status, body in results if status == 503)
        assert refusal == {"error": "The batch scheduling queue to which this task was submitted is full"}
        assert time.monotonic() - started < 60
        assert rest(server, {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})
    finally:
        server.stop()


def test_batching_parameters_file_needs_enable_batching(exported, tmp_path):
    from tests.server.test_startup import run_cli

    params = tmp_path / "b.txt"
    params.write_text("max_batch_size { value: 8 }")
    out = run_cli(f"--model_base_path={exported / 'hp2'}", f"--batching_parameters_file={params}")
    assert out.returncode == 255 and "--batching_parameters_file was given without --enable_batching" in out.stderr


def _metric(server, path, sample):
    with urllib.request.urlopen(server.rest + path, timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(sample + "{") or line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_large_batch_splitting_runs_a_big_request_in_several_batches(exported, tmp_path):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 1000 } "
                      "enable_large_batch_splitting { value: true } max_execution_batch_size { value: 2 }")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    server = launch(tmp_path / "s", [f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2",
                                     "--enable_batching", f"--batching_parameters_file={params}",
                                     f"--monitoring_config_file={monitoring}"])
    try:
        rows = [[float(i)] for i in range(7)]
        assert rest(server, {"instances": rows}) == (200, {"predictions": [[0.5 * i + 2] for i in range(7)]})
        assert grpc_predict(server, rows) == [[0.5 * i + 2] for i in range(7)]
        size = ":tensorflow:serving:batching_session:processed_batch_size"
        assert _metric(server, "/metrics", size + "_count") == 8  # 2 + 2 + 2 + 1, twice
        assert _metric(server, "/metrics", size + "_sum") == 14
        status, body = rest(server, {"instances": [[1.0]] * 9})
        assert status == 400 and "Task size 9 is larger than maximum input batch size 8" in body["error"]
    finally:
        server.stop()


def test_per_model_batching_parameters_come_from_each_version_folder(exported, tmp_path):
    import shutil

    own, plain = tmp_path / "own", tmp_path / "plain"
    shutil.copytree(exported / "hp2tf2", own)
    shutil.copytree(exported / "hp2tf2", plain)
    (own / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 2 } batch_timeout_micros { value: 500 }")
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 4 } num_batch_threads { value: 1 }")
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "own" base_path: "{own}" model_platform: "tensorflow" }} '
                      f'config {{ name: "plain" base_path: "{plain}" model_platform: "tensorflow" }} }}')
    server = launch(tmp_path / "s", [f"--model_config_file={config}", "--enable_batching",
                                     f"--batching_parameters_file={params}", "--enable_per_model_batching_parameters",
                                     "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"])
    try:
        status, body = rest(server, {"instances": [[1.0]] * 3}, model="own")  # its own max_batch_size: 2
        assert status == 400 and "Task size 3 is larger than maximum input batch size 2" in body["error"]
        assert rest(server, {"instances": [[1.0], [2.0]]}, model="own") == (200, {"predictions": [[2.5], [3.0]]})
        many = [[float(i)] for i in range(6)]  # above the server's max_batch_size 4: "plain" is not batched
        assert rest(server, {"instances": many}, model="plain") == (200, {"predictions": [[0.5 * i + 2] for i in range(6)]})
        assert grpc_predict(server, many, model="plain") == [[0.5 * i + 2] for i in range(6)]
        # A version whose batching_params.pbtxt is malformed fails to load; version 1 keeps serving.
        shutil.copytree(exported / "hp2tf2" / "1", own / "2")
        (own / "2" / "batching_params.pbtxt").write_text("max_batch_size { value: ")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{server.rest}/v1/models/own", timeout=10) as resp:
                versions = {v["version"]: v for v in json.loads(resp.read())["model_version_status"]}
            if versions.get("2", {}).get("state") == "END":
                break
            time.sleep(0.2)
        assert versions["2"]["state"] == "END" and "batching_params.pbtxt" in versions["2"]["status"]["error_message"]
        assert versions["1"]["state"] == "AVAILABLE"
        assert rest(server, {"instances": [[1.0]]}, model="own") == (200, {"predictions": [[2.5]]})
    finally:
        server.stop()
