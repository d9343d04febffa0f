"""Inference.submit_predict: the non-blocking predict the event-loop protocols use (no TensorFlow)."""
from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from pyserving import dtypes
from pyserving.core.inference import Inference
from pyserving.core.manager import ServableManager
from pyserving.errors import Code, ServingError
from pyserving.types import PREDICT_METHOD, ModelSpec, SignatureInfo, TensorSpec, VersionState
from tests.helpers import states, wait_until


class Doubler:
    """A servable with one predict signature, x -> y, that records whether it was closed."""

    signatures = {"serving_default": SignatureInfo(
        PREDICT_METHOD, {"x": TensorSpec("x:0", dtypes.DT_FLOAT, (-1, 1))}, {"y": TensorSpec("y:0", dtypes.DT_FLOAT, (-1, 1))})}

    def __init__(self):
        self.closed = False

    def run(self, signature_name, inputs, output_keys, timeout_s=None):
        return {"y": inputs["x"] * 2}

    def close(self):
        self.closed = True


class HeldSubmitter:
    """Hands out Futures the test completes itself."""

    def __init__(self):
        self.pending: list[tuple[Future, dict]] = []

    def __call__(self, servable, signature_name, inputs, output_keys, timeout_s):
        future = Future()
        self.pending.append((future, servable.run(signature_name, inputs, output_keys)))
        return future


@pytest.fixture
def setup():
    servable = Doubler()
    manager = ServableManager(lambda name, version, path: servable)
    manager.set_aspired_versions("m", {3: "/m/3"})
    manager.wait_for_latest(["m"], timeout=10)
    submitter = HeldSubmitter()
    yield manager, Inference(manager, submitter=submitter), submitter, servable
    manager.stop()


def test_outputs_arrive_in_the_future_and_the_version_stays_leased_until_then(setup):
    manager, inference, submitter, servable = setup
    submitted = inference.submit_predict(ModelSpec("m"), {"x": np.array([[1.5]], np.float32)})
    assert (submitted.model_name, submitted.version, submitted.signature_name) == ("m", 3, "serving_default")
    manager.set_aspired_versions("m", {})  # unloading must wait for the run in flight
    wait_until(lambda: states(manager)[3] == VersionState.UNLOADING)
    assert not servable.closed
    future, outputs = submitter.pending[0]
    future.set_result(outputs)
    result = submitted.result(submitted.future.result())
    assert result.version == 3 and result.value["y"].tolist() == [[3.0]]
    wait_until(lambda: servable.closed)


def test_bad_input_raises_at_once_and_releases_the_version(setup):
    manager, inference, submitter, servable = setup
    with pytest.raises(ServingError) as err:
        inference.submit_predict(ModelSpec("m"), {"z": np.array([[1.0]], np.float32)})
    assert err.value.code == Code.INVALID_ARGUMENT and "Missing but required: {x}" in err.value.message
    assert submitter.pending == []
    manager.set_aspired_versions("m", {})
    wait_until(lambda: servable.closed)  # nothing left holding it


def test_a_cancelled_future_releases_the_version(setup):
    manager, inference, submitter, servable = setup
    submitted = inference.submit_predict(ModelSpec("m"), {"x": np.array([[1.0]], np.float32)})
    assert submitted.future.cancel()
    manager.set_aspired_versions("m", {})
    wait_until(lambda: servable.closed)


def test_without_a_submitter_it_says_so(setup):
    manager = setup[0]
    with pytest.raises(RuntimeError, match="without a submitter"):
        Inference(manager).submit_predict(ModelSpec("m"), {"x": np.array([[1.0]], np.float32)})
