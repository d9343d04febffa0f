"""pyserving/core/server_core.py: the model list, the Source and the Manager wired together, and
config reloads (server_core.cc's rules: platform fixed, labels checked before any load and only on
AVAILABLE versions, new models waited for, left-out models unloaded), on real version folders."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from pyserving.core.server_core import ServerCore
from pyserving.errors import Code, ServingError
from pyserving.types import ModelConfig, ModelSpec, VersionPolicy, VersionState
from tests.helpers import wait_until

A, E = VersionState.AVAILABLE, VersionState.END
POLL = 0.05


class Loader:
    """Loads a servable per version folder (fails for a folder holding BAD), recording what it was asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, version, path):
        self.calls.append((name, version))
        with open(f"{path}/saved_model.pb", "rb") as f:
            if f.read() == b"BAD":
                raise ServingError(Code.DATA_LOSS, f"cannot parse {path}")
        return Servable(version)


class Servable:
    signatures = {}

    def __init__(self, version):
        self.version = version

    def close(self):
        pass


def versions(base, *numbers, content=b"graph"):
    for n in numbers:
        (base / str(n)).mkdir(parents=True, exist_ok=True)
        (base / str(n) / "saved_model.pb").write_bytes(content)
    return str(base)


def model(name, base, labels=None, versions_=None, platform="tensorflow"):
    policy = VersionPolicy("specific", versions=versions_) if versions_ else VersionPolicy()
    return ModelConfig(name, base, platform, policy, labels or {})


@pytest.fixture
def core():
    loader = Loader()
    core = ServerCore(loader, file_system_poll_wait_s=POLL, max_load_retries=0, load_retry_interval_s=0)
    core.loader = loader
    yield core
    core.stop()


def states(core, name):
    return {s.version: s.state for s in core.manager.status(name)}


