"""The data plane: a Predict's two steps (prepare leases, submit hands the run over), the lease
held until the run ends, and the runners (no TensorFlow: a servable that doubles its input)."""
from __future__ import annotations

import shutil
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
from pyserving.metrics import NullMetrics, ServingMetrics
from pyserving.types import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    ModelConfig,
    ModelSpec,
    RunRequest,
    SignatureInfo,
    TensorSpec,
    VersionState,
)
from tests.helpers import wait_for


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


# ---- what the survivors of `make mutate` showed untested ----------------------------------------
STR, FLOAT = dtypes.DT_STRING, dtypes.DT_FLOAT


def _sig(method, inputs, outputs, input_tensor="x:0"):
    return SignatureInfo(method, {n: TensorSpec(input_tensor, d, None) for n, d in inputs.items()},
                         {n: TensorSpec(f"{n}:0", d, None) for n, d in outputs.items()})


class Model:
    """A servable with predict, classify and regress signatures that records every run."""

    signatures = {
        "serving_default": _sig(PREDICT_METHOD, {"x": FLOAT}, {"y": FLOAT, "z": FLOAT}),
        "custom": _sig("custom/method", {"x": FLOAT}, {"y": FLOAT}),
        "classify_x": _sig(CLASSIFY_METHOD, {"inputs": STR}, {"classes": STR, "scores": FLOAT}, "tf_example:0"),
        "regress_x": _sig(REGRESS_METHOD, {"inputs": STR}, {"outputs": FLOAT}, "tf_example:0"),
    }

    def __init__(self):
        self.runs = []

    def run(self, signature_name, inputs, output_keys, timeout_s=None):
        self.runs.append((signature_name, output_keys, timeout_s, threading.current_thread().name))
        n = len(next(iter(inputs.values())))
        if signature_name == "classify_x":
            return {"classes": np.array([[b"a", b"b"]] * n, object), "scores": np.full((n, 2), 0.5, np.float32)}
        if signature_name == "regress_x":
            return {"outputs": np.arange(n, dtype=np.float32)}
        return {"y": inputs["x"] * 2, "z": inputs["x"] * 3}

    def signature_def_map(self) -> bytes:
        return b"signature-def-map"

    def close(self):
        pass


@pytest.fixture
def served():
    """(core, model, metrics): version 4 of model "m" served by a real ServerCore."""
    model, metrics = Model(), ServingMetrics()
    core = ServerCore(lambda name, version, path: model)
    core.manager.set_aspired_versions("m", {4: "/m/4"})
    core.manager.wait_for_latest(["m"], timeout=10)
    yield core, model, metrics
    core.stop()


