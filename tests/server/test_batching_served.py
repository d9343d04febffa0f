"""Batching in a served model (in-process servers): every answer right under concurrency, batched
or not, full queues, large batch splitting, per-model parameters.

That --batching_parameters_file without --enable_batching stops start-up is in test_live.py.
"""
from __future__ import annotations

import shutil
import time

import pytest

from tests.helpers import call_json, concurrently, grpc_predict, metric, scrape, status, wait_for


def rest(server, body, model="hp2tf2", verb="predict"):
    return call_json(server, "POST", f"/v1/models/{model}:{verb}", body, timeout=60)


@pytest.fixture(scope="module")
def servers(exported, tmp_path_factory, serve_module):
    tmp = tmp_path_factory.mktemp("batching")
    params = tmp / "batching.txt"
    params.write_text("max_batch_size { value: 64 } batch_timeout_micros { value: 3000 } "
                      "max_enqueued_batches { value: 100 } num_batch_threads { value: 2 }")
    config = tmp / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "hp2tf2" base_path: "{exported / "hp2tf2"}" '
                      f'model_platform: "tensorflow" }} config {{ name: "hp2" base_path: "{exported / "hp2"}" '
                      'model_platform: "tensorflow" } }')
    batched = serve_module([f"--model_config_file={config}", "--enable_batching",
                            f"--batching_parameters_file={params}"])
    plain = serve_module([f"--model_config_file={config}"])
    return batched, plain


def hp2(x: float) -> float:
    return 0.5 * x + 2  # half_plus_two; inputs in quarter steps keep every value exact in float32


def workload(server) -> list[tuple]:
    """(call, the answer half_plus_two gives, worked out here) for a mix of REST and gRPC predicts
    of 1-3 rows, regress, a > 64 KiB request on each wire and the `dot` signature, on two models."""
    calls = []
    for i in range(24):
        xs = [float(i) + r / 4 for r in range(1 + i % 3)]
        rows, want = [[x] for x in xs], [[hp2(x)] for x in xs]
        calls.append((lambda rows=rows: rest(server, {"instances": rows}), (200, {"predictions": want})))
        calls.append((lambda rows=rows: grpc_predict(server, rows, model="hp2tf2"), want))
        calls.append((lambda i=i: rest(server, {"signature_name": "regress_x_to_y", "examples": [{"x": float(i)}]},
                                       model="hp2", verb="regress"), (200, {"results": [hp2(i)]})))
    big = [float(r) for r in range(20000)]  # one row, > 64 KiB on either wire: decoded in the pool
    calls.append((lambda: rest(server, {"instances": [big]}), (200, {"predictions": [[hp2(x) for x in big]]})))
    calls.append((lambda: grpc_predict(server, [big], model="hp2tf2"), [[hp2(x) for x in big]]))
    calls.append((lambda: rest(server, {"signature_name": "dot", "instances": [[1.0, 2.0]]}),
                  (200, {"predictions": [[3.0]]})))
    calls.append((lambda: rest(server, {"signature_name": "dot", "instances": [[5.0, 6.0], [7.0, 8.0]]}),
                  (200, {"predictions": [[11.0], [15.0]]})))
    return calls


@pytest.mark.parametrize("which", ["batched", "unbatched"])
def test_every_concurrent_answer_is_right_batched_or_not(servers, which):
    server = servers[0] if which == "batched" else servers[1]
    work = workload(server)

    def bad_shape():
        return rest(server, {"signature_name": "dot", "instances": [[1.0, 2.0, 3.0]]})

    got = concurrently([call for call, _want in work] + [bad_shape])
    wrong = [(i, answer, want) for i, (answer, (_call, want)) in enumerate(zip(got, work)) if answer != want]
    assert not wrong, wrong[:3]
    status_code, body = got[-1]  # TF's own matmul error, as TF Serving passes it on
    assert status_code == 400 and "Matrix size-incompatible: In[0]: [1,3], In[1]: [2,1]" in body["error"]


