"""client/rest.py on requests: replicas shared round-robin, a request sent to another replica only
when its connection failed before any answer, error answers final, retries counted.

Replicas are pyserving's real ModelServer in-process (tests.helpers.InProcessServer) or, for a
replica killed mid-request, live processes; each replica's own request count comes from its
Prometheus metrics. A raw socket peer stands in for a replica that drops a request unanswered.
"""
from __future__ import annotations

import socket
import threading

import pytest
import requests

from client import rest
from kit.process import free_port
from tests.helpers import InProcessServer, metric, scrape, wait_for, write_gated_model

METRICS = "/monitoring/prometheus/metrics"
PREDICT = "/v1/models/m:predict"


@pytest.fixture
def serve_m(exported, tmp_path):
    """serve_m(*extra flags, base=hp2) -> an in-process replica of model "m" with metrics."""
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")
    started = []

    def start(*extra, base=None):
        server = InProcessServer([f"--model_base_path={base or exported / 'hp2'}", "--model_name=m",
                                  f"--monitoring_config_file={monitoring}", *extra])
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


def served(server) -> int:
    """predict requests a replica answered over REST (any status), by its own metrics."""
    return int(metric(scrape(server, METRICS), ":tensorflow:serving:request_latency_count",
                      entrypoint="REST", API="predict"))


def body(x: float) -> dict:
    return {"instances": [[x]]}


def test_url_helpers():
    assert rest.split_base_url("http://h:8501/v1/models/svm/") == ("http://h:8501", "/v1/models/svm")
    assert rest.split_replica_urls("http://a:1/v1/models/svm, http://b:2/v1/models/svm") == \
        (["http://a:1", "http://b:2"], "/v1/models/svm")
    with pytest.raises(ValueError, match="same path"):
        rest.split_replica_urls(["http://a:1/v1/models/svm", "http://b:2/v1/models/other"])
    with pytest.raises(ValueError, match="not an http"):
        rest.split_base_url("a:1/v1/models/svm")


def test_requests_alternate_over_the_replicas(serve_m):
    a, b = serve_m(), serve_m()
    with rest.Replicas([a.rest, b.rest]) as replicas:
        replies = [replicas.predict(PREDICT, body(float(x))) for x in range(20)]
    assert [r.answer for r in replies] == [{"predictions": [[0.5 * x + 2.0]]} for x in range(20)]
    assert [r.replica for r in replies] == [a.rest, b.rest] * 10 and replicas.retries == 0
    assert replicas.answered == {a.rest: 10, b.rest: 10} and (served(a), served(b)) == (10, 10)


def test_a_stopped_replica_s_requests_go_to_the_other_and_are_counted(serve_m):
    a, b = serve_m(), serve_m()
    nothing = f"http://127.0.0.1:{free_port()}"  # never listened on: refused as well
    with rest.Replicas([a.rest, b.rest, nothing]) as replicas:
        first = [replicas.predict(PREDICT, body(1.0)) for _ in range(6)]
        b.stop()  # pyserving's graceful stop: the port closes, connections are refused
        later = [replicas.predict(PREDICT, body(2.0)) for _ in range(6)]
    assert [r.answer for r in first] == [{"predictions": [[2.5]]}] * 6
    assert [r.answer for r in later] == [{"predictions": [[3.0]]}] * 6
    # Round-robin a, b, nothing: `nothing` was picked twice before the stop (each then answered
    # by `a`, the next one); after it, b and `nothing` twice each (b's go on to `nothing`, then `a`).
    assert [r.retries for r in first] == [0, 0, 1] * 2 and [r.retries for r in later] == [0, 2, 1] * 2
    assert replicas.retries == 2 + 6 and replicas.answered == {a.rest: 10, b.rest: 2, nothing: 0}
    assert served(a) == 10


def test_requests_go_only_to_the_replicas_in_rotation_and_none_in_rotation_is_an_error(serve_m):
    a, b = serve_m(), serve_m()
    rotation = [b.rest]
    with rest.Replicas([a.rest, b.rest], ready=lambda: rotation) as replicas:
        replies = [replicas.predict(PREDICT, body(1.0)) for _ in range(3)]
        rotation = []
        with pytest.raises(rest.ServingError, match="no replica in rotation"):
            replicas.predict(PREDICT, body(1.0))
    assert [r.replica for r in replies] == [b.rest] * 3 and (served(a), served(b)) == (0, 3)
    assert replicas.retries == 0 and replicas.answered == {a.rest: 0, b.rest: 3}