def examples_counted(metrics, model="m") -> float:
    for line in metrics.exposition().decode().splitlines():
        if line.startswith(":tensorflow:serving:request_example_count_total{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_predict_hands_its_filter_and_deadline_to_a_pool_thread_unless_told_inline(served):
    core, model, metrics = served
    with ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        data = DataPlane(core, PoolRunner(pool), metrics)
        with data.prepare(ModelSpec("m")) as prepared:
            future = prepared.submit(x(1.0), ["z"], 2.5)
        outputs = future.result(timeout=5)
        assert {k: v.tolist() for k, v in outputs.items()} == {"y": [[2.0]], "z": [[3.0]]}
        answered_by = (prepared.model_name, prepared.version, prepared.signature_name)
        with data.prepare(ModelSpec("m")) as prepared:
            assert prepared.submit(x(1.0), inline=True).done()
    assert model.runs[0][:3] == ("serving_default", ("z",), 2.5) and model.runs[0][3].startswith("pool")
    assert model.runs[1][:3] == ("serving_default", ("y", "z"), None)
    assert model.runs[1][3] == threading.current_thread().name
    assert answered_by == ("m", 4, "serving_default")


def test_the_method_name_of_a_predict_signature_is_checked_only_when_asked(served):
    core, model, metrics = served
    with DataPlane(core, HeldRunner(), metrics).prepare(ModelSpec("m", signature_name="custom")) as prepared:
        assert prepared.signature_name == "custom"
    with pytest.raises(ServingError) as err:
        DataPlane(core, HeldRunner(), metrics, check_method_name=True).prepare(ModelSpec("m", signature_name="custom"))
    assert err.value.code == Code.INTERNAL and err.value.message.endswith("Was: custom/method")
    core.manager.set_aspired_versions("m", {})
    wait_until(lambda: state(core.manager, 4) == VersionState.END)  # the refused prepare left nothing leased


def test_status_of_one_version_and_metadata(served):
    core, model, metrics = served
    core.manager.set_aspired_versions("m", {4: "/m/4", 5: "/m/5"})
    wait_until(lambda: len(core.manager.status("m")) == 2 and state(core.manager, 5) == VersionState.AVAILABLE)
    data = DataPlane(core, HeldRunner(), metrics)
    assert [s.version for s in data.status("m", 4)] == [4]
    meta = data.metadata(ModelSpec("m", version=4))
    assert (meta.model_name, meta.version, meta.signature_name, meta.value) == ("m", 4, "", b"signature-def-map")


def test_classify_and_regress_read_their_outputs_and_count_no_examples_as_tf_serving_2_20(served):
    core, model, metrics = served
    data = DataPlane(core, PoolRunner(None), metrics)
    classified = data.classify(ModelSpec("m", signature_name="classify_x"), [b"e1", b"e2"], 3.0)
    assert (classified.model_name, classified.version, classified.signature_name) == ("m", 4, "classify_x")
    assert classified.value == [[(b"a", 0.5), (b"b", 0.5)]] * 2
    regressed = data.regress(ModelSpec("m", signature_name="regress_x"), [b"e1", b"e2", b"e3"], 4.0)
    assert (regressed.signature_name, regressed.value) == ("regress_x", [0.0, 1.0, 2.0])
    assert [run[:3] for run in model.runs] == [("classify_x", ("classes", "scores"), 3.0),
                                               ("regress_x", ("outputs",), 4.0)]
    assert examples_counted(metrics) == 0  # classifier.cc and regressor.cc record no example count


def test_multi_inference_runs_every_task_on_one_version(served):
    core, model, metrics = served
    data = DataPlane(core, PoolRunner(None), metrics)
    results = data.multi_inference([(ModelSpec("m", signature_name="classify_x"), CLASSIFY_METHOD),
                                    (ModelSpec("m", signature_name="regress_x"), REGRESS_METHOD)], [b"e1", b"e2"])
    assert [(r.model_name, r.version, r.signature_name) for r in results] == [("m", 4, "classify_x"),
                                                                             ("m", 4, "regress_x")]
    assert results[1].value == [0.0, 1.0] and examples_counted(metrics) == 2
    with pytest.raises(ServingError):  # refused before it runs: no examples counted
        data.multi_inference([(ModelSpec("m", signature_name="nope"), REGRESS_METHOD)], [b"e1", b"e2"])
    assert examples_counted(metrics) == 2
    [alone] = data.multi_inference([(ModelSpec("m", signature_name="regress_x"), REGRESS_METHOD)], [b"e"], 1.5)
    assert alone.value == [0.0] and model.runs[-1][:3] == ("regress_x", ("outputs",), 1.5)
    for tasks, code, message in [
            ([], Code.INVALID_ARGUMENT, "ModelSpec has no name specified."),  # the helper's empty ModelSpec
            ([(ModelSpec("m", signature_name="classify_x"), CLASSIFY_METHOD),
              (ModelSpec("n", signature_name="regress_x"), REGRESS_METHOD)],
             Code.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
            # the first task's ModelSpec is looked up before the tasks are checked
            ([(ModelSpec("n", signature_name="regress_x"), REGRESS_METHOD),
              (ModelSpec("m", signature_name="regress_x"), REGRESS_METHOD)],
             Code.NOT_FOUND, "Servable not found for request: Latest(n)")]:
        with pytest.raises(ServingError) as err:
            data.multi_inference(tasks, [b"e"])
        assert (err.value.code, err.value.message) == (code, message)


def test_a_reload_goes_to_the_core(tmp_path):
    (tmp_path / "n" / "1").mkdir(parents=True)
    (tmp_path / "n" / "1" / "saved_model.pb").write_bytes(b"graph")
    core = ServerCore(lambda name, version, path: Model(), file_system_poll_wait_s=0.05)
    try:
        DataPlane(core, HeldRunner(), NullMetrics()).reload([ModelConfig("n", str(tmp_path / "n"))])
        assert [(s.version, s.state) for s in core.manager.status("n")] == [(1, VersionState.AVAILABLE)]
    finally:
        core.stop()


def test_waiting_past_the_deadline_says_so_in_tf_servings_words():
    with pytest.raises(ServingError) as err:
        wait(Future(), 0.01)
    assert err.value.message == "Deadline exceeded while waiting in the batch queue"


def test_classify_and_regress_check_the_signature_for_their_method(served):
    core, model, metrics = served
    data = DataPlane(core, PoolRunner(None), metrics)
    with pytest.raises(ServingError) as err:
        data.classify(ModelSpec("m", signature_name="regress_x"), [b"e"])
    assert err.value.message.startswith('Expected classification signature outputs to contain at least one of')
    checked = DataPlane(core, PoolRunner(None), metrics, check_method_name=True)
    model.signatures = dict(Model.signatures, classify_x=_sig(PREDICT_METHOD, {"inputs": STR},
                                                              {"scores": FLOAT}, "tf_example:0"))
    spec = ModelSpec("m", signature_name="classify_x")
    assert data.classify(spec, [b"e"]).value == [[(b"a", 0.5), (b"b", 0.5)]]  # unchecked: judged by its tensors
    for call in (lambda: checked.classify(spec, [b"e"]),
                 lambda: checked.multi_inference([(spec, CLASSIFY_METHOD)], [b"e"])):
        with pytest.raises(ServingError) as err:
            call()
        assert err.value.message == ("Expected classification signature method_name to be "
                                     "tensorflow/serving/classify. Was: tensorflow/serving/predict")


# ---- what the Open Inference Protocol asks of the data plane --------------------------------
def test_describe_model_ready_and_server_ready(tmp_path):
    (tmp_path / "m" / "3").mkdir(parents=True)
    (tmp_path / "m" / "3" / "saved_model.pb").write_bytes(b"")  # the loader here reads nothing
    servable = Doubler()
    core = ServerCore(lambda name, version, path: servable, file_system_poll_wait_s=0.05)
    try:
        core.reload([ModelConfig("m", str(tmp_path / "m"))])
        data = DataPlane(core, PoolRunner(ThreadPoolExecutor(1)), NullMetrics())
        described = data.describe(ModelSpec("m"))
        assert (described.model_name, described.version, described.versions, described.platform,
                described.signature_name) == ("m", 3, (3,), "tensorflow_savedmodel", "serving_default")
        assert described.signature is Doubler.signatures["serving_default"]
        servable.platform = "tensorflow_tflite"
        assert data.describe(ModelSpec("m", version=3)).platform == "tensorflow_tflite"
        with pytest.raises(SignatureNotFound):
            data.describe(ModelSpec("m", signature_name="nope"))
        assert data.model_ready(ModelSpec("m")) and data.model_ready(ModelSpec("m", version=3))
        assert not data.model_ready(ModelSpec("m", version=4))
        with pytest.raises(ServingError) as info:
            data.model_ready(ModelSpec("nope"))
        assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "Model nope is not configured")
        with pytest.raises(ServingError) as info:
            data.model_ready(ModelSpec("m", label="beta"))
        assert info.value.code == Code.INVALID_ARGUMENT
        assert data.server_ready()
        shutil.rmtree(tmp_path / "m" / "3")  # the source drops version 3: m has none AVAILABLE
        wait_for(lambda: not data.server_ready(), timeout=10, what="server_ready() to turn false")
        assert not data.model_ready(ModelSpec("m"))
    finally:
        core.stop()
