"""--pyserving_num_workers: a supervisor and worker processes sharing one port pair (live processes).

One 2-worker server serves most tests (started once, with a second supervisor and two plain
servers whose start-ups overlap with it); its last test stops it with SIGTERM. Every process is
stopped by its own pid, also when a test fails (a worker dies with its supervisor).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import requests

from client import balancing
from kit.process import ServerProcess, free_ports, pid_alive, port_open
from kit.rollout import agreement
from kit.rollout import plan as ro
from pyserving import supervisor
from tests.helpers import (
    metric,
    predict_request,
    prediction_stub,
    rest_predict,
    run_cli,
    scrape,
    status,
    wait_for,
    write_config,
)

METRICS = "/monitoring/prometheus/metrics"


def _config(path: Path, base: Path, stable: int) -> Path:
    return write_config(path, {"m": (base, "model_version_policy { specific { versions: 1 versions: 2 } } "
                                           f'version_labels {{ key: "stable" value: {stable} }}')})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """m/1 answers 0.5x + 1, m/2 answers 0.5x + 2: an answer names its version."""
    from pyserving.examples import half_plus_two

    base = tmp_path_factory.mktemp("workers") / "m"
    for version in (1, 2):
        half_plus_two.write_tf1(str(base), version, b=float(version))
    return base


def _start(tmp: Path, name: str, flags: list[str], ready_port: int) -> ServerProcess:
    command = [sys.executable, "-m", "pyserving", *flags]
    return ServerProcess(command, tmp / f"{name}.log", ready_port=ready_port).start()


class Started:
    """The module's processes, started together (their TensorFlow start-ups overlap)."""

    def __init__(self, tmp: Path, models: Path, workers_flag: str):
        self.tmp = tmp
        self.config = _config(tmp / "models.config", models, stable=1)
        (tmp / "monitoring.config").write_text("prometheus_config { enable: true }")
        self.grpc_port, self.rest_port, self.orphan_grpc, self.plain_grpc = free_ports(4)
        self.workers = _start(tmp, "workers", [
            f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", workers_flag,
            f"--model_config_file={self.config}", "--model_config_file_poll_wait_seconds=1",
            f"--monitoring_config_file={tmp / 'monitoring.config'}", "--allow_version_labels_for_unavailable_models",
            "--pyserving_listen_address=127.0.0.1"], self.rest_port)
        # For the orphan test: a supervisor to SIGKILL; for the port test: a plain server.
        self.orphan = _start(tmp, "orphan", [f"--port={self.orphan_grpc}", workers_flag,
                                             "--model_name=m", f"--model_base_path={models}"], None)
        self.plain = _start(tmp, "plain", [f"--port={self.plain_grpc}", "--model_name=m",
                                           f"--model_base_path={models}"], self.plain_grpc)
        # For the start-up failure test: workers that cannot load their model.
        broken = tmp / "broken"
        (broken / "1").mkdir(parents=True)
        (broken / "1" / "saved_model.pb").write_bytes(b"garbage")
        flags = [f"--port={free_ports(1)[0]}", workers_flag, f"--model_base_path={broken}", "--max_num_load_retries=0"]
        self.cannot_load = _start(tmp, "cannot-load", flags, None)
        self.processes = [self.workers, self.orphan, self.plain, self.cannot_load]
        self.rest = f"http://127.0.0.1:{self.rest_port}"

    def start_second_servers(self, models: Path) -> None:
        """Plain servers (no --grpc_channel_arguments) on the plain server's and on the workers'
        gRPC port, started together; the port tests read how they ended."""
        model = ["--model_name=m", f"--model_base_path={models}", "--pyserving_listen_address=127.0.0.1"]
        self.on_plain = _start(self.tmp, "second-on-plain", [f"--port={self.plain_grpc}", *model], None)
        self.on_workers = _start(self.tmp, "second-on-workers", [f"--port={self.grpc_port}", *model], None)
        self.processes += [self.on_plain, self.on_workers]

    def state(self, process: ServerProcess | None = None) -> dict:
        return json.loads(supervisor.state_path((process or self.workers).pid).read_text())

    def all_serving(self, process: ServerProcess | None = None) -> bool:
        try:
            workers = self.state(process)["workers"]
        except (OSError, ValueError):
            return False
        return all(w["serving"] and w["pid"] for w in workers)


@pytest.fixture(scope="module")
def started(tmp_path_factory, models):
    run = Started(tmp_path_factory.mktemp("workers-run"), models, "--pyserving_num_workers=2")
    try:
        for process in (run.workers, run.plain):
            process.wait_ready(180)
        wait_for(run.all_serving, timeout=120, what="both workers serving")
        run.start_second_servers(models)
        yield run
    finally:
        for process in run.processes:
            process.stop()


def _private_urls(run: Started) -> list[str]:
    return [f"http://127.0.0.1:{w['private_rest_port']}" for w in run.state()["workers"]]