def test_an_error_answer_is_final_and_not_sent_to_another_replica(serve_m, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    write_gated_model(tmp_path / "gated", 1, gate)
    slow = serve_m("--rest_api_timeout_in_ms=300", "--tensorflow_inter_op_parallelism=4", base=tmp_path / "gated")
    other = serve_m()
    try:
        with rest.Replicas([slow.rest, other.rest]) as replicas:
            with pytest.raises(rest.ServingError) as timed_out:  # 504: the model run is held past the timeout
                replicas.predict(PREDICT, body(1.0))
            with pytest.raises(rest.ServingError) as bad:  # 400 from `other`
                replicas.predict(PREDICT, {"instances": [["not a number"]]})
            with pytest.raises(rest.ServingError) as unknown:  # 404 from `slow`
                replicas.predict("/v1/models/nothing:predict", body(1.0))
        assert (timed_out.value.status, bad.value.status, unknown.value.status) == (504, 400, 404)
        assert "HTTP 504" in str(timed_out.value)
        assert replicas.retries == 0 and replicas.answered == {slow.rest: 2, other.rest: 1}
        assert (served(slow), served(other)) == (2, 1)  # each request reached one replica only
    finally:
        (gate / "open").touch()  # lets the held run end before the server stops


class DropsRequests:
    """A peer that accepts each connection, reads the request and closes without an answer."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.requests = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                if b"POST" in conn.recv(65536):
                    self.requests += 1

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux); close() alone would not
        self.sock.close()
        self._thread.join(10)
        assert not self._thread.is_alive()


def test_a_request_dropped_before_any_answer_goes_to_another_replica_once(serve_m):
    a = serve_m()
    peer = DropsRequests()
    try:
        with rest.Replicas([peer.url, a.rest]) as replicas:
            reply = replicas.predict(PREDICT, body(4.0))
        assert reply == rest.Reply({"predictions": [[4.0]]}, a.rest, 1)
        with rest.Replicas([peer.url]) as alone:  # one replica: urllib3 does not send a POST again
            with pytest.raises(rest.ServingError, match="no replica answered"):
                alone.predict(PREDICT, body(4.0))
        with pytest.raises(requests.ConnectionError):
            rest.session().post(peer.url + PREDICT, json=body(4.0), timeout=10)
        assert peer.requests == 3 and alone.retries == 0
    finally:
        peer.close()


def test_a_replica_killed_mid_request_is_replaced_by_another(exported, tmp_path, start_server):
    gate = tmp_path / "gate"
    gate.mkdir()
    write_gated_model(tmp_path / "gated", 1, gate)
    a = start_server([f"--model_base_path={tmp_path / 'gated'}", "--model_name=m",
                      "--tensorflow_inter_op_parallelism=4"], wait=False)
    b = start_server([f"--model_base_path={exported / 'hp2'}", "--model_name=m"], wait=False)
    a.wait_ready(), b.wait_ready()
    replies = []
    with rest.Replicas([a.rest, b.rest]) as replicas:
        sender = threading.Thread(target=lambda: replies.append(replicas.predict(PREDICT, body(6.0))))
        sender.start()  # round-robin: the first request is a's, held inside its model
        wait_for(lambda: any(gate.glob("started-*")), what="the request held in replica a")
        a.process.proc.kill()  # SIGKILL: the connection is reset, no answer was sent
        sender.join(60)
    assert replies == [rest.Reply({"predictions": [[5.0]]}, b.rest, 1)]
    assert replicas.retries == 1 and replicas.answered == {a.rest: 0, b.rest: 1}


def test_urllib3_retries_connections_only_and_not_when_another_replica_is_the_retry():
    retry = rest.session().get_adapter("http://127.0.0.1:1").max_retries
    assert (retry.connect, retry.read, retry.status, retry.other) == (rest.CONNECT_RETRIES, 0, 0, 0)
    nowhere = ["http://127.0.0.1:1", "http://127.0.0.1:2"]  # nothing listens on either
    with rest.Replicas(nowhere[:1]) as one, rest.Replicas(nowhere) as two:
        assert one.session.get_adapter("http://127.0.0.1:1").max_retries.connect == rest.CONNECT_RETRIES
        assert two.session.get_adapter("http://127.0.0.1:1").max_retries.connect == 0
        with pytest.raises(rest.ServingError, match="no replica answered"):
            two.request("/v1/models/m")  # each tried once
        assert two.retries == 1 and two.answered == {"http://127.0.0.1:1": 0, "http://127.0.0.1:2": 0}
