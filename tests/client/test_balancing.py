"""client/balancing.py: targets and service config, and gRPC's round_robin and retries on real
pyserving processes (replicas sharing one model directory, as pods share a volume).

Each replica's own count of the calls it served comes from its Prometheus metrics
(:tensorflow:serving:request_latency_count, entrypoint GRPC); the client's view from channelz
(balancing.stats). Every process is stopped by its pid at teardown (the start_server fixture).
"""
from __future__ import annotations

import json
import threading

import grpc
import pytest

from client import balancing
from kit.process import free_port
from tests.helpers import metric, predict_request, prediction_stub, scrape, to_numpy, wait_for, write_gated_model

METRICS = "/monitoring/prometheus/metrics"


def test_one_server_is_passed_through_and_several_make_one_static_target():
    assert balancing.grpc_target("localhost:8500") == "localhost:8500"
    assert balancing.grpc_target(["dns:///serving.ns.svc:8500"]) == "dns:///serving.ns.svc:8500"
    assert balancing.grpc_target("127.0.0.1:8500, localhost:8510") == "ipv4:127.0.0.1:8500,127.0.0.1:8510"
    assert balancing.grpc_target(["[::1]:8500", "[::1]:8510"]) == "ipv6:[::1]:8500,[::1]:8510"
    for bad, why in ((["a.example:1", "b.example:2"], "IP addresses"), (["127.0.0.1:1", "[::1]:2"], "IPv4 and IPv6"),
                     (["dns:///svc:1", "127.0.0.1:2"], "stands alone"), (["127.0.0.1"], None),
                     (["127.0.0.1:1", "127.0.0.1"], "host:port"), ("", "no server")):
        if why is None:  # one item is passed through as given, as grpc.insecure_channel would take it
            assert balancing.grpc_target(bad) == bad[0]
            continue
        with pytest.raises(ValueError, match=why):
            balancing.grpc_target(bad)


def test_service_config_is_round_robin_with_retries_on_unavailable_and_cancelled():
    config = balancing.service_config(max_attempts=3)
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    assert method["retryPolicy"]["maxAttempts"] == 3 and "waitForReady" not in method
    assert balancing.service_config(wait_for_ready=True)["methodConfig"][0]["waitForReady"] is True
    assert {"service": "tensorflow.serving.PredictionService"} in method["name"]
    assert not any(n.get("method") == "HandleReloadConfigRequest" for n in method["name"])
    options = dict(balancing.channel_options())
    assert json.loads(options["grpc.service_config"]) == balancing.service_config()
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_reconnect_backoff_ms"] == 1000  # a restarted replica is reached again within a second


@pytest.fixture
def stand_ins():
    """stand_ins(*codes) -> "host:port" of one in-process gRPC server per code: each answers every
    Predict with that status (None: an empty PredictResponse). Peers misbehaving on purpose."""
    from concurrent import futures

    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    servers = []

    def start(*codes):
        targets = []
        for code in codes:
            class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
                def Predict(self, request, context, code=code):
                    if code is not None:
                        context.abort(code, "stand-in says %s" % code.name)
                    return predict_pb2.PredictResponse()

            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
            targets.append("127.0.0.1:%d" % server.add_insecure_port("127.0.0.1:0"))
            server.start()
            servers.append(server)
        return targets

    yield start
    for server in servers:
        server.stop(grace=None)