# ---- validated once, before any worker -------------------------------------------------------
@pytest.mark.parametrize("flags, error", [
    (["--pyserving_num_workers=two", "--model_base_path=/m"],
     "--pyserving_num_workers: expected a number of workers (1 or more) or auto, got 'two'"),
    (["--pyserving_num_workers=2", "--model_base_path=/m", "--grpc_socket_path=/tmp/s"],
     "--grpc_socket_path cannot be shared by several workers"),
])
def test_bad_worker_flags_stop_start_up_with_one_line(flags, error):
    out = run_cli(*flags)
    assert out.returncode == 255
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tensorflow_model_server: {error}"), out.stderr


def test_a_bad_config_file_stops_the_supervisor_before_any_worker_starts(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text("model_config_list { config { name: 'm' base_path: '/m' model_platform: 'tensorflow' } oops }")
    out = run_cli("--pyserving_num_workers=2", f"--model_config_file={bad}", f"--port={free_ports(1)[0]}")
    assert out.returncode == 255
    failures = [line for line in out.stderr.splitlines() if line.startswith("Failed to start server. Error:")]
    assert len(failures) == 1, out.stderr
    assert "Worker" not in out.stderr and "pyserving.supervisor" not in out.stderr


@pytest.mark.flags("pyserving_num_workers")
def test_a_second_plain_server_on_a_used_grpc_port_fails_to_start(started):
    """--pyserving_num_workers at its default, 1: port reuse off. gRPC turns SO_REUSEPORT on by
    default (grpc#10755): without pyserving turning it off, the second server would share the
    port silently (it did: seen with the old default). Neither gets --grpc_channel_arguments."""
    assert started.on_plain.proc.wait(120) == 255
    assert f"Could not bind gRPC port {started.plain_grpc}" in started.on_plain.log()
    assert started.plain.proc.poll() is None


def test_a_plain_server_cannot_join_the_workers_port(started):
    """Port sharing needs SO_REUSEPORT on both sides: the workers set it, a plain server does not."""
    assert started.on_workers.proc.wait(120) == 255
    assert f"Could not bind gRPC port {started.grpc_port}" in started.on_workers.log()


def test_workers_that_cannot_load_their_model_fail_start_up_and_leave_nothing(started):
    """A worker's first start that fails is the server's start-up failing: TF Serving's exit
    code, the other worker stopped, the run folder removed; nothing is started again."""
    assert started.cannot_load.proc.wait(120) == 255
    log = started.cannot_load.log()
    assert "Failed to start server. Error:" in log and "failed to start (exit code 255): stopping" in log
    assert "starting it again" not in log
    assert not supervisor.run_dir(started.cannot_load.pid).exists()
    pids = [int(line.split("pid ")[1].split(",")[0]) for line in log.splitlines() if "started: pid " in line]
    assert len(pids) == 2 and not any(pid_alive(p) for p in pids)


# ---- the running workers ------------------------------------------------------------------
@pytest.mark.flags("pyserving_num_workers")
def test_two_workers_serve_one_port_pair_and_each_has_a_private_one(started):
    state = started.state()
    assert state["supervisor_pid"] == started.workers.pid
    workers = state["workers"]
    assert [w["slot"] for w in workers] == [0, 1]
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    for pid in pids:  # children of the supervisor
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().split(") ", 1)[1].split()[1]) == started.workers.pid
    shared = SimpleNamespace(rest=started.rest)
    assert status(shared)[1]["state"] == "AVAILABLE"
    assert rest_predict(shared, label="stable") == 1.5
    for url in _private_urls(started):
        assert rest_predict(SimpleNamespace(rest=url), label="stable") == 1.5
    with grpc.insecure_channel(f"127.0.0.1:{started.grpc_port}") as channel:
        reply = prediction_stub(channel).Predict(predict_request("m", [[1.0]], label="stable"), timeout=30)
        assert list(reply.outputs["y"].float_val) == [1.5]


def test_metrics_are_summed_over_the_workers(started):
    shared = SimpleNamespace(rest=started.rest)
    before = metric(scrape(shared, METRICS), ":tensorflow:serving:request_latency_count", API="predict")
    answered = 0
    for n, url in zip((3, 5), _private_urls(started)):  # 3 requests to worker 0, 5 to worker 1
        for _ in range(n):
            rest_predict(SimpleNamespace(rest=url), version=1)
            answered += 1
    for url in [started.rest, *_private_urls(started)]:  # every worker answers the same sum
        text = scrape(SimpleNamespace(rest=url), METRICS)
        assert metric(text, ":tensorflow:serving:request_latency_count", API="predict") == before + answered
    text = scrape(shared, METRICS)
    assert "# TYPE :tensorflow:serving:request_count untyped" in text  # TF Serving's name, no _total
    assert metric(text, ":tensorflow:serving:load_attempt_count", status="OK", version="1") == 2.0  # one per worker


