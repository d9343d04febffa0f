"""`inv serve --replicas=3`: three live servers sharing one models.config, driven by the kit's tasks
as an operator would; rollout steps return once every replica answers the new labels, and a
replica that is down is named, not counted as agreeing. Then the soak over three replicas, one
stopped gracefully and one killed mid-step."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

from kit.process import free_port, pid_alive, port_open
from kit.soak import run as soak
from pyserving.examples import half_plus_two
from tests.helpers import ROOT, rest_predict, wait_for


def inv(build, *args):
    env = dict(os.environ, KIT_BUILD_DIR=str(build))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def base_ports(replicas: int) -> tuple[int, int]:
    """A gRPC and a REST port such that every replica's pair (+10*i) is free."""
    for _ in range(50):
        grpc_port = free_port()
        ports = [grpc_port + d + 10 * i for i in range(replicas) for d in (0, 1)]
        if max(ports) < 65536 and not any(port_open(p) for p in ports):
            return grpc_port, grpc_port + 1
    raise AssertionError("no free run of ports")


def labels_of(rest: str, *labels) -> dict:
    server = SimpleNamespace(rest=rest)
    return {label: rest_predict(server, "svm", label=label) for label in labels}


def test_three_replicas_agree_on_every_step_and_a_dead_one_is_named(tmp_path):
    build = tmp_path / "build"
    base = build / "models" / "svm"
    half_plus_two.write_tf1(str(base), 1, b=2.0)  # answers 2.5 to x=1
    staged = tmp_path / "staged"
    half_plus_two.write_tf1(str(staged), 1, b=3.0)  # 3.5: the version to publish
    grpc_port, rest_port = base_ports(3)
    try:
        out = inv(build, "serve", "--replicas=3", f"--grpc-port={grpc_port}", f"--rest-port={rest_port}")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        state = json.loads((build / "server.json").read_text())
        assert [(r["grpc_port"], r["rest_port"]) for r in state["replicas"]] == [
            (grpc_port + 10 * i, rest_port + 10 * i) for i in range(3)]
        rests = [f"http://127.0.0.1:{r['rest_port']}" for r in state["replicas"]]
        assert [rest_predict(SimpleNamespace(rest=r), "svm") for r in rests] == [2.5, 2.5, 2.5]
        assert "3 replicas share" in out.stdout

        out = inv(build, "publish", "--model=svm", f"--source={staged / '1'}")
        assert out.returncode == 0, out.stderr[-2000:]
        out = inv(build, "canary", "--model=svm")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "3 of 3 replicas agreed in " in out.stdout
        # Returned only once every replica answers both labels with their new versions.
        assert [labels_of(r, "stable", "canary") for r in rests] == [{"stable": 2.5, "canary": 3.5}] * 3

        out = inv(build, "versions", "--model=svm")
        for i, rest in enumerate(rests):
            assert f"replica {i} ({rest}): 1=AVAILABLE, 2=AVAILABLE; labels stable=1, canary=2" in out.stdout

        lost = state["replicas"][2]["pid"]
        os.kill(lost, signal.SIGKILL)
        wait_for(lambda: not pid_alive(lost), timeout=10, what="replica 2 gone")
        out = inv(build, "promote", "--model=svm")
        # Replicas 0 and 1 took the step; replica 2 could not be asked: the task says so and fails.
        assert out.returncode != 0
        assert "2 of 3 replicas agreed in " in out.stdout and f"down: {rests[2]} (" in out.stdout
        assert f"promote: not acknowledged by 1 replica(s) that could not be asked: {rests[2]}" in out.stderr
        assert [labels_of(r, "stable", "previous") for r in rests[:2]] == [{"stable": 3.5, "previous": 2.5}] * 2
        out = inv(build, "versions", "--model=svm")
        assert f"replica 2 ({rests[2]}): down (" in out.stdout
        assert "rollout: stable=2 canary=None previous=1" in out.stdout  # the step stands for the live ones
    finally:
        inv(build, "serve", "--stop")
    assert not (build / "server.json").exists()
    assert not any(pid_alive(r["pid"]) for r in state["replicas"])


def test_a_soak_over_three_replicas_loses_nothing_when_one_is_stopped_and_one_killed(tmp_path):
    summary = soak.run(tmp_path / "soak", switches=6, max_seconds=150, replicas=3, say=lambda _m: None)
    assert summary["switches"] == 6
    assert summary["failed"] == 0, summary["first_errors"]
    assert summary["wrong_version_after_ack"] == 0  # the restarted replicas too: counted by replica
    term, lost = summary["kills"]
    assert (term["signal"], term["replica"], term["exit_code"], term["failed"]) == ("SIGTERM", 1, 0, 0)
    assert (lost["signal"], lost["replica"], lost["failed"]) == ("SIGKILL", 2, 0)
    assert lost["back"] > lost["at"] > term["back"] > term["at"]
    killed_step = next(e for e in summary["events"] if e["down"])  # the step replica 2 died in
    assert killed_step["agreed"] == 2 and len(killed_step["down"]) == 1
    assert all(e["agreed"] == 3 for e in summary["events"] if e is not killed_step)
    # Every replica answered both protocols, and gRPC's round_robin spread its calls evenly.
    assert all(n > 0 for p in ("rest", "grpc") for n in summary["requests_per_replica"][p])
    assert summary["grpc_spread"]["within_limit"], summary["grpc_per_replica_all_up"]
    assert (tmp_path / "soak" / "latency.png").stat().st_size > 10_000