def both_ready(channel) -> None:
    """Until the channel is connected to both its servers: a call made while only one was would
    meet that one on each attempt."""
    grpc.channel_ready_future(channel).result(timeout=30)
    wait_for(lambda: set(balancing.stats(channel).states.values()) == {"READY"}, what="both subchannels READY")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_a_retryable_status_is_retried_on_another_replica_and_others_are_not(stand_ins, code):
    failing, answering, invalid = stand_ins(code, None, grpc.StatusCode.INVALID_ARGUMENT)
    with balancing.SerialChannel([failing, answering]) as serial:
        stub = prediction_stub(serial.channel)
        both_ready(serial.channel)

        def predict():
            return serial.call(lambda: stub.Predict(predict_request("m", [[1.0]]), timeout=30))

        # channelz may say READY before round_robin's picker holds that subchannel (a fresh
        # clone's first gRPC test once saw a call picked on `failing` twice): calls until one went
        # failing -> answering show the picker rotates over both.
        wait_for(lambda: predict().retries == 1, timeout=30, what="a call retried from failing to answering")
        before = balancing.stats(serial.channel)
        traced = [predict() for _ in range(10)]
        after = balancing.stats(serial.channel)
    seen = {"retries": after.retries - before.retries, "failing": after.attempts[failing] - before.attempts[failing],
            "answered": {r: after.answered[r] - before.answered[r] for r in (failing, answering)},
            "failed": after.failed - before.failed}
    # Each call whose first pick was `failing` was retried once, on `answering`, and said so.
    assert {t.replica for t in traced} == {answering} and {t.retries for t in traced} <= {0, 1}
    assert sum(t.retries for t in traced) == seen["retries"] == seen["failing"] >= 5
    assert seen["answered"] == {failing: 0, answering: 10} and seen["failed"] == 0
    with balancing.SerialChannel([invalid, answering]) as serial:
        stub = prediction_stub(serial.channel)
        both_ready(serial.channel)
        outcomes = []
        for _ in range(6):
            try:
                outcomes.append(serial.call(lambda: stub.Predict(predict_request("m", [[1.0]]), timeout=30)).retries)
            except grpc.RpcError as err:
                outcomes.append((err.code(), err.retries))
        seen = balancing.stats(serial.channel)
    # INVALID_ARGUMENT is an answer: the call fails with it, and `answering` never sees that call.
    assert sorted(outcomes, key=str) == sorted([0] * 3 + [(grpc.StatusCode.INVALID_ARGUMENT, 0)] * 3, key=str)
    assert seen.retries == 0 and seen.failed == 3 and seen.answered == {invalid: 0, answering: 3}


def test_one_server_is_traced_too(stand_ins):
    """A lone host:port is passed through as its target, which channelz names dns:///host:port."""
    [answering] = stand_ins(None)
    with balancing.SerialChannel([answering]) as serial:
        stub = prediction_stub(serial.channel)
        traced = [serial.call(lambda: stub.Predict(predict_request("m", [[1.0]]), timeout=30)) for _ in range(3)]
    assert [(t.replica, t.retries) for t in traced] == [(answering, 0)] * 3


@pytest.fixture
def replicas(exported, tmp_path, start_server):
    """start(n, **per-index args) -> n live servers of model "m" (hp2) with Prometheus metrics,
    started side by side."""
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }")

    def start(n, args=None):
        args = args or {}
        servers = [start_server(args.get(i, [f"--model_base_path={exported / 'hp2'}", "--model_name=m"])
                                + [f"--monitoring_config_file={monitoring}"], wait=False) for i in range(n)]
        return [server.wait_ready() for server in servers]

    return start


def served(server) -> int:
    """Predict calls a replica served over gRPC, by its own metrics."""
    return int(metric(scrape(server, METRICS), ":tensorflow:serving:request_latency_count",
                      entrypoint="GRPC", API="Predict"))


def predict(stub, x: float = 1.0, **kwargs) -> float:
    return float(to_numpy(stub.Predict(predict_request("m", [[x]]), timeout=30, **kwargs).outputs["y"])[0][0])


def test_round_robin_spreads_calls_evenly_and_skips_an_address_nothing_listens_on(replicas):
    a, b = replicas(2)
    nothing = f"127.0.0.1:{free_port()}"
    calls = 200
    with balancing.SerialChannel([a.grpc_target, b.grpc_target, nothing]) as serial:
        stub = prediction_stub(serial.channel)
        traced = [serial.call(lambda x=float(i): predict(stub, x)) for i in range(calls)]
        seen = balancing.stats(serial.channel)
    assert [t.result for t in traced] == [0.5 * i + 2.0 for i in range(calls)]  # every call answered
    counts = [served(a), served(b)]
    assert sum(counts) == calls
    assert all(abs(n - calls / 2) <= 0.25 * calls / 2 for n in counts), counts
    # The client's channelz view is the replicas' own: calls per replica, no retry, none failed;
    # and call by call, which replica answered.
    assert seen.calls == calls and seen.failed == 0 and seen.retries == 0
    assert seen.attempts == seen.answered == {a.grpc_target: counts[0], b.grpc_target: counts[1], nothing: 0}
    assert [sum(t.replica == r for t in traced) for r in (a.grpc_target, b.grpc_target)] == counts
    assert {t.retries for t in traced} == {0}