def test_labels_move_on_every_worker_and_the_shared_status_waits_for_all(started, models):
    private = _private_urls(started)
    _config(started.config, models, stable=2)
    agreed = agreement.wait(private, ro.labels_answered("m", {"stable": 2}), 30, "stable=2")
    assert agreed.complete and agreed.agreed == private
    for _ in range(20):  # a new connection each time: any worker
        assert rest_predict(SimpleNamespace(rest=started.rest), label="stable") == 2.5
    _config(started.config, models, stable=1)
    agreement.wait(private, ro.labels_answered("m", {"stable": 1}), 30, "stable=1")


@pytest.mark.flags("pyserving_num_workers")
def test_a_killed_worker_is_restarted_and_clients_see_no_failure(started):
    """SIGKILL one worker under REST and gRPC load: its connections reset, each client sends a
    request that got no answer again (a new connection lands on a live worker; gRPC's retry
    policy does the same), and the supervisor starts the worker again."""
    before = started.state()["workers"]
    victim = before[1]["pid"]
    stop = threading.Event()
    results = {"ok": 0, "failed": []}
    lock = threading.Lock()

    def record(ok: bool, error: str = "") -> None:
        with lock:
            if ok:
                results["ok"] += 1
            else:
                results["failed"].append(error)

    def rest_client() -> None:
        session = requests.Session()
        while not stop.is_set():
            for attempt in range(3):
                try:
                    r = session.post(f"{started.rest}/v1/models/m/labels/stable:predict",
                                     json={"instances": [1.0]}, timeout=30)
                    record(r.status_code == 200 and r.json()["predictions"] == [1.5], r.text[:200])
                    break
                except requests.ConnectionError as exc:
                    if attempt == 2:
                        record(False, repr(exc))
        session.close()

    # One address for every worker: a connection attempt that lands in the killed worker's accept
    # queue is reset (SO_REUSEPORT drops that queue), so a call waits for the channel to reconnect
    # (to a live worker) rather than failing fast, as the REST client tries again.
    wait = balancing.service_config(wait_for_ready=True)

    def grpc_client() -> None:
        with grpc.insecure_channel(f"ipv4:127.0.0.1:{started.grpc_port}",
                                   options=balancing.channel_options(wait)) as channel:
            stub = prediction_stub(channel)
            request = predict_request("m", np.array([[1.0]], np.float32), label="stable")
            while not stop.is_set():
                try:
                    reply = stub.Predict(request, timeout=30)
                    record(list(reply.outputs["y"].float_val) == [1.5], str(reply)[:200])
                except grpc.RpcError as exc:
                    record(False, repr(exc))

    threads = [threading.Thread(target=rest_client) for _ in range(4)]
    threads += [threading.Thread(target=grpc_client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: results["ok"] >= 200, timeout=60, what="load before the kill")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not pid_alive(victim), timeout=10, what="the worker killed")
        at_kill = results["ok"]

        def restarted() -> bool:
            w = started.state()["workers"][1]
            return w["pid"] not in (None, victim) and w["serving"] and w["restarts"] == 1

        wait_for(restarted, timeout=90, what="worker 1 started again and serving")
        wait_for(lambda: results["ok"] >= at_kill + 200, timeout=60, what="load after the restart")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert results["failed"] == []
    assert started.state()["workers"][0]["pid"] == before[0]["pid"]  # the other one never stopped
    assert "Worker 1 (pid %d) died (signal SIGKILL)" % victim in started.workers.log()


def test_a_killed_supervisor_leaves_no_worker_behind(started):
    wait_for(lambda: started.all_serving(started.orphan), timeout=120, what="the second supervisor's workers")
    pids = [w["pid"] for w in started.state(started.orphan)["workers"]]
    started.orphan.proc.send_signal(signal.SIGKILL)
    started.orphan.proc.wait(10)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=30, what="the orphaned workers to exit")
    assert not supervisor.run_dir(started.orphan.pid).exists()  # the last worker out removed it


def test_sigterm_drains_every_worker_and_exits_0(started):
    """Last: stops the module's server."""
    pids = [w["pid"] for w in started.state()["workers"]]
    run_dir = supervisor.run_dir(started.workers.pid)
    assert started.workers.stop(timeout=60) == 0
    assert not any(pid_alive(p) for p in pids)
    assert not run_dir.exists()
    assert not port_open(started.rest_port) and not port_open(started.grpc_port)
    log = started.workers.log()
    assert log.count("Server stopped") == 2 and "Every worker stopped" in log


def test_auto_is_the_cpus_this_process_may_use(tmp_path):
    from pyserving import cpus
    from pyserving.settings import Settings

    assert Settings(pyserving_num_workers="auto").num_workers == cpus.available()
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpus.cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus.cgroup_quota(tmp_path) is None
    assert Settings(pyserving_num_workers="3").num_workers == 3
    assert Settings().num_workers == 1
