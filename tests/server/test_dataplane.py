"""The data plane: a Predict's two steps (prepare leases, submit hands the run over), the lease
held until the run ends, and the runners (no TensorFlow: a servable that doubles its input)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from pyserving import dtypes
from pyserving.core.dataplane import DataPlane
from pyserving.core.runners import PoolRunner, wait
from pyserving.core.server_core import ServerCore
from pyserving.core.signatures import SignatureNotFound
from pyserving.errors import Code, ServingError
from pyserving.protocols.metrics import NullMetrics
from pyserving.types import PREDICT_METHOD, ModelSpec, RunRequest, SignatureInfo, TensorSpec, VersionState


class Doubler:
    """A servable with one predict signature, x -> y, that records whether it was closed."""

    signatures = {"serving_default": SignatureInfo(
        PREDICT_METHOD, {"x": TensorSpec("x:0", dtypes.DT_FLOAT, (-1, 1))},
        {"y": TensorSpec("y:0", dtypes.DT_FLOAT, (-1, 1))})}

    def __init__(self):
        self.closed = False
        self.threads: list[str] = []

    def run(self, signature_name, inputs, output_keys, timeout_s=None):
        self.threads.append(threading.current_thread().name)
        return {"y": inputs["x"] * 2}

    def close(self):
        self.closed = True


class HeldRunner:
    """Hands out Futures the test completes itself."""

    def __init__(self):
        self.pending: list[tuple[Future, dict]] = []

    def submit(self, request: RunRequest, inline: bool = False) -> Future:
        future = Future()
        self.pending.append((future, request.run()))
        return future


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def x(value):
    return {"x": np.array([[value]], np.float32)}


@pytest.fixture
def plane():
    servable, runner = Doubler(), HeldRunner()
    core = ServerCore(lambda name, version, path: servable)
    core.manager.set_aspired_versions("m", {3: "/m/3"})
    core.manager.wait_for_latest(["m"], timeout=10)
    yield DataPlane(core, runner, NullMetrics()), core.manager, runner, servable
    core.stop()


def state(manager, version):
    return {s.version: s.state for s in manager.status("m")}[version]


def test_outputs_arrive_in_the_future_and_the_version_stays_leased_until_then(plane):
    data, manager, runner, servable = plane
    with data.prepare(ModelSpec("m")) as prepared:
        assert (prepared.model_name, prepared.version, prepared.signature_name) == ("m", 3, "serving_default")
        future = prepared.submit(x(1.5))
    manager.set_aspired_versions("m", {})  # unloading must wait for the run in flight
    wait_until(lambda: state(manager, 3) == VersionState.UNLOADING)
    assert not servable.closed
    held, outputs = runner.pending[0]
    held.set_result(outputs)
    assert future.result()["y"].tolist() == [[3.0]]
    wait_until(lambda: servable.closed)


def test_bad_input_raises_at_once_and_releases_the_version(plane):
    data, manager, runner, servable = plane
    with pytest.raises(ServingError) as err:
        with data.prepare(ModelSpec("m")) as prepared:
            prepared.submit({"z": np.array([[1.0]], np.float32)})
    assert err.value.code == Code.INVALID_ARGUMENT and "Missing but required: {x}" in err.value.message
    assert runner.pending == []
    manager.set_aspired_versions("m", {})
    wait_until(lambda: servable.closed)  # nothing left holding it


def test_prepared_but_never_submitted_releases_at_exit(plane):
    data, manager, _runner, servable = plane
    with data.prepare(ModelSpec("m")) as prepared:
        assert set(prepared.signature.inputs) == {"x"}  # what a codec decodes against
    manager.set_aspired_versions("m", {})
    wait_until(lambda: servable.closed)


def test_an_unknown_signature_is_refused_before_anything_is_leased(plane):
    data, manager, _runner, servable = plane
    with pytest.raises(SignatureNotFound) as err:
        data.prepare(ModelSpec("m", signature_name="nope"))
    assert err.value.code == Code.FAILED_PRECONDITION and err.value.signature_name == "nope"
    manager.set_aspired_versions("m", {})
    wait_until(lambda: servable.closed)


def test_a_cancelled_future_releases_the_version(plane):
    data, manager, _runner, servable = plane
    with data.prepare(ModelSpec("m")) as prepared:
        future = prepared.submit(x(1.0))
    assert future.cancel()
    manager.set_aspired_versions("m", {})
    wait_until(lambda: servable.closed)


def test_status_and_metadata_come_from_the_core(plane):
    data = plane[0]
    assert [(s.version, s.state) for s in data.status("m")] == [(3, VersionState.AVAILABLE)]
    with pytest.raises(ServingError) as err:
        data.status("other")
    assert err.value.code == Code.NOT_FOUND and err.value.message == "Could not find any versions of model other"


def test_pool_runner_hands_off_unless_the_caller_may_block():
    servable = Doubler()
    with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        runner = PoolRunner(pool)
        request = RunRequest(servable, "serving_default", x(2.0), ("y",))
        assert runner.submit(request).result(timeout=5)["y"].tolist() == [[4.0]]
        here = runner.submit(request, inline=True)
        assert here.done() and here.result()["y"].tolist() == [[4.0]]
    assert servable.threads[0].startswith("pool") and servable.threads[1] == threading.current_thread().name


def test_an_inline_run_that_fails_carries_its_error_in_the_future():
    class Broken(Doubler):
        def run(self, *args, **kwargs):
            raise ServingError(Code.INTERNAL, "boom")

    future = PoolRunner(None).submit(RunRequest(Broken(), "serving_default", x(1.0), ("y",)), inline=True)
    with pytest.raises(ServingError, match="boom"):
        wait(future, 1.0)


def test_waiting_past_the_deadline_drops_a_queued_run():
    future = Future()
    with pytest.raises(ServingError) as err:
        wait(future, 0.01)
    assert err.value.code == Code.DEADLINE_EXCEEDED and future.cancelled()
