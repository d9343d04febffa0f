"""kit/rollout/updates.py through the tasks users run: publish checks a version before it publishes it, and a
canary fails fast and puts everything back; versions, remove and test-svm's label; against real
SavedModels the tests export and pyserving's real server, in-process, started with the flags `inv serve`
gives it (tests/e2e/test_updates.py runs the same tasks against a server process)."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
from invoke import MockContext
from invoke.exceptions import Exit

import tasks
from kit import model_config
from kit.pipeline import query
from kit.rollout import plan as rollout
from kit.rollout import updates
from kit.serve import server as serving
from tests.helpers import InProcessServer, rest_predict, status, wait_for


def stopped(call, *args, **kwargs) -> Exit:
    """The Exit a task stopped with (its message is what `inv` prints on stderr)."""
    with pytest.raises(Exit) as info:
        call(MockContext(), *args, **kwargs)
    assert info.value.code == 1
    return info.value


def load_error(path) -> str:
    """What pyserving's loader says about a version it cannot load (the server reports the same), on
    one line."""
    from pyserving.errors import ServingError
    from pyserving.metrics import NullMetrics
    from pyserving.runtime.loader import Loader, SessionOptions

    with pytest.raises(ServingError) as info:
        Loader(SessionOptions(), NullMetrics(), warmup_iterations=1)("m", 1, str(path))
    return " ".join(f"{info.value.code.name}: {info.value.message}".split())


def signature_keys(version_dir) -> set[str]:
    """The SignatureDef keys of a SavedModel's serving MetaGraph, read from its saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    [graph] = [g for g in saved.meta_graphs if list(g.meta_info_def.tags) == ["serve"]]
    return set(graph.signature_def)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """half_plus_two versions (TF1 with b=2 and b=3, TF2), one with a warmup record that runs, one
    with its variables overwritten, one whose warmup record asks for an input the model lacks."""
    from pyserving.examples import half_plus_two
    from pyserving.runtime import warmup

    root = tmp_path_factory.mktemp("exports")
    half_plus_two.write_tf1(str(root / "tf1"), 1)
    half_plus_two.write_tf1(str(root / "tf1b3"), 1, b=3.0)
    half_plus_two.write_tf2(str(root / "tf2"), 1)
    for name, record in (("warm", {"x": np.array([[1.0]], np.float32)}),
                         ("badwarmup", {"z": np.array([[1.0]], np.float32)})):
        shutil.copytree(root / "tf1" / "1", root / name)
        warmup.write_requests(str(root / name), [warmup.predict_log("serving_default", record)])
    shutil.copytree(root / "tf1" / "1", root / "corrupt")
    for data in (root / "corrupt" / "variables").glob("variables.data*"):
        data.write_bytes(bytes((i * 7 + 3) % 256 for i in range(data.stat().st_size)))
    return root


@pytest.fixture
def kit(build, exports):
    """The kit's build folder with svm/1 and mnist/1 (half_plus_two: y = 0.5 x + 2)."""
    for name in ("svm", "mnist"):
        shutil.copytree(exports / "tf1" / "1", build / "models" / name / "1")
    return build


@pytest.fixture
def kit_server(kit):
    """pyserving serving the kit's models.config with the flags `inv serve` passes (ports aside), in
    this process; recorded in server.json as `inv serve` records the server it starts."""
    config = model_config.served()
    flags = [f for f in serving.serve_command("native", config)[1:]
             if not f.startswith(("--port=", "--rest_api_port="))]
    server = InProcessServer(flags)
    try:
        server.start()
        (kit / "server.json").write_text(json.dumps({"backend": "native", "grpc_port": server.grpc_port,
                                                     "rest_port": server.rest_port, "pid": os.getpid()}))
        yield server
    finally:
        (kit / "server.json").unlink(missing_ok=True)
        server.stop()


def on_disk(kit, model="svm") -> list[int]:
    return rollout.disk_versions(kit / "models" / model)


def rollout_files(kit) -> dict:
    """models.config and the SVM's rollout state as bytes (None: absent)."""
    files = (kit / "models" / "models.config", kit / "models" / "svm.rollout.json")
    return {f.name: f.read_bytes() if f.exists() else None for f in files}


REFUSED = "(--force publishes it anyway)"