def test_a_replica_stopped_gracefully_loses_no_call(replicas):
    a, b = replicas(2)
    results, errors, stop = [], [], threading.Event()
    with balancing.channel([a.grpc_target, b.grpc_target]) as channel:
        stub = prediction_stub(channel)

        def load():
            x = 0.0
            while not stop.is_set():
                x += 1
                try:
                    results.append(predict(stub, x) == 0.5 * x + 2.0)
                except grpc.RpcError as err:
                    errors.append(err)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: served(a) >= 20 and served(b) >= 20, what="calls on both replicas")
            before = len(results)
            assert a.stop() == 0  # SIGTERM: pyserving drains its calls and exits
            wait_for(lambda: len(results) >= before + 100, what="100 more calls after the stop")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        seen = balancing.stats(channel)
    # No call failed. A call that reached `a` as it began to stop may have been retried on `b`
    # (CANCELLED by the stopping server, grpc/grpc#41785: see balancing.RETRYABLE_CODES).
    assert errors == [] and all(results)
    assert seen.failed == 0 and sum(seen.answered.values()) == len(results)
    assert seen.answered[b.grpc_target] == served(b)


def test_a_call_on_a_killed_replica_is_retried_on_another_and_counted(replicas, exported, tmp_path):
    """The experiment behind balancing.stats: a call held inside replica A when A is SIGKILLed
    fails UNAVAILABLE on A, and the retry policy sends it to B. gRPC's answer does not say so:
    grpc-previous-rpc-attempts (gRFC A6) reaches the server only (grpc/grpc#32292); channelz
    counts the attempt."""
    gate = tmp_path / "gate"
    gate.mkdir()
    write_gated_model(tmp_path / "gated", 1, gate)
    a, b = replicas(2, {0: [f"--model_base_path={tmp_path / 'gated'}", "--model_name=m",
                            "--tensorflow_inter_op_parallelism=4"]})
    with balancing.channel([a.grpc_target, b.grpc_target]) as channel:
        stub = prediction_stub(channel)
        held = None
        for x in range(1, 11):  # round_robin: one of the first calls is A's
            future = stub.Predict.future(predict_request("m", [[float(x)]]), timeout=60)
            wait_for(lambda f=future: f.done() or any(gate.glob("started-*")), what="an answer or a held call")
            if not future.done():
                held = x, future
                break
            assert float(to_numpy(future.result().outputs["y"])[0][0]) == 0.5 * x + 2.0  # B answered
        assert held is not None, "no call reached replica A"
        before = balancing.stats(channel)
        a.process.proc.kill()  # SIGKILL: the held call's connection is reset, no answer sent
        x, future = held
        answer = future.result(timeout=60)
        after = balancing.stats(channel)
    assert float(to_numpy(answer.outputs["y"])[0][0]) == 0.5 * x + 2.0
    assert after.retries == before.retries + 1 and after.failed == 0
    assert after.answered[b.grpc_target] == before.answered[b.grpc_target] + 1 == served(b)
    metadata = dict(future.initial_metadata()) | dict(future.trailing_metadata())
    assert "grpc-previous-rpc-attempts" not in metadata  # if this fails, grpcio now reports it: use it


async def _aio_calls(targets, calls):
    async with balancing.aio_channel(targets) as channel:
        stub = prediction_stub(channel)
        answers = [float(to_numpy((await stub.Predict(predict_request("m", [[1.0]]), timeout=30)).outputs["y"])[0][0])
                   for _ in range(calls)]
        return answers, balancing.stats(channel)


def test_the_aio_channel_balances_too(replicas):
    import asyncio

    a, b = replicas(2)
    answers, seen = asyncio.run(_aio_calls([a.grpc_target, b.grpc_target], 40))
    assert answers == [2.5] * 40
    assert seen.calls == 40 and seen.answered == {a.grpc_target: served(a), b.grpc_target: served(b)}
    assert min(seen.answered.values()) >= 15
