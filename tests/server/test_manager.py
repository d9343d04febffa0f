"""The manager's version transitions, with fake servables (no TensorFlow)."""
from __future__ import annotations

import inspect
import threading
import time

import pytest

from pyserving.core.manager import LOAD, UNLOAD, ServableManager, next_action
from pyserving.core.server_core import ServerCore
from pyserving.errors import Code, ServingError
from pyserving.types import ModelSpec, VersionState, VersionStatus
from tests.helpers import states, wait_until


class Loader:
    def __init__(self, make_servable):
        self.make_servable = make_servable  # the fake_servable fixture (tests/server/conftest.py)
        self.fail: dict[int, int] = {}  # version -> failures left (-1: always)
        self.gate: dict[int, threading.Event] = {}
        self.loaded: list = []
        self.calls: list[int] = []

    def __call__(self, name, version, path):
        self.calls.append(version)
        if version in self.gate:
            self.gate[version].wait(10)
        left = self.fail.get(version, 0)
        if left:
            self.fail[version] = left - 1 if left > 0 else -1
            raise ServingError(Code.DATA_LOSS, f"cannot read version {version}")
        servable = self.make_servable(version)
        self.loaded.append(servable)
        return servable


@pytest.fixture
def loader(fake_servable):
    return Loader(fake_servable)


def test_availability_preserving_switch(loader):
    manager = ServableManager(loader, max_load_retries=0)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    loader.gate[2] = threading.Event()
    manager.set_aspired_versions("m", {2: "/m/2"})
    wait_until(lambda: states(manager).get(2) == VersionState.LOADING)
    with manager.servable(ModelSpec("m")) as (version, _s):
        assert version == 1  # the old version serves while the new one loads
    loader.gate[2].set()
    wait_until(lambda: states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.END})
    assert loader.loaded[0].closed and not loader.loaded[1].closed
    with manager.servable(ModelSpec("m")) as (version, _s):
        assert version == 2
    manager.stop()


def test_failed_new_version_keeps_old_one_serving_and_is_not_retried_later(loader):
    loader.fail[2] = -1
    manager = ServableManager(loader, max_load_retries=1, load_retry_interval_s=0.01)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_aspired_versions("m", {2: "/m/2"})
    wait_until(lambda: states(manager).get(2) == VersionState.END)
    status = {s.version: s for s in manager.status("m")}
    assert status[2].error.code == Code.DATA_LOSS
    assert status[1].state == VersionState.AVAILABLE
    assert loader.calls.count(2) == 2  # first try + one retry
    time.sleep(0.3)
    assert loader.calls.count(2) == 2
    with manager.servable(ModelSpec("m")) as (version, _s):
        assert version == 1
    manager.stop()


def test_reload_aspired_error_while_it_stays_aspired_is_not_retried(loader):
    """aspired_versions_manager_test.cc ReloadAspiredError, with ServerCore's default
    enable_reload_servables_with_error=false (tensorflow_model_server has no flag for it): version 2
    fails; aspired again (still aspired, now loadable), it stays in END and is not served."""
    loader.fail[2] = 1
    manager = ServableManager(loader, max_load_retries=0)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_aspired_versions("m", {2: "/m/2"})
    wait_until(lambda: states(manager).get(2) == VersionState.END)
    manager.set_aspired_versions("m", {2: "/m/2"})  # the same request again: nothing changes
    time.sleep(0.3)
    assert loader.calls.count(2) == 1 and states(manager)[2] == VersionState.END
    with pytest.raises(ServingError):
        with manager.servable(ModelSpec("m", version=2)):
            pass
    manager.stop()


def test_a_failed_version_no_longer_aspired_is_forgotten_and_loads_anew_when_aspired_again(loader):
    """aspired_versions_manager.cc FlushServables: an errored harness that is no longer aspired
    stops being managed; aspired again, it gets a new harness and loads (a rolled-back canary,
    fixed on disk, canaried again). Its END and error stay in the status until then."""
    loader.fail[2] = 1  # broken the first time only: the folder was fixed in between
    manager = ServableManager(loader, max_load_retries=0)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_aspired_versions("m", {1: "/m/1", 2: "/m/2"})  # canary
    wait_until(lambda: states(manager).get(2) == VersionState.END)
    manager.set_aspired_versions("m", {1: "/m/1"})  # rolled back
    time.sleep(0.3)
    status = {s.version: s for s in manager.status("m")}
    assert status[2].state == VersionState.END and status[2].error.code == Code.DATA_LOSS
    manager.set_aspired_versions("m", {1: "/m/1", 2: "/m/2"})  # canaried again
    wait_until(lambda: states(manager).get(2) == VersionState.AVAILABLE)
    assert loader.calls.count(2) == 2
    assert {s.version: s.error for s in manager.status("m")}[2] is None
    with manager.servable(ModelSpec("m", version=2)) as (version, _s):
        assert version == 2
    manager.stop()


