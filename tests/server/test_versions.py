"""Version management driven by files on disk (in-process server): polling, availability-preserving
switches, failed, partial and deleted versions, policies and labels."""
from __future__ import annotations

import shutil
import threading
import time
import urllib.error

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2

from pyserving.examples import half_plus_two
from tests.helpers import from_numpy, prediction_stub, rest_predict, status, wait_for, write_config


class Traffic:
    """Clients sending REST and gRPC predicts in a loop until stopped; records every answer."""

    def __init__(self, server, model="m"):
        self.answers: list[tuple[float, float]] = []  # (time, y for x=1)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rest, args=(server, model)),
                         threading.Thread(target=self._grpc, args=(server, model))]

    def _record(self, fn):
        try:
            self.answers.append((time.monotonic(), fn()))
        except Exception as exc:  # every failure is a test failure, kept for the message
            self.failures.append(repr(exc))

    def _rest(self, server, model):
        while not self._stop.is_set():
            self._record(lambda: rest_predict(server, model))

    def _grpc(self, server, model):
        with grpc.insecure_channel(server.grpc_target) as ch:
            stub = prediction_stub(ch)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = model
            req.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))
            while not self._stop.is_set():
                self._record(lambda: stub.Predict(req, timeout=30).outputs["y"].float_val[0])

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(30)


@pytest.fixture
def base(tmp_path, exported):
    path = tmp_path / "m"
    shutil.copytree(exported / "hp2", path)
    return path


def test_new_version_under_load_switches_with_zero_failures(base, serve):
    server = serve([f"--model_base_path={base}", "--model_name=m", "--file_system_poll_wait_seconds=1"])
    with Traffic(server) as traffic:
        time.sleep(1.0)
        half_plus_two.write_tf1(str(base), 2, b=3.0)  # version 2 answers 0.5*x + 3
        wait_for(lambda: any(y == 3.5 for _t, y in traffic.answers), what="answers from version 2")
        switched = next(t for t, y in traffic.answers if y == 3.5)
        time.sleep(1.5)
    assert traffic.failures == []
    assert len(traffic.answers) > 50
    after = [y for t, y in traffic.answers if t > switched + 0.5]
    assert after and set(after) == {3.5}
    states = wait_for(lambda: (s := status(server)) and s[1]["state"] == "END" and s, what="version 1 retired")
    assert states[2]["state"] == "AVAILABLE"


def test_failed_version_is_reported_and_old_version_keeps_serving(base, serve):
    server = serve([f"--model_base_path={base}", "--model_name=m", "--max_num_load_retries=0"])
    bad = base / "3"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    states = wait_for(lambda: (s := status(server)).get(3, {}).get("state") == "END" and s, what="version 3 END")
    assert states[3]["status"]["error_code"] != "OK"
    assert states[3]["status"]["error_message"]
    assert states[1]["state"] == "AVAILABLE"
    assert rest_predict(server) == 2.5
    time.sleep(2)  # later polls do not retry it, and nothing changes
    assert status(server)[1]["state"] == "AVAILABLE"
    assert rest_predict(server) == 2.5


def test_version_still_being_copied_is_not_loaded_until_complete(base, tmp_path, serve):
    server = serve([f"--model_base_path={base}", "--model_name=m", "--max_num_load_retries=0"])
    staged = tmp_path / "staged"
    half_plus_two.write_tf1(str(staged), 2, b=3.0)
    partial = base / "2"
    partial.mkdir()
    shutil.copy(staged / "2" / "saved_model.pb", partial / "saved_model.pb")
    growing = partial / "variables"
    growing.mkdir()
    # A copy in progress: a file that keeps growing. It must not be attempted (no retries are
    # allowed here, so an attempt would end the version in END for good).
    with open(growing / "variables.data-00000-of-00001", "wb") as f:
        for _ in range(25):
            f.write(b"\0" * 1024)
            f.flush()
            time.sleep(0.1)
            assert 2 not in status(server)
            assert rest_predict(server) == 2.5
    shutil.rmtree(partial / "variables")
    shutil.copytree(staged / "2" / "variables", partial / "variables")
    wait_for(lambda: rest_predict(server) == 3.5, what="version 2 served once complete")
    assert status(server)[2]["state"] == "AVAILABLE"


def test_deleted_version_is_retired_and_older_one_comes_back(base, serve):
    half_plus_two.write_tf1(str(base), 2, b=3.0)
    server = serve([f"--model_base_path={base}", "--model_name=m"])
    assert rest_predict(server) == 3.5
    with Traffic(server) as traffic:
        shutil.rmtree(base / "2")
        wait_for(lambda: rest_predict(server) == 2.5, what="version 1 back")
        wait_for(lambda: status(server).get(2, {}).get("state") == "END", what="version 2 retired")
    assert traffic.failures == []


def test_policies_and_labels_from_config(tmp_path, exported, serve):
    base = tmp_path / "m"
    shutil.copytree(exported / "hp2", base)
    half_plus_two.write_tf1(str(base), 2, b=3.0)
    half_plus_two.write_tf1(str(base), 3, b=4.0)
    config = write_config(tmp_path / "models.config", {
        "m": (base, 'model_version_policy { specific { versions: 1 versions: 2 } } '
                    'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'),
        "all": (base, "model_version_policy { all {} }"),
    })
    server = serve([f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"])
    assert rest_predict(server) == 3.5  # latest of the specific versions
    assert rest_predict(server, label="stable") == 2.5
    assert rest_predict(server, label="canary") == 3.5
    assert rest_predict(server, version=1) == 2.5
    with pytest.raises(urllib.error.HTTPError) as err:
        rest_predict(server, version=3)
    err.value.close()
    assert err.value.code == 404
    wait_for(lambda: len([s for s in status(server, "all").values() if s["state"] == "AVAILABLE"]) == 3,
             what="all three versions")
    assert [rest_predict(server, "all", version=v) for v in (1, 2, 3)] == [2.5, 3.5, 4.5]


def test_requests_are_answered_while_a_new_version_loads(tmp_path, serve):
    """No request waits for a load: while version 2 is still LOADING (its warmup replays a run
    of the `slow` signature), version 1 answers requests over REST and gRPC, each one seen
    to start and end inside that LOADING state."""
    from pyserving.runtime import warmup

    base = tmp_path / "m"
    half_plus_two.write_tf2(str(base), 1)
    server = serve([f"--model_base_path={base}", "--model_name=m", "--file_system_poll_wait_seconds=1"])
    staged = half_plus_two.write_tf2(str(tmp_path / "staged"), 2, b=3.0)
    warmup.write_requests(staged, [warmup.predict_log("slow", {"spins": np.array([100_000], np.int64)})])
    shutil.move(staged, base / "2")
    wait_for(lambda: status(server).get(2, {}).get("state") == "LOADING", interval=0.005, what="version 2 LOADING")
    answered = []
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(from_numpy(np.array([[1.0]], np.float32)))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_stub(channel)
        while status(server)[2]["state"] == "LOADING":
            rest_y = rest_predict(server)
            grpc_y = float(np.asarray(stub.Predict(request, timeout=30).outputs["y"].float_val)[0])
            if status(server)[2]["state"] == "LOADING":  # both answers came while it was loading
                answered.append((rest_y, grpc_y))
    assert len(answered) >= 3, f"only {len(answered)} REST+gRPC pairs answered during the load"
    assert set(answered) == {(2.5, 2.5)}  # version 1's y = 0.5 * 1 + 2
    wait_for(lambda: rest_predict(server) == 3.5, what="version 2 serving")  # and then the new one
