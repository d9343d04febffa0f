"""kit/rollout/plan.py: publish (the next version number, copied atomically, stale staging folders cleared) and the
rollout state machine, its state file, the config it writes and the server answers it reads."""
from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kit import model_config
from kit.rollout import agreement
from kit.rollout import plan as rollout
from pyserving.core import config
from pyserving.types import VersionPolicy


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"graph")
    (src / "variables" / "variables.index").write_bytes(b"index")
    return src


def test_publish_copies_as_the_next_version_and_clears_stale_staging(tmp_path, source):
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "4").mkdir()
    stale = base / ".tmp-publish-5-abc" / "model"  # a publish killed half-way
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"half a file")
    assert rollout.publish(base, source) == 5
    assert (base / "5" / "saved_model.pb").read_bytes() == b"graph"
    assert (base / "5" / "variables" / "variables.index").read_bytes() == b"index"
    assert sorted(os.listdir(base)) == ["1", "4", "5"]
    assert rollout.disk_versions(base) == [1, 4, 5]


def test_publish_into_a_new_base_starts_at_one(tmp_path, source):
    assert rollout.publish(tmp_path / "new", source) == 1
    assert rollout.disk_versions(tmp_path / "new") == [1]


def test_publish_refuses_an_existing_version(tmp_path, source):
    base = tmp_path / "m"
    (base / "3").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="versions are immutable once published"):
        rollout.publish(base, source, version=3)
    assert os.listdir(base) == ["3"] and os.listdir(base / "3") == []


# ---- what the survivors of `make mutate` showed untested: the rollout's pure state machine,
# its state file, the model config it writes (read back by the server's own reader) and the two
# REST reads it makes, against a stand-in answering as TF Serving's REST API does --------------
def test_a_rollout_s_versions_and_labels():
    assert model_config.plain("m", Path("/b")) == model_config.Rollout("m", "/b", None)
    assert (model_config.plain("m", Path("/b")).versions(), model_config.plain("m", Path("/b")).labels()) == ([], {})
    r = model_config.Rollout("m", "/b", stable=2, canary=5, previous=1)
    assert r.versions() == [1, 2, 5] and r.labels() == {"stable": 2, "canary": 5, "previous": 1}
    assert model_config.Rollout("m", "/b", stable=2).labels() == {"stable": 2}
    assert model_config.Rollout("m", "/b", stable=3, canary=3).versions() == [3]


def test_canary_promote_and_rollback_move_versions_between_roles_and_keep_a_history():
    r = model_config.Rollout("m", "/b", stable=1)
    r = rollout.start_canary(r, 2)
    assert (r.stable, r.canary, r.previous, r.history) == (1, 2, None, [("canary", 2)])
    r = rollout.promote(r)
    assert (r.stable, r.canary, r.previous, r.history) == (2, None, 1, [("canary", 2), ("promote", 2)])
    r = rollout.start_canary(r, 3)
    dropped = rollout.rollback(r)  # with a canary: the canary goes, the rest stays
    assert (dropped.stable, dropped.canary, dropped.previous) == (2, None, 1)
    assert dropped.history[-1] == ("rollback", 3) and (dropped.model, dropped.base_path) == ("m", "/b")
    back = rollout.rollback(dropped)  # without one: the previous stable serves again
    assert (back.stable, back.canary, back.previous, back.history[-1]) == (1, None, None, ("rollback", 2))
    assert (back.model, back.base_path) == ("m", "/b")
    with pytest.raises(ValueError, match="^m has no previous version to roll back to$"):
        rollout.rollback(back)
    with pytest.raises(ValueError, match="^m has no canary to promote$"):
        rollout.promote(back)


