"""Online updates: publish / canary / promote / rollback tasks, the soak, and restarts mid-update.

The other failure cases of an update are tested against the server itself: a corrupt new
version (tests/server/test_versions.py::test_failed_version_is_reported_and_old_version_keeps_serving),
a version deleted while serving (…::test_deleted_version_is_retired_and_older_one_comes_back) and a
malformed config file (tests/server/test_app.py::test_config_file_polling_adds_and_removes_models_and_keeps_last_good).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from kit.process import free_port, free_ports, pid_alive
from kit.rollout import plan as rollout
from kit.soak import run as soak
from pyserving.examples import half_plus_two
from tests.helpers import ROOT, rest_predict, wait_for

FREEZE_AT = ROOT / "tests" / "e2e" / "freeze_at.py"


def inv(build, *args):
    env = dict(os.environ, KIT_BUILD_DIR=str(build))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_soak_switches_versions_under_load_with_nothing_dropped(tmp_path):
    summary = soak.run(tmp_path / "soak", switches=8, max_seconds=120, say=lambda _m: None)
    assert summary["switches"] == 8
    assert summary["requests"] > 500
    assert summary["failed"] == 0, summary["first_errors"]
    assert summary["wrong_version_after_ack"] == 0
    actions = {e["action"] for e in summary["events"]}
    assert {"canary", "promote", "rollback"} <= actions
    rss = summary["rss_mb_after_each_switch"]
    assert rss[-1] - rss[1] < 150, rss  # retired versions give their memory back
    assert (tmp_path / "soak" / "latency.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "soak" / "summary.json").read_text())["failed"] == 0


class Build:
    """A kit build folder with an `inv serve` server, driven by the kit's tasks as an operator would."""

    def __init__(self, root):
        self.root = root
        self.models = root / "models"
        self.frozen = []  # tasks stopped mid-way by freeze_at.py: killed by pid at the end

    def serve(self):
        """`inv serve` on fresh ports (a killed server's ports may still be held for a moment)."""
        grpc_port, rest_port = free_ports(2)
        out = inv(self.root, "serve", f"--grpc-port={grpc_port}", f"--rest-port={rest_port}")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        self.server = SimpleNamespace(rest=f"http://127.0.0.1:{rest_port}")
        return self.server

    def run(self, *args, ok=True):
        out = inv(self.root, *args)
        assert (out.returncode == 0) == ok, out.stdout[-2000:] + out.stderr[-2000:]
        return out

    def kill_mid_task(self, step, pattern, *args, while_frozen=lambda: None):
        """Run `inv ARGS`, freeze it at its `step` on a path matching `pattern` (tests/e2e/freeze_at.py),
        call while_frozen(), then SIGKILL the server and the task there, by their pids, as a power cut would."""
        marker, log = self.root / "frozen.txt", self.root / "frozen.log"
        marker.unlink(missing_ok=True)
        with open(log, "wb") as out:
            task = subprocess.Popen([sys.executable, str(FREEZE_AT), str(marker), step, pattern, "--", *args],
                                    cwd=ROOT, env=dict(os.environ, KIT_BUILD_DIR=str(self.root)),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.frozen.append(task)
        wait_for(lambda: marker.exists() or task.poll() is not None, timeout=120, what=f"{args} to reach {step}")
        assert marker.exists(), f"{args} ended without reaching {step}:\n{log.read_text()[-2000:]}"
        while_frozen()
        [replica] = json.loads((self.root / "server.json").read_text())["replicas"]
        server_pid = replica["pid"]
        os.kill(server_pid, signal.SIGKILL)
        task.kill()
        task.wait(10)
        wait_for(lambda: not pid_alive(server_pid), timeout=10, what="the killed server gone")
        return marker.read_text()

    def stop(self):
        for task in self.frozen:
            if task.poll() is None:
                task.kill()
                task.wait(10)
        inv(self.root, "serve", "--stop")  # by the pid in server.json, if one is still running


def by_label(server, *labels) -> dict:
    """{label: svm's answer to x=1 through that label}: 0.5 + b, which tells the versions apart."""
    return {label: rest_predict(server, "svm", label=label) for label in labels}


def test_rollout_tasks_and_a_server_killed_mid_publish_and_mid_promote(tmp_path):
    build = Build(tmp_path / "build")
    base = build.models / "svm"
    half_plus_two.write_tf1(str(base), 1, b=2.0)  # answers 2.5 to x=1
    half_plus_two.write_tf1(str(base), 2, b=3.0)  # 3.5: the newest complete version
    new = tmp_path / "staged"
    half_plus_two.write_tf1(str(new), 1, b=4.0)  # 4.5: the version to publish
    try:
        server = build.serve()
        assert rest_predict(server, "svm") == 3.5

        # Killed mid-publish: the copy is complete and flushed, the rename into place not done.
        step = build.kill_mid_task("rename", str(base / "3"), "publish", "--model=svm", f"--source={new / '1'}")
        assert step.startswith(f"rename {base}/.tmp-publish-3-") and step.endswith(f"/model -> {base / '3'}")
        (staging,) = base.glob(".tmp-publish-*")
        assert (staging / "model" / "saved_model.pb").is_file()
        assert rollout.disk_versions(base) == [1, 2]
        server = build.serve()
        # Back with the newest complete version, under the label the publish pinned first.
        assert rollout.server_status(server.rest, "svm") == {2: "AVAILABLE"}
        assert rest_predict(server, "svm") == 3.5 and by_label(server, "stable") == {"stable": 3.5}

        out = build.run("publish", "--model=svm", f"--source={new / '1'}")
        assert f"as {base / '3'}" in out.stdout
        assert not list(base.glob(".tmp-publish-*"))  # the killed publish's staging folder is cleared
        time.sleep(2.5)  # two file-system polls: the pinned server does not take version 3 up
        assert rollout.server_status(server.rest, "svm") == {2: "AVAILABLE"}
        build.run("canary", "--model=svm")
        assert by_label(server, "stable", "canary") == {"stable": 3.5, "canary": 4.5}

        # Killed mid-promote: the server answers the new labels, the task is writing its rollout state.
        def moved():
            assert by_label(server, "stable", "previous") == {"stable": 4.5, "previous": 3.5}

        step = build.kill_mid_task("write", str(build.models / "svm.rollout*"), "promote", "--model=svm",
                                   while_frozen=moved)
        assert step.startswith(f"write {build.models}/svm.rollout")
        server = build.serve()
        # Back with the labels of the last rollout that completed, every one answering.
        assert by_label(server, "stable", "canary") == {"stable": 3.5, "canary": 4.5}
        assert rollout.server_status(server.rest, "svm") == {2: "AVAILABLE", 3: "AVAILABLE"}
        out = build.run("promote", "--model=svm")  # the interrupted task, run again, completes
        assert "stable=3 canary=None previous=2" in out.stdout
        assert by_label(server, "stable", "previous") == {"stable": 4.5, "previous": 3.5}

        out = build.run("rollback", "--model=svm")
        assert "stable=2" in out.stdout and by_label(server, "stable") == {"stable": 3.5}
        out = build.run("versions", "--model=svm")
        assert "on disk" in out.stdout and "[1, 2, 3]" in out.stdout and "stable=2" in out.stdout
        assert "2=AVAILABLE" in out.stdout
        out = build.run("promote", "--model=svm", ok=False)
        assert "no canary to promote" in out.stderr
    finally:
        build.stop()
    assert not (build.root / "server.json").exists()


def test_serve_gives_up_on_a_model_that_cannot_load_after_one_short_retry(tmp_path):
    """TF Serving's defaults (5 retries, a minute apart) would keep this start-up going for 5 minutes,
    past inv()'s timeout; the kit's flags make it fail with the loader's error at once."""
    build = tmp_path / "build"
    half_plus_two.write_tf1(str(build / "models" / "svm"), 1)
    for data in (build / "models" / "svm" / "1" / "variables").glob("variables.data*"):
        data.write_bytes(b"\0" * data.stat().st_size)  # no longer the checkpoint its index describes
    out = inv(build, "serve", f"--grpc-port={free_port()}", f"--rest-port={free_port()}")
    assert out.returncode != 0 and not (build / "server.json").exists()
    assert "server exited during start-up" in out.stderr
    assert "Failed to start server. Error: " in out.stderr and "(attempt 2 of 2)" in out.stderr