@pytest.mark.flags("enable_batching", "batching_parameters_file")
def test_full_queue_answers_503_at_once_and_server_keeps_serving(exported, tmp_path, serve):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 1 } max_enqueued_batches { value: 1 } num_batch_threads { value: 1 }")
    server = serve([f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2",
                    "--enable_batching", f"--batching_parameters_file={params}"])
    slow = {"signature_name": "slow", "instances": [300000]}  # ~1.5 s of graph loop each
    started = time.monotonic()
    results = concurrently([lambda: rest(server, slow) for _ in range(5)])
    statuses = sorted(status for status, _body in results)
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, results
    refusal = next(body for status, body in results if status == 503)
    assert refusal == {"error": "The batch scheduling queue to which this task was submitted is full"}
    assert time.monotonic() - started < 60
    assert rest(server, {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})


def test_large_batch_splitting_runs_a_big_request_in_several_batches(exported, tmp_path, serve):
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 1000 } "
                      "enable_large_batch_splitting { value: true } max_execution_batch_size { value: 2 }")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    server = serve([f"--model_base_path={exported / 'hp2tf2'}", "--model_name=hp2tf2",
                    "--enable_batching", f"--batching_parameters_file={params}",
                    f"--monitoring_config_file={monitoring}"])
    rows = [[float(i)] for i in range(7)]
    assert rest(server, {"instances": rows}) == (200, {"predictions": [[0.5 * i + 2] for i in range(7)]})
    assert grpc_predict(server, rows, model="hp2tf2") == [[0.5 * i + 2] for i in range(7)]
    size = ":tensorflow:serving:batching_session:processed_batch_size"
    assert metric(scrape(server, "/metrics"), size + "_count") == 8  # 2 + 2 + 2 + 1, twice
    assert metric(scrape(server, "/metrics"), size + "_sum") == 14
    status_code, body = rest(server, {"instances": [[1.0]] * 9})
    assert status_code == 400 and "Task size 9 is larger than maximum input batch size 8" in body["error"]


@pytest.mark.flags("enable_per_model_batching_parameters")
def test_per_model_batching_parameters_come_from_each_version_folder(exported, tmp_path, serve):
    own, plain = tmp_path / "own", tmp_path / "plain"
    shutil.copytree(exported / "hp2tf2", own)
    shutil.copytree(exported / "hp2tf2", plain)
    (own / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 2 } batch_timeout_micros { value: 500 }")
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 4 } num_batch_threads { value: 1 }")
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "own" base_path: "{own}" model_platform: "tensorflow" }} '
                      f'config {{ name: "plain" base_path: "{plain}" model_platform: "tensorflow" }} }}')
    server = serve([f"--model_config_file={config}", "--enable_batching",
                    f"--batching_parameters_file={params}", "--enable_per_model_batching_parameters",
                    "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"])
    status_code, body = rest(server, {"instances": [[1.0]] * 3}, model="own")  # its own max_batch_size: 2
    assert status_code == 400 and "Task size 3 is larger than maximum input batch size 2" in body["error"]
    assert rest(server, {"instances": [[1.0], [2.0]]}, model="own") == (200, {"predictions": [[2.5], [3.0]]})
    many = [[float(i)] for i in range(6)]  # above the server's max_batch_size 4: "plain" is not batched
    assert rest(server, {"instances": many}, model="plain") == (200, {"predictions": [[0.5 * i + 2] for i in range(6)]})
    assert grpc_predict(server, many, model="plain") == [[0.5 * i + 2] for i in range(6)]
    # A version whose batching_params.pbtxt is malformed fails to load; version 1 keeps serving.
    shutil.copytree(exported / "hp2tf2" / "1", own / "2")
    (own / "2" / "batching_params.pbtxt").write_text("max_batch_size { value: ")
    versions = wait_for(lambda: (s := status(server, "own")).get(2, {}).get("state") == "END" and s,
                        what="version 2 END", interval=0.2)
    assert versions[2]["state"] == "END" and "batching_params.pbtxt" in versions[2]["status"]["error_message"]
    assert versions[1]["state"] == "AVAILABLE"
    assert rest(server, {"instances": [[1.0]]}, model="own") == (200, {"predictions": [[2.5]]})