def test_the_rollout_state_is_kept_beside_the_config_file(tmp_path):
    config_file = tmp_path / "models.config"
    assert model_config.state_path(config_file, "m") == tmp_path / "m.rollout.json"
    assert model_config.load_state(config_file, "m") is None
    r = rollout.promote(rollout.start_canary(model_config.Rollout("m", "/b", stable=1), 2))
    model_config.save_state(config_file, r)
    back = model_config.load_state(config_file, "m")
    assert (back.stable, back.canary, back.previous, [tuple(h) for h in back.history]) == (
        2, None, 1, [("canary", 2), ("promote", 2)])
    plain = model_config.plain("other", tmp_path / "other")
    found = model_config.rollouts_for(config_file, {"m": Path("/b"), "other": tmp_path})
    assert [(x.model, x.stable) for x in found] == [("m", 2), ("other", None)]
    assert model_config.rollouts_for(config_file, {"other": tmp_path / "other"}) == [plain]


def test_the_model_config_it_writes_is_what_the_server_reads(tmp_path):
    config_file = tmp_path / "models.config"
    (tmp_path / "m").mkdir()
    (tmp_path / "o").mkdir()
    others = [model_config.Rollout("o", str(tmp_path / "o"), stable=4)]
    r = model_config.Rollout("m", str(tmp_path / "m"), stable=1, canary=2)
    model_config.write_rollouts(config_file, others, r)
    read = {c.name: c for c in config.read_file(str(config_file))}
    assert read["m"].policy == VersionPolicy("specific", versions=(1, 2)) and dict(read["m"].labels) == {
        "stable": 1, "canary": 2}
    assert read["o"].policy == VersionPolicy("specific", versions=(4,)) and dict(read["o"].labels) == {"stable": 4}
    model_config.write_rollouts(config_file, others, r, versions=[1, 2, 3], labels={"stable": 1})  # step 1 of a move
    read = {c.name: c for c in config.read_file(str(config_file))}
    assert read["m"].policy.versions == (1, 2, 3) and dict(read["m"].labels) == {"stable": 1}


def test_disk_versions_of_a_missing_base_are_none(tmp_path):
    assert rollout.disk_versions(tmp_path / "absent") == []