def refused(call, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as err:
        call(*args, **kwargs)
    return err.value


def test_a_reload_waits_for_new_models_and_unloads_the_ones_left_out(core, tmp_path):
    a, b = versions(tmp_path / "a", 1, 2), versions(tmp_path / "b", 3)
    core.reload([model("a", a), model("b", b)], timeout=10)
    assert states(core, "a")[2] == A and states(core, "b") == {3: A}  # back only once they serve
    assert sorted(core.configs) == ["a", "b"]
    core.configs.clear()  # a copy
    assert sorted(core.configs) == ["a", "b"]
    core.reload([model("a", a)], timeout=10)
    wait_until(lambda: "b" not in core.manager.model_names())
    assert refused(core.manager.status, "b").code == Code.NOT_FOUND and states(core, "a")[2] == A


def test_a_new_model_that_does_not_load_fails_the_reload_in_tf_servings_words(core, tmp_path):
    bad = versions(tmp_path / "bad", 1, content=b"BAD")
    err = refused(core.reload, [model("bad", bad)], timeout=10)
    assert (err.code, err.message) == (Code.UNKNOWN, "1 model(s) did not become available: {name: bad version: 1} "
                                       f"due to error: cannot parse {bad}/1")
    assert core.loader.calls == [("bad", 1)]  # max_load_retries=0 reached the manager


def test_a_model_s_platform_cannot_change(core, tmp_path):
    a = versions(tmp_path / "a", 1)
    core.reload([model("a", a)], timeout=10)
    err = refused(core.reload, [model("a", a, platform="tflite")])
    assert (err.code, err.message) == (Code.FAILED_PRECONDITION, "Illegal to change a model's platform. For model a "
                                       "platform was tensorflow and new platform requested is tflite")


def test_labels_are_checked_before_anything_loads_and_only_name_available_versions(core, tmp_path):
    a, b = versions(tmp_path / "a", 1), versions(tmp_path / "b", 1)
    core.reload([model("a", a)], timeout=10)
    err = refused(core.reload, [model("a", a, {"stable": 9}), model("b", b)], timeout=10)
    assert (err.code, err.message) == (Code.FAILED_PRECONDITION, "Request to assign label to version 9 of model a, "
                                       "which is not currently available for inference")
    assert list(core.configs) == ["a"] and ("b", 1) not in core.loader.calls  # nothing was done
    core.reload([model("a", a, {"stable": 1})], timeout=10)
    with core.manager.servable(ModelSpec("a", label="stable")) as (version, _s):
        assert version == 1


def test_a_new_model_s_labels_are_refused_before_it_loads_unless_the_flag_allows_new_labels(core, tmp_path):
    """server_core.cc: UpdateModelVersionLabelMap runs before the models are added, so a start-up
    config (or a new model) with labels names versions not loaded yet: refused without the flag."""
    c = versions(tmp_path / "c", 1, 2)
    err = refused(core.reload, [model("c", c, {"stable": 1}, versions_=(1, 2))], timeout=10)
    assert (err.code, err.message) == (Code.FAILED_PRECONDITION, "Request to assign label to version 1 of model c, "
                                       "which is not currently available for inference")
    assert core.loader.calls == []  # refused before anything loads
    allowing = ServerCore(Loader(), file_system_poll_wait_s=POLL, allow_labels_for_unavailable=True)
    try:
        allowing.reload([model("c", c, {"stable": 1, "canary": 2}, versions_=(1, 2))], timeout=10)
        for label, want in (("stable", 1), ("canary", 2)):
            with allowing.manager.servable(ModelSpec("c", label=label)) as (version, _s):
                assert version == want
    finally:
        allowing.stop()


def test_new_labels_may_name_unavailable_versions_only_with_the_flag(tmp_path):
    a = versions(tmp_path / "a", 1)
    core = ServerCore(Loader(), file_system_poll_wait_s=POLL, allow_labels_for_unavailable=True)
    try:
        core.reload([model("a", a, {"stable": 1})], timeout=10)
        core.reload([model("a", a, {"stable": 1, "canary": 2})], timeout=10)  # a new label: allowed
        err = refused(core.reload, [model("a", a, {"stable": 2, "canary": 2})])  # moving one: not
        assert err.code == Code.FAILED_PRECONDITION
    finally:
        core.stop()
    strict = ServerCore(Loader(), file_system_poll_wait_s=POLL)
    try:
        strict.reload([model("a", a)], timeout=10)
        assert refused(strict.reload, [model("a", a, {"canary": 2})]).code == Code.FAILED_PRECONDITION
    finally:
        strict.stop()


def test_the_file_system_is_polled_as_often_as_asked_and_state_changes_are_reported(tmp_path):
    changes = []
    core = ServerCore(Loader(), file_system_poll_wait_s=POLL,
                      on_state_change=lambda name, version, state, error: changes.append((name, version, state)))
    try:
        a = versions(tmp_path / "a", 1)
        core.reload([model("a", a)], timeout=10)
        versions(tmp_path / "a", 2)
        started = time.monotonic()
        wait_until(lambda: states(core, "a").get(2) == A)
        assert time.monotonic() - started < 0.5  # a 1 s poll would most likely not have seen it yet
        assert ("a", 2, A) in changes and ("a", 1, A) in changes
    finally:
        core.stop()


def test_the_config_file_is_polled_and_applied_when_it_changes(core, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pyserving.core.server_core")
    a, b = versions(tmp_path / "a", 1), versions(tmp_path / "b", 1)
    path = tmp_path / "models.config"

    def write(*names):
        entries = "".join(f' config {{ name: "{n}" base_path: "{tmp_path / n}" model_platform: "tensorflow" }}'
                          for n in names)
        path.write_text("model_config_list {" + entries + " }")
        return path.read_text()

    applied = write("a")
    core.reload([model("a", a)], timeout=10)
    core.poll_config_file(str(path), POLL, applied)
    time.sleep(3 * POLL)  # negative (a file read unchanged changes nothing): only a bounded wait shows it
    assert sorted(core.configs) == ["a"] and core.loader.calls == [("a", 1)]  # unchanged: nothing done
    write("a", "b")
    wait_until(lambda: core.manager.available_versions("b") == {1})
    assert core.configs["b"].base_path == b
    path.write_text("model_config_list { config {")  # half-written: the old config stays
    wait_until(lambda: caplog.records)  # the refusal is logged
    time.sleep(3 * POLL)  # negative: later polls of the same file log nothing more; a bounded wait shows it
    assert sorted(core.configs) == ["a", "b"]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and errors[0] == (
        f"Failed to reload model config {path}: Error parsing text-format tensorflow.serving.ModelServerConfig: "
        f'1:28: Expected "}}".\nInvalid protobuf file: \'{path}\'')
    write("b")
    wait_until(lambda: sorted(core.configs) == ["b"])


def test_every_label_is_checked_not_only_up_to_the_first_good_one(tmp_path):
    a = versions(tmp_path / "a", 1)
    for allow, labels in [(False, {"stable": 1, "canary": 9}), (True, {"new": 9, "stable": 9})]:
        core = ServerCore(Loader(), file_system_poll_wait_s=POLL, allow_labels_for_unavailable=allow)
        try:
            core.reload([model("a", a)], timeout=10)
            core.reload([model("a", a, {"stable": 1})], timeout=10)
            assert refused(core.reload, [model("a", a, labels)]).code == Code.FAILED_PRECONDITION
        finally:
            core.stop()


def test_with_the_flag_a_new_model_may_label_a_version_it_does_not_have(tmp_path):
    core = ServerCore(Loader(), file_system_poll_wait_s=POLL, allow_labels_for_unavailable=True)
    try:
        core.reload([model("a", versions(tmp_path / "a", 1), {"canary": 9})], timeout=10)
        assert core.manager.available_versions("a") == {1}
    finally:
        core.stop()


def test_a_new_model_s_labels_wait_for_the_versions_they_name(tmp_path):
    gate = threading.Event()
    loader = Loader()

    def load(name, version, path):
        if version == 1:
            gate.wait(5)  # version 2, the latest, is up first; the labelled one comes later
        return loader(name, version, path)

    core = ServerCore(load, file_system_poll_wait_s=POLL, allow_labels_for_unavailable=True)
    try:
        threading.Timer(0.3, gate.set).start()
        core.reload([model("c", versions(tmp_path / "c", 1, 2), {"stable": 1}, versions_=(1, 2))], timeout=10)
        with core.manager.servable(ModelSpec("c", label="stable")) as (version, _s):
            assert version == 1
    finally:
        gate.set()
        core.stop()


def test_a_reload_gives_up_at_its_timeout(core, tmp_path):
    (tmp_path / "empty").mkdir()
    started = time.monotonic()
    err = refused(core.reload, [model("empty", str(tmp_path / "empty"))], timeout=0.15)
    assert err.code == Code.DEADLINE_EXCEEDED and time.monotonic() - started < 2.0
    gate = threading.Event()
    slow = ServerCore(lambda name, version, path: (version == 2 or gate.wait(5)) and Servable(version),
                      file_system_poll_wait_s=POLL)
    try:  # the latest version is up, the labelled one still loading when the time is up: the label is refused
        versions(tmp_path / "s", 1, 2)
        err = refused(slow.reload, [model("s", str(tmp_path / "s"), {"old": 1}, versions_=(1, 2))], timeout=0.15)
        assert err.code == Code.FAILED_PRECONDITION
    finally:
        gate.set()
        slow.stop()


def test_several_failed_models_are_listed_and_retries_follow_the_interval(tmp_path):
    core = ServerCore(Loader(), file_system_poll_wait_s=POLL, max_load_retries=1, load_retry_interval_s=0)
    try:
        x, y = versions(tmp_path / "x", 1, content=b"BAD"), versions(tmp_path / "y", 2, content=b"BAD")
        started = time.monotonic()
        err = refused(core.reload, [model("x", x), model("y", y)], timeout=10)
        assert time.monotonic() - started < 2.0  # one retry, at once: not a minute later
        assert err.message == ("2 model(s) did not become available: "
                               f"{{name: x version: 1}} due to error: cannot parse {x}/1, "
                               f"{{name: y version: 2}} due to error: cannot parse {y}/2")
    finally:
        core.stop()


def test_one_source_thread_polls_whatever_the_number_of_reloads(core, tmp_path):
    a = versions(tmp_path / "a", 1)
    before = [t.name for t in threading.enumerate()].count("fs-source")  # other servers in this process
    for labels in ({}, {"stable": 1}, {}):
        core.reload([model("a", a, labels)], timeout=10)
    assert [t.name for t in threading.enumerate()].count("fs-source") == before + 1


def test_the_config_poller_is_a_daemon_and_logs_an_unreadable_file_once(core, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pyserving.core.server_core")
    path = tmp_path / "gone.config"
    core.poll_config_file(str(path), POLL, "")
    assert core._poller.daemon and core._poller.name == "config-poller"
    wait_until(lambda: caplog.records)  # the unreadable file is logged
    time.sleep(3 * POLL)  # negative: later polls log nothing more; only a bounded wait shows that
    assert [r.getMessage() for r in caplog.records] == [
        f"Failed to reload model config {path}: [Errno 2] No such file or directory: '{path}'"]


def test_with_the_flag_a_label_may_stay_on_a_version_still_unavailable(tmp_path):
    # server_core.cc (UpdateModelVersionLabelMap): the flag allows a label that is new or keeps its
    # version; only a label moved to another version needs that version available.
    a = versions(tmp_path / "a", 1)
    core = ServerCore(Loader(), file_system_poll_wait_s=POLL, allow_labels_for_unavailable=True)
    try:
        core.reload([model("a", a, {"next": 9})], timeout=10)
        core.reload([model("a", a, {"next": 9, "stable": 1})], timeout=10)  # `next` stays on 9: allowed
        assert refused(core.reload, [model("a", a, {"next": 8, "stable": 1})]).code == Code.FAILED_PRECONDITION
        with core.manager.servable(ModelSpec("a", label="stable")) as (version, _s):
            assert version == 1
    finally:
        core.stop()