# ---- publish: refused with one line unless the source is a SavedModel that loads and fits ----------
def test_publish_refuses_a_folder_that_is_not_a_savedmodel(kit, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("not a model")
    message = stopped(tasks.publish, model="svm", source=str(notes)).message
    assert message == (f"publish refused: {notes} is not a SavedModel: it holds no saved_model.pb or "
                       f"saved_model.pbtxt {REFUSED}")
    assert on_disk(kit) == [1] and rollout_files(kit) == {"models.config": None, "svm.rollout.json": None}


def test_publish_refuses_a_base_path_and_names_the_version_to_publish(kit, exports, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(exports / "tf1" / "1", base / "00000123")
    message = stopped(tasks.publish, model="svm", source=str(base)).message
    assert message == (f"publish refused: {base} is not a SavedModel but a base path holding version folder(s) "
                       f"00000123: publish one of them, e.g. --source={base / '00000123'} {REFUSED}")
    assert on_disk(kit) == [1]


def test_publish_refuses_a_savedmodel_that_does_not_load_with_the_loader_s_own_error(kit, exports):
    corrupt = exports / "corrupt"
    message = stopped(tasks.publish, model="svm", source=str(corrupt)).message
    error = load_error(corrupt)
    assert message == f"publish refused: {corrupt} does not load with pyserving's loader: {error} {REFUSED}"
    assert on_disk(kit) == [1] and rollout_files(kit)["models.config"] is None


def test_publish_replays_the_warmup_records_and_refuses_a_version_whose_warmup_fails(kit, exports, capsys):
    bad = exports / "badwarmup"
    message = stopped(tasks.publish, model="svm", source=str(bad)).message
    error = load_error(bad)
    assert "Warmup request 1 of" in error  # pyserving's words for a failed warmup record
    assert message == f"publish refused: {bad} does not load with pyserving's loader: {error} {REFUSED}"
    svm = kit / "models" / "svm"
    capsys.readouterr()
    tasks.publish(MockContext(), model="svm", source=str(exports / "warm"))
    assert capsys.readouterr().out.splitlines() == [
        f"publish: checking {exports / 'warm'} with pyserving's loader in a child process, against svm's stable "
        "version 1",
        f"publish: {exports / 'warm'} loads, its 1 warmup record(s) replayed, signatures compatible with version 1",
        f"published {exports / 'warm'} as {svm / '2'}"]
    assert on_disk(kit) == [1, 2]


def test_publish_refuses_signatures_a_client_of_the_stable_version_cannot_use_unless_forced(kit, exports, capsys):
    tf1, tf2 = exports / "tf1" / "1", exports / "tf2" / "1"
    missing = sorted(signature_keys(tf1) - signature_keys(tf2))
    assert missing  # TF2's half_plus_two lacks some of the TF1 one's signatures
    message = stopped(tasks.publish, model="svm", source=str(tf2)).message
    assert message.startswith(f"publish refused: {tf2} is not compatible with the stable version 1: ")
    assert message.endswith(REFUSED) and len(message.splitlines()) == 1
    assert [k for k in missing if f"signature {k!r} is missing" not in message] == []
    assert on_disk(kit) == [1]
    capsys.readouterr()
    tasks.publish(MockContext(), model="svm", source=str(tf2), force=True)
    svm = kit / "models" / "svm"
    assert capsys.readouterr().out.splitlines() == ["publish --force: not checked", f"published {tf2} as {svm / '2'}"]
    assert (svm / "2" / "saved_model.pb").read_bytes() == (tf2 / "saved_model.pb").read_bytes()


# ---- canary: fails fast, with the server's own error, and puts everything back -----------------------
def test_a_canary_of_a_version_not_on_disk_or_of_the_stable_one_stops_at_once(kit, kit_server):
    before = rollout_files(kit)
    svm = kit / "models" / "svm"
    assert stopped(tasks.canary, model="svm", version=99).message == (
        f"canary: svm has no version 99: {svm} holds versions [1]")
    assert stopped(tasks.canary, model="svm", version=1).message == (
        "canary: nothing new to canary: version 1 is svm's stable version")
    assert stopped(tasks.canary, model="svm").message == (
        "canary: nothing new to canary: version 1 is svm's stable version and the newest on disk "
        "(publish a new one first: inv publish)")
    assert rollout_files(kit) == before


def test_a_canary_that_fails_to_load_stops_with_the_server_s_error_and_puts_everything_back(
        kit, kit_server, exports, capsys):
    tasks.publish(MockContext(), model="svm", source=str(exports / "corrupt"), force=True)  # pins stable=1 first
    before = rollout_files(kit)
    capsys.readouterr()
    message = stopped(tasks.canary, model="svm").message
    [reported] = [s for v, s in status(kit_server, "svm").items() if v == 2]
    assert reported["state"] == "END" and reported["status"]["error_code"] != "OK"
    error = f"{reported['status']['error_code']}: {reported['status']['error_message']}"
    assert message == (
        f"canary: svm version 2 failed to load: {error}\n"
        "canary: models.config and the rollout state are back as they were (stable=1 canary=None previous=None); "
        "the server keeps serving that")
    assert rollout_files(kit) == before
    assert rest_predict(kit_server, "svm", label="stable") == 2.5
    svm = kit / "models" / "svm"  # the next default publish would copy the broken newest version: refused
    assert stopped(tasks.publish, model="svm").message.startswith(
        f"publish refused: {svm / '2'} does not load with pyserving's loader: {reported['status']['error_code']}: ")
    assert on_disk(kit) == [1, 2]
    tasks.versions(MockContext(), model="svm")
    one_line = " ".join(error.split())
    assert capsys.readouterr().out.endswith(
        f"server: 1=AVAILABLE, 2=END; labels stable=1\n  version 2 failed to load: {one_line}\n")
    tasks.remove(MockContext(), model="svm", version=2)
    tasks.versions(MockContext(), model="svm")
    assert capsys.readouterr().out.endswith(f"  version 2 failed to load (no longer on disk): {one_line}\n")


def test_a_broken_canary_fixed_on_disk_and_canaried_again_loads_and_serves(kit, kit_server, exports, capsys,
                                                                              caplog):
    """Fix and retry, as TF Serving allows it (a failed version no longer aspired is forgotten and
    loads anew when aspired again): the failed step put the config back, the folder is fixed in
    place, the same version is canaried again. The kit must not take the old END it saw before its
    own config write for the new attempt's failure."""
    caplog.set_level(logging.INFO, logger="pyserving.core.server_core")

    def reloads() -> int:
        return sum(r.getMessage().startswith("Reloaded model config from ") for r in caplog.records)

    tasks.publish(MockContext(), model="svm", source=str(exports / "corrupt"), force=True)  # version 2
    before = reloads()
    assert stopped(tasks.canary, model="svm").message.startswith("canary: svm version 2 failed to load: ")
    assert status(kit_server, "svm")[2]["state"] == "END"
    # The server reads the restored config (without version 2) at its next poll, as a user's fix
    # takes longer than that poll; only a server that saw 2 leave its config forgets the failure.
    wait_for(lambda: reloads() >= before + 2, what="the server reading the step's config, then the restored one")
    fixed = kit / "models" / "svm" / ".fixing"
    shutil.copytree(exports / "tf1b3" / "1", fixed)  # y = 0.5 x + 3
    shutil.rmtree(kit / "models" / "svm" / "2")
    fixed.rename(kit / "models" / "svm" / "2")
    capsys.readouterr()
    tasks.canary(MockContext(), model="svm", version=2)
    assert "canary: svm stable=1 canary=2 previous=None (acknowledged by the server in " in capsys.readouterr().out
    assert rest_predict(kit_server, "svm", label="canary") == 3.5
    assert rest_predict(kit_server, "svm", label="stable") == 2.5


def test_a_canary_says_what_it_waits_for_until_the_server_decides(kit, kit_server, capsys):
    updates.pin_before_publish("svm")
    before = rollout_files(kit)
    (kit / "models" / "svm" / "2").mkdir()  # no model file: offered after a grace period, then fails to load
    message = stopped(tasks.canary, model="svm", version=2).message
    waiting = [line for line in capsys.readouterr().out.splitlines() if line.startswith("canary: still waiting")]
    assert waiting and all(line.startswith("canary: still waiting for versions [1, 2] of svm to be AVAILABLE "
                                           "(1: AVAILABLE, 2: ") for line in waiting)
    reported = status(kit_server, "svm")[2]["status"]
    assert message.startswith(
        f"canary: svm version 2 failed to load: {reported['error_code']}: {reported['error_message']}\ncanary: ")
    assert rollout_files(kit) == before


def test_a_canary_that_loads_is_acknowledged_and_test_svm_then_asks_for_the_stable_label(kit, kit_server, exports,
                                                                                        capsys):
    assert updates.svm_label() is None  # no rollout: the latest version answers
    tasks.publish(MockContext(), model="svm", source=str(exports / "tf1b3" / "1"), force=True)  # checks: above
    tasks.canary(MockContext(), model="svm")
    assert capsys.readouterr().out.splitlines()[-1].startswith("canary: svm stable=1 canary=2 previous=None")
    assert rest_predict(kit_server, "svm", label="canary") == 3.5
    assert updates.svm_label() == "stable"
    commands = []
    query.query_svm(commands.append, kit_server.rest_port, label=updates.svm_label())
    assert f"http://127.0.0.1:{kit_server.rest_port}/v1/models/svm/labels/stable " in commands[0]


# ---- remove ---------------------------------------------------------------------------------------------
def test_remove_refuses_a_labelled_version_and_the_only_available_one(kit, kit_server, exports, capsys):
    svm = kit / "models" / "svm"
    rollout.publish(svm, exports / "tf1b3" / "1")  # no rollout: the latest policy serves version 2 at once
    wait_for(lambda: rollout.server_status(kit_server.rest, "svm") == {1: "END", 2: "AVAILABLE"},
             what="version 2 serving, 1 retired")
    assert stopped(tasks.remove, model="svm", version=2).message == (
        "remove refused: version 2 is the only AVAILABLE version of svm")
    assert stopped(tasks.remove, model="svm", version=9).message == (
        f"remove: svm has no version 9: {svm} holds versions [1, 2]")
    tasks.remove(MockContext(), model="svm", version=1)
    assert capsys.readouterr().out == f"removed {svm / '1'}\n"
    assert sorted(os.listdir(svm)) == ["2"]
    assert stopped(tasks.remove, model="svm", version=2).message == (
        "remove refused: version 2 is the only version of svm on disk")
    tasks.publish(MockContext(), model="svm", force=True)  # pins stable=2, then copies it as 3
    assert stopped(tasks.remove, model="svm", version=2).message == (
        "remove refused: version 2 of svm holds the label stable (promote or roll back first)")
    tasks.remove(MockContext(), model="svm", version=3)
    assert sorted(os.listdir(svm)) == ["2"] and rest_predict(kit_server, "svm", label="stable") == 3.5