class TFServingREST(BaseHTTPRequestHandler):
    """Answers GET /v1/models/m and GET /v1/models/m/labels/<l>/metadata as TF Serving does:
    versions as strings, states by name (get_model_status.proto's JSON)."""

    def do_GET(self):
        if self.path == "/v1/models/m":
            body = {"model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
                {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}}]}
        elif self.path == "/v1/models/m/labels/stable/metadata":
            body = {"model_spec": {"name": "m", "signature_name": "", "version": "2"}, "metadata": {}}
        elif self.path == "/v1/models/empty":
            body = {}  # proto3 JSON leaves an empty list out
        elif self.path == "/v1/models/broken":  # version 2 failed to load; 3 is still loading
            body = {"model_version_status": [
                {"version": "3", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
                {"version": "2", "state": "END", "status": {"error_code": "DATA_LOSS",
                                                            "error_message": "Checksum does not match\n\tat node"}},
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
        elif self.path == "/v1/models/canaried":
            # As TF Serving: version 2 is tried (and fails) only once a config names it, so the
            # first answer (read before a step's config write) has no version 2 yet.
            asks = getattr(self.server, "canaried_asks", 0)
            self.server.canaried_asks = asks + 1
            failed = [{"version": "2", "state": "END", "status": {
                "error_code": "DATA_LOSS", "error_message": "Checksum does not match\n\tat node"}}]
            body = {"model_version_status": [
                {"version": "3", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
                *(failed if asks else []),
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
        elif self.path == "/v1/models/m/labels/broken/metadata":
            body = {"unexpected": True}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def rest():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TFServingREST)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_server_s_answers_are_read_as_tf_serving_writes_them(rest):
    assert rollout.server_status(rest, "m") == {2: "AVAILABLE", 1: "END"}
    assert rollout.label_version(rest, "m", "stable") == 2
    assert rollout.server_status(rest, "absent") == {} and rollout.label_version(rest, "m", "nope") is None
    assert rollout.label_version(rest, "m", "broken") is None and rollout.server_status(rest, "empty") == {}


def test_an_unreachable_server_has_no_status_and_no_labels():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        assert rollout.server_status(closed, "m") == {} and rollout.label_version(closed, "m", "stable") is None
        # what the all-replica wait reads: unreachable is not "no versions", it is a replica down
        with pytest.raises(agreement.ReplicaDown, match="refused"):
            rollout.fetch_versions(closed, "m")
        with pytest.raises(agreement.ReplicaDown, match="refused"):
            rollout.fetch_label(closed, "m", "stable")


def test_each_version_s_error_is_read_with_its_code(rest):
    assert rollout.server_versions(rest, "broken") == {
        3: rollout.VersionReport("LOADING"), 1: rollout.VersionReport("AVAILABLE"),
        2: rollout.VersionReport("END", "DATA_LOSS: Checksum does not match\n\tat node")}
    assert rollout.server_versions(rest, "m")[1] == rollout.VersionReport("END")  # unloaded, no error
    assert rollout.server_status(rest, "broken") == {3: "LOADING", 2: "END", 1: "AVAILABLE"}


def test_a_step_stops_at_a_failed_load_and_puts_the_config_and_the_state_back(tmp_path, rest):
    config_file = tmp_path / "models.config"
    (tmp_path / "b").mkdir()
    pinned = model_config.Rollout("canaried", str(tmp_path / "b"), stable=1)
    model_config.write_rollouts(config_file, [], pinned)
    model_config.save_state(config_file, pinned)
    before = (config_file.read_bytes(), model_config.state_path(config_file, "canaried").read_bytes())
    with pytest.raises(rollout.LoadFailed, match="^canaried version 2 failed to load: DATA_LOSS: Checksum") as info:
        rollout.apply(config_file, rollout.start_canary(pinned, 2), [], [rest], timeout=30)
    assert (info.value.version, info.value.error) == (2, "DATA_LOSS: Checksum does not match\n\tat node")
    assert (config_file.read_bytes(), model_config.state_path(config_file, "canaried").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "canaried.rollout.json", "models.config"]
    said = []
    with pytest.raises(TimeoutError, match=r"^timed out after 0 s waiting for versions \[1, 3\] of canaried to be "
                                           r"AVAILABLE \(1: AVAILABLE, 3: LOADING\)$"):
        rollout.apply(config_file, rollout.start_canary(pinned, 3), [], [rest], timeout=0.3, say=said.append,
                      every=0.1)
    assert (config_file.read_bytes(), model_config.state_path(config_file, "canaried").read_bytes()) == before
    assert said and all(m.startswith("still waiting for versions [1, 3] of canaried to be AVAILABLE (1: AVAILABLE, "
                                     "3: LOADING), ") and m.endswith(" s of 0 s") for m in said)


def test_a_first_step_that_fails_leaves_no_state_and_the_config_as_it_was(tmp_path, rest):
    config_file = tmp_path / "models.config"
    config_file.write_text("model_config_list {}\n")
    with pytest.raises(rollout.LoadFailed):
        rollout.apply(config_file, model_config.Rollout("canaried", str(tmp_path), stable=1, canary=2), [], [rest],
                      timeout=30)
    assert config_file.read_text() == "model_config_list {}\n"
    assert not model_config.state_path(config_file, "canaried").exists()


def test_remove_version_deletes_the_folder_whatever_its_spelling_and_clears_stale_removals(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "00000002" / "variables").mkdir(parents=True)
    (tmp_path / "00000002" / "saved_model.pb").write_bytes(b"graph")
    (tmp_path / ".tmp-remove-5-abc" / "variables").mkdir(parents=True)  # a removal killed half-way
    assert rollout.remove_version(tmp_path, 2) == tmp_path / "00000002"
    assert os.listdir(tmp_path) == ["1"] and rollout.version_dirs(tmp_path) == {1: str(tmp_path / "1")}


def test_a_failure_reported_before_the_step_is_not_the_new_attempt_s(tmp_path, rest):
    """`broken` reports version 2 failed from the start (before the step's config write) and never
    tries it again: the step does not take that old END for its own attempt's failure, it waits."""
    config_file = tmp_path / "models.config"
    pinned = model_config.Rollout("broken", str(tmp_path), stable=1)
    with pytest.raises(TimeoutError, match=r"\(1: AVAILABLE, 2: END, failed before this step: not tried again yet\)$"):
        rollout.apply(config_file, rollout.start_canary(pinned, 2), [], [rest], timeout=0.3)