def test_retry_succeeds(loader):
    loader.fail[1] = 2
    manager = ServableManager(loader, max_load_retries=2, load_retry_interval_s=0.01)
    manager.set_aspired_versions("m", {1: "/m/1"})
    assert manager.wait_for_latest(["m"], timeout=10)["m"].state == VersionState.AVAILABLE
    manager.stop()


def test_unload_waits_for_in_flight_requests(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    with manager.servable(ModelSpec("m")) as (_v, servable):
        manager.set_aspired_versions("m", {})
        wait_until(lambda: states(manager)[1] == VersionState.UNLOADING)
        time.sleep(0.1)
        assert not servable.closed  # still in use
        with pytest.raises(ServingError) as err:
            with manager.servable(ModelSpec("m")):
                pass
        assert err.value.code == Code.NOT_FOUND
    wait_until(lambda: servable.closed)
    assert states(manager)[1] == VersionState.END
    manager.stop()


def test_labels_and_specific_versions(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1", 2: "/m/2"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.wait_settled("m", {1, 2}, timeout=10)
    manager.set_labels("m", {"stable": 1})
    with manager.servable(ModelSpec("m", label="stable")) as (version, _s):
        assert version == 1
    with manager.servable(ModelSpec("m", version=2)) as (version, _s):
        assert version == 2
    with pytest.raises(ServingError) as err:
        with manager.servable(ModelSpec("m", version=3)):
            pass
    assert err.value.message == "Servable not found for request: Specific(m, 3)"
    with pytest.raises(ServingError) as err:
        with manager.servable(ModelSpec("m", label="nope")):
            pass
    assert err.value.code == Code.INVALID_ARGUMENT
    manager.stop()


def test_removed_model_unloads_everything(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.remove_model("m")
    wait_until(lambda: loader.loaded[0].closed)
    with pytest.raises(ServingError) as err:
        manager.status("m")
    assert err.value.code == Code.NOT_FOUND
    manager.stop()


# ---- the availability-preserving policy, as a table (availability_preserving_policy_test.cc) ----
A, L, E, U = VersionState.AVAILABLE, VersionState.LOADING, VersionState.END, VersionState.UNLOADING
FAILED = ServingError(Code.UNKNOWN, "bad")


def _versions(**states):
    """v1=A, v2=(E, FAILED), ... -> {1: VersionStatus(1, A), 2: VersionStatus(2, E, FAILED)}"""
    out = {}
    for key, value in states.items():
        state, error = value if isinstance(value, tuple) else (value, None)
        out[int(key[1:])] = VersionStatus(int(key[1:]), state, error)
    return out


@pytest.mark.parametrize("aspired,versions,stopping,action", [
    ({1}, {}, False, (LOAD, 1)),                                    # nothing loaded: load it
    ({1, 2}, {}, False, (LOAD, 2)),                                 # the highest aspired first
    ({2}, _versions(v1=A), False, (LOAD, 2)),                       # new version beside the serving one
    ({2}, _versions(v1=A, v2=L), False, None),                      # no unload while the new one loads
    ({2}, _versions(v1=A, v2=A), False, (UNLOAD, 1)),               # ... only once it is AVAILABLE
    ({2}, _versions(v1=A, v2=(E, FAILED)), False, None),            # a failed new version keeps the old serving
    ({2}, _versions(v1=A, v2=(E, FAILED)), True, (UNLOAD, 1)),      # ... until shutdown
    (set(), _versions(v1=A, v2=A), False, (UNLOAD, 1)),             # nothing aspired: unload, lowest first
    ({1}, _versions(v1=E), False, (LOAD, 1)),                       # unloaded without error, aspired again
    ({1}, _versions(v1=(E, FAILED)), False, None),                  # failed: not retried while aspired
    ({3}, _versions(v1=A, v2=A, v3=A), False, (UNLOAD, 1)),
    ({1, 2}, _versions(v1=A, v2=A), False, None),                   # steady state
    ({2}, _versions(v1=U, v2=A), False, None),                      # an unload already under way
    ({3}, _versions(v1=A, v3=A, v2=(E, FAILED)), False, (UNLOAD, 1)),
])
def test_next_action(aspired, versions, stopping, action):
    assert next_action(aspired, versions, stopping) == action


# ---- what the survivors of `make mutate` showed untested ----------------------------------------
class Events:
    """on_state_change's calls, in order."""

    def __init__(self):
        self.calls, self.errors = [], []

    def __call__(self, name, version, state, error):
        self.calls.append((name, version, state, error.code if error else None))
        self.errors.append(error)


def test_each_state_change_is_reported_with_model_version_state_and_error(loader):
    loader.fail[2] = -1
    events = Events()
    manager = ServableManager(loader, max_load_retries=0, on_state_change=events)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_aspired_versions("m", {2: "/m/2"})  # fails: version 1 keeps serving
    wait_until(lambda: len(events.calls) == 4)
    manager.set_aspired_versions("m", {})
    wait_until(lambda: len(events.calls) == 6)
    assert events.calls == [("m", 1, L, None), ("m", 1, A, None), ("m", 2, L, None), ("m", 2, E, Code.DATA_LOSS),
                            ("m", 1, U, None), ("m", 1, E, None)]
    manager.stop()


def test_the_loader_gets_the_model_name_version_and_path(fake_servable):
    calls = []
    manager = ServableManager(lambda *args: calls.append(args) or fake_servable(args[1]))
    manager.set_aspired_versions("mnist", {7: "/models/mnist/0007"})
    manager.wait_for_latest(["mnist"], timeout=10)
    assert calls == [("mnist", 7, "/models/mnist/0007")]
    manager.stop()


def test_a_load_that_raises_something_else_than_a_serving_error_ends_unknown():
    def load(name, version, path):
        raise OSError("disk gone")

    manager = ServableManager(load, max_load_retries=0)
    manager.set_aspired_versions("m", {1: "/m/1"})
    status = manager.wait_for_latest(["m"], timeout=10)["m"]
    assert (status.version, status.state, status.error.code, status.error.message) == (1, E, Code.UNKNOWN, "disk gone")
    manager.stop()


@pytest.mark.parametrize("retries,attempts", [(2, 3), (0, 1), (-1, 1)])
def test_a_failing_load_is_tried_once_plus_max_load_retries_times_without_waiting_when_the_interval_is_0(
        loader, retries, attempts):
    loader.fail[1] = -1
    manager = ServableManager(loader, max_load_retries=retries, load_retry_interval_s=-1)
    started = time.monotonic()
    manager.set_aspired_versions("m", {1: "/m/1"})
    assert manager.wait_for_latest(["m"], timeout=10)["m"].state == E
    assert loader.calls == [1] * attempts and time.monotonic() - started < 0.5
    manager.stop()


def test_the_defaults_are_tf_servings():
    # --max_num_load_retries=5, --load_retry_interval_micros=60000000 (main.cc)
    for factory in (ServableManager, ServerCore):
        parameters = inspect.signature(factory).parameters
        assert parameters["max_load_retries"].default == 5
        assert parameters["load_retry_interval_s"].default == 60.0


def test_stopping_during_a_retry_wait_ends_the_load_cancelled(loader):
    loader.fail[1] = -1
    events = Events()
    manager = ServableManager(loader, max_load_retries=3, load_retry_interval_s=30, on_state_change=events)
    manager.set_aspired_versions("m", {1: "/m/1"})
    wait_until(lambda: loader.calls == [1])
    manager.stop()
    assert events.calls == [("m", 1, L, None), ("m", 1, E, Code.CANCELLED)]
    assert events.errors[-1].message == "load cancelled" and loader.calls == [1]


def test_a_version_unloads_only_once_every_lease_is_released(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    _v1, servable, release_a = manager.lease(ModelSpec("m"))
    _v2, _s, release_b = manager.lease(ModelSpec("m"))
    manager.set_aspired_versions("m", {})
    wait_until(lambda: states(manager)[1] == U)
    release_a()
    time.sleep(0.2)
    assert not servable.closed  # the other request still runs
    release_b()
    started = time.monotonic()
    wait_until(lambda: servable.closed)
    assert time.monotonic() - started < 0.5  # the last release wakes the unload
    manager.stop()


def test_latest_is_the_highest_available_version_whatever_the_order_they_loaded_in(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_aspired_versions("m", {1: "/m/1", 3: "/m/3"})
    manager.wait_for_latest(["m"], timeout=10)
    with manager.servable(ModelSpec("m")) as (version, servable):
        assert version == 3 and servable.version == 3
    assert [s.version for s in manager.status("m")] == [3, 1]  # newest first
    assert [s.version for s in manager.status("m", 1)] == [1]
    manager.stop()


def test_resolving_labels_and_missing_versions_words_errors_as_tf_serving(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_labels("m", {"canary": 3})  # a label may name a version that is not (yet) available
    for spec, code, message in [
        (ModelSpec("m", label="canary"), Code.NOT_FOUND, "Servable not found for request: Specific(m, 3)"),
        (ModelSpec("m", label="nope"), Code.INVALID_ARGUMENT, "Unrecognized servable version label: nope"),
        (ModelSpec("other"), Code.NOT_FOUND, "Servable not found for request: Latest(other)"),
    ]:
        with pytest.raises(ServingError) as err:
            manager.lease(spec)
        assert (err.value.code, err.value.message) == (code, message)
    for name, version, message in [("m", 7, "Could not find version 7 of model m"),
                                   ("x", None, "Could not find any versions of model x")]:
        with pytest.raises(ServingError) as err:
            manager.status(name, version)
        assert (err.value.code, err.value.message) == (Code.NOT_FOUND, message)
    manager.stop()


def test_a_removed_model_serves_no_new_request_while_it_unloads(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    with manager.servable(ModelSpec("m")):
        manager.remove_model("m")
        wait_until(lambda: not manager.model_names())
        with pytest.raises(ServingError) as err:
            manager.lease(ModelSpec("m"))
        assert err.value.code == Code.NOT_FOUND
    wait_until(lambda: loader.loaded[0].closed)
    wait_until(lambda: not any(t.name == "manager-m" for t in threading.enumerate()))  # its worker is done
    manager.stop()


def test_each_model_has_a_daemon_worker_named_after_it(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    assert [t.daemon for t in threading.enumerate() if t.name == "manager-m"] == [True]
    manager.stop()


def test_a_swap_unloads_the_old_version_as_soon_as_the_new_one_is_available(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    manager.wait_for_latest(["m"], timeout=10)
    manager.set_aspired_versions("m", {2: "/m/2"})
    wait_until(lambda: states(manager).get(2) == A)
    started = time.monotonic()
    wait_until(lambda: states(manager)[1] == E)
    assert time.monotonic() - started < 0.5
    manager.stop()


def test_wait_for_latest_reports_a_failed_version_with_its_error(loader):
    loader.fail[2] = -1
    manager = ServableManager(loader, max_load_retries=0)
    manager.set_aspired_versions("m", {1: "/m/1", 2: "/m/2"})
    status = manager.wait_for_latest(["m"], timeout=10)["m"]
    assert (status.version, status.state, status.error.code) == (2, E, Code.DATA_LOSS)
    manager.stop()


@pytest.mark.parametrize("aspire_empty", [True, False])
def test_wait_for_latest_waits_for_a_model_with_nothing_aspired_until_its_timeout(loader, aspire_empty):
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    if aspire_empty:
        manager.set_aspired_versions("empty", {})  # an empty base path
    started = time.monotonic()
    with pytest.raises(ServingError) as err:
        manager.wait_for_latest(["m", "empty"], timeout=0.15)
    assert (err.value.code, err.value.message) == (Code.DEADLINE_EXCEEDED, "models did not become available in time")
    assert 0.15 <= time.monotonic() - started < 1.0
    manager.stop()


def test_wait_for_latest_ends_when_the_manager_stops(loader):
    manager = ServableManager(loader)
    threading.Timer(0.2, manager.stop).start()
    with pytest.raises(ServingError) as err:
        manager.wait_for_latest(["never"])
    assert (err.value.code, err.value.message) == (Code.CANCELLED, "server is shutting down")


def test_wait_settled_waits_for_aspired_versions_to_load_or_fail(loader):
    loader.gate[2] = threading.Event()
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1", 2: "/m/2"})
    manager.wait_settled("unknown", {1})  # no such model: nothing to wait for
    manager.wait_settled("m", {9})  # not aspired: nothing to wait for
    waiter = threading.Thread(target=manager.wait_settled, args=("m", {1, 2}))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # version 2 is still loading
    loader.gate[2].set()
    waiter.join(5)
    assert not waiter.is_alive() and states(manager) == {2: A, 1: A}
    manager.stop()


def test_wait_settled_gives_up_at_its_timeout(loader):
    loader.gate[1] = threading.Event()
    manager = ServableManager(loader)
    manager.set_aspired_versions("m", {1: "/m/1"})
    started = time.monotonic()
    waiter = threading.Thread(target=manager.wait_settled, args=("m", {1}, 0.2))
    waiter.start()
    waiter.join(2)
    assert not waiter.is_alive() and time.monotonic() - started < 1.0
    loader.gate[1].set()
    manager.stop()


def test_stop_unloads_every_version_before_it_returns(loader):
    manager = ServableManager(loader)
    manager.set_aspired_versions("a", {1: "/a/1"})
    manager.set_aspired_versions("b", {2: "/b/2"})
    manager.wait_for_latest(["a", "b"], timeout=10)
    manager.stop()
    assert len(loader.loaded) == 2 and all(s.closed for s in loader.loaded)


def test_without_stopping_an_unaspired_version_waits_for_an_aspired_one():
    versions = {1: VersionStatus(1, A), 2: VersionStatus(2, L)}
    assert next_action({2}, versions) is None  # `stopping` defaults to False
