"""`inv serve --replicas=3`: three live servers sharing one models.config, driven by the kit's tasks
as an operator would; each rollout step is acknowledged only once every replica answers the new
labels, so at the moment of the acknowledgement every live replica must already answer them
(checked there, with the task frozen, before a replica that lagged could catch up); a replica
that is down is named, not counted as agreeing. Then the soak over three replicas, one stopped
gracefully and one killed mid-step."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
from types import SimpleNamespace
from typing import Callable

from kit.process import free_port, pid_alive, port_open
from kit.soak import run as soak
from pyserving.examples import half_plus_two
from tests.helpers import ROOT, rest_predict, wait_for

FREEZE_AT = ROOT / "tests" / "e2e" / "freeze_at.py"


def inv(build, *args):
    env = dict(os.environ, KIT_BUILD_DIR=str(build))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def at_acknowledgement(build, check: Callable[[], None], *args) -> subprocess.CompletedProcess:
    """`inv ARGS` (a rollout step), frozen by tests/e2e/freeze_at.py as it writes svm's rollout
    state: rollout.apply writes it right after the replicas' agreement on the labels returned,
    so that is the acknowledgement. check() runs there, while the task is stopped; then the task
    goes on to its end. What `inv` gives: its exit code and output."""
    marker, out_file, err_file = build / "acknowledged.txt", build / "task.out", build / "task.err"
    marker.unlink(missing_ok=True)
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        task = subprocess.Popen(
            [sys.executable, str(FREEZE_AT), str(marker), "write", str(build / "models" / "svm.rollout*"), "--", *args],
            cwd=ROOT, env=dict(os.environ, KIT_BUILD_DIR=str(build)), stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: marker.exists() or task.poll() is not None, timeout=120, what=f"{args} acknowledged",
                 interval=0.005)
        assert marker.exists(), f"{args} ended without writing its rollout state:\n{err_file.read_text()[-2000:]}"
        check()  # at once: no wait here, a replica that had not taken the step must fail it
        task.send_signal(signal.SIGCONT)
        task.wait(120)
    finally:
        if task.poll() is None:  # a failed check: the frozen task is ended by its pid
            task.kill()
            task.wait(10)
    return subprocess.CompletedProcess(task.args, task.returncode, out_file.read_text(), err_file.read_text())


def base_ports(replicas: int) -> tuple[int, int]:
    """A gRPC and a REST port such that every replica's pair (+10*i) is free."""
    for _ in range(50):
        grpc_port = free_port()
        ports = [grpc_port + d + 10 * i for i in range(replicas) for d in (0, 1)]
        if max(ports) < 65536 and not any(port_open(p) for p in ports):
            return grpc_port, grpc_port + 1
    raise AssertionError("no free run of ports")


def answer(rests: list[str], **expected: float) -> Callable[[], None]:
    """A check: every replica of `rests` answers each label with the expected value, now (a
    refusal shows in the assertion as the replica's HTTP status and error)."""
    def ask(rest: str, label: str):
        try:
            return rest_predict(SimpleNamespace(rest=rest), "svm", label=label)
        except urllib.error.HTTPError as err:
            with err:
                return f"HTTP {err.code}: {json.loads(err.read()).get('error')}"

    def check():
        assert {r: {label: ask(r, label) for label in expected} for r in rests} == {r: expected for r in rests}
    return check


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

        # Each step is checked on every replica at the moment it is acknowledged. The publish
        # first pins the version served (label stable) on every replica: a step of its own.
        out = at_acknowledgement(build, answer(rests, stable=2.5), "publish", "--model=svm",
                                 f"--source={staged / '1'}")
        assert out.returncode == 0, out.stderr[-2000:]
        out = at_acknowledgement(build, answer(rests, stable=2.5, canary=3.5), "canary", "--model=svm")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "3 of 3 replicas agreed in " in out.stdout
        out = inv(build, "versions", "--model=svm")
        for i, rest in enumerate(rests):
            assert f"replica {i} ({rest}): 1=AVAILABLE, 2=AVAILABLE; labels stable=1, canary=2" in out.stdout
        out = at_acknowledgement(build, answer(rests, stable=3.5, previous=2.5), "promote", "--model=svm")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "3 of 3 replicas agreed in " in out.stdout

        lost = state["replicas"][2]["pid"]
        os.kill(lost, signal.SIGKILL)
        wait_for(lambda: not pid_alive(lost), timeout=10, what="replica 2 gone")
        # Replicas 0 and 1 take the step; replica 2 cannot be asked: the task says so and fails.
        out = at_acknowledgement(build, answer(rests[:2], stable=2.5), "rollback", "--model=svm")
        assert out.returncode != 0
        assert "2 of 3 replicas agreed in " in out.stdout and f"down: {rests[2]} (" in out.stdout
        assert f"rollback: not acknowledged by 1 replica(s) that could not be asked: {rests[2]}" in out.stderr
        out = inv(build, "versions", "--model=svm")
        assert f"replica 2 ({rests[2]}): down (" in out.stdout
        assert "rollout: stable=1 canary=None previous=None" in out.stdout  # the step stands for the live ones
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
