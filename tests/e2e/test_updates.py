"""Online updates: publish / canary / promote / rollback tasks, the soak, and restarts mid-update.

The other failure cases of an update are tested against the server itself: a corrupt new
version (tests/server/test_versions.py::test_failed_version_is_reported_and_old_version_keeps_serving),
a version deleted while serving (…::test_deleted_version_is_retired_and_older_one_comes_back) and a
malformed config file (tests/server/test_app.py::test_config_file_polling_adds_and_removes_models_and_keeps_last_good).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

from kit import rollout, soak
from kit.process import free_port
from pyserving.examples import half_plus_two
from tests.helpers import ROOT, rest_predict, wait_for


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


def test_rollout_tasks_against_a_running_server(tmp_path):
    build = tmp_path / "build"
    half_plus_two.write_tf1(str(build / "models" / "svm"), 1, b=2.0)
    grpc_port, rest_port = free_port(), free_port()
    rest = f"http://127.0.0.1:{rest_port}"
    out = inv(build, "serve", f"--grpc-port={grpc_port}", f"--rest-port={rest_port}")
    assert out.returncode == 0, out.stderr
    try:
        staged = tmp_path / "staged"
        half_plus_two.write_tf1(str(staged), 7, b=3.0)
        out = inv(build, "publish", "--model=svm", f"--source={staged / '7'}")
        assert out.returncode == 0 and f"as {build / 'models' / 'svm' / '2'}" in out.stdout
        assert "pin: svm stable=1" in out.stdout  # pinned first: the new version is not live yet
        time.sleep(2.5)  # two file-system polls
        assert rollout.server_status(rest, "svm") == {1: "AVAILABLE"}
        assert inv(build, "canary", "--model=svm").returncode == 0
        server = SimpleNamespace(rest=rest)
        assert rest_predict(server, "svm", label="stable") == 2.5
        assert rest_predict(server, "svm", label="canary") == 3.5
        out = inv(build, "promote", "--model=svm")
        assert out.returncode == 0 and "stable=2" in out.stdout
        assert rest_predict(server, "svm", label="stable") == 3.5
        assert rest_predict(server, "svm", label="previous") == 2.5
        out = inv(build, "rollback", "--model=svm")
        assert out.returncode == 0 and "stable=1" in out.stdout
        assert rest_predict(server, "svm", label="stable") == 2.5
        out = inv(build, "versions", "--model=svm")
        assert "on disk" in out.stdout and "[1, 2]" in out.stdout and "stable=1" in out.stdout
        assert "1=AVAILABLE" in out.stdout
        out = inv(build, "promote", "--model=svm")
        assert out.returncode != 0 and "no canary to promote" in out.stderr
    finally:
        inv(build, "serve", "--stop")
    assert not (build / "server.json").exists()


def test_server_killed_mid_update_comes_back_with_the_newest_complete_version(tmp_path, exported, start_server):
    base = tmp_path / "m"
    shutil.copytree(exported / "hp2", base)
    half_plus_two.write_tf1(str(base), 2, b=3.0)
    # A publish killed half-way leaves only its staging folder, which is not a version.
    partial = base / ".tmp-publish-3-abc" / "model"
    (partial / "variables").mkdir(parents=True)
    (partial / "saved_model.pb").write_bytes(b"half a file")
    server = start_server([f"--model_base_path={base}", "--model_name=m"])
    assert rest_predict(server) == 3.5
    server.process.proc.send_signal(signal.SIGKILL)
    server.process.proc.wait(10)
    again = start_server([f"--model_base_path={base}", "--model_name=m"])
    assert rest_predict(again) == 3.5
    staged = tmp_path / "staged"
    half_plus_two.write_tf1(str(staged), 1, b=4.0)
    assert rollout.publish(base, staged / "1") == 3
    assert not (base / ".tmp-publish-3-abc").exists()  # the stale staging folder is cleared
    wait_for(lambda: rest_predict(again) == 4.5, what="version 3 served")


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
