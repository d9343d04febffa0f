"""The manager's version transitions, with fake servables (no TensorFlow)."""
from __future__ import annotations

import threading
import time

import pytest

from pyserving.core.manager import LOAD, UNLOAD, ServableManager, next_action
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
