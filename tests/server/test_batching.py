"""The batcher: merging, one deadline per batch (fake clock), padding, full queues, fallbacks."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pyserving.core.batching import Batcher, BatchingParams, batch_key
from pyserving.errors import Code, ServingError
from pyserving.types import RunRequest


class Recorder:
    """A servable that doubles its input and records the batch sizes it was called with."""

    signatures = {}

    def __init__(self, bad_output=False):
        self.calls = []
        self.bad_output = bad_output

    def run(self, signature_name, inputs, output_keys, timeout_s=None):
        x = inputs["x"]
        self.calls.append(x.shape[0] if x.ndim else "scalar")
        return {"y": x[:1] * 2 if self.bad_output else x * 2}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def req(servable, inputs) -> RunRequest:
    return RunRequest(servable, "sig", inputs, ("y",))


def submit(batcher, servable, x):
    return batcher.submit(req(servable, {"x": np.asarray(x, np.float32)}))


def test_one_deadline_per_batch_fixed_by_its_first_task():
    clock, servable = Clock(), Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=8, batch_timeout_micros=10_000), clock=clock, start_threads=False)
    first = submit(batcher, servable, [[1.0]])
    clock.now += 0.006
    second = submit(batcher, servable, [[2.0], [3.0]])
    with batcher._lock:
        assert batcher._take() is None  # 6 ms into a 10 ms window
    clock.now += 0.005  # 11 ms after the first task: due, although the second came 5 ms ago
    with batcher._lock:
        batch = batcher._take()
    assert batch is not None and batch.size == 3
    batcher._execute(batch)
    assert servable.calls == [3]
    assert first.result().get("y").tolist() == [[2.0]]
    assert second.result()["y"].tolist() == [[4.0], [6.0]]


def test_full_batch_is_due_at_once_and_next_task_opens_a_new_one():
    clock, servable = Clock(), Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=2, batch_timeout_micros=10**9, max_enqueued_batches=2),
                      clock=clock, start_threads=False)
    submit(batcher, servable, [[1.0], [2.0]])
    submit(batcher, servable, [[3.0]])
    with pytest.raises(ServingError) as err:
        submit(batcher, servable, [[4.0], [5.0]])  # would need a third batch
    assert err.value.code == Code.UNAVAILABLE  # shared_batch_scheduler.h's words:
    assert err.value.message == "The batch scheduling queue to which this task was submitted is full"
    with batcher._lock:
        assert batcher._take().size == 2
        assert batcher._take() is None  # the second batch waits for its deadline


def test_oversized_task_is_refused():
    batcher = Batcher(BatchingParams(max_batch_size=2), start_threads=False)
    with pytest.raises(ServingError) as err:
        submit(batcher, Recorder(), [[1.0], [2.0], [3.0]])
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "Task size 3 is larger than maximum input batch size 2" in err.value.message


def test_padding_to_allowed_batch_sizes_is_invisible_to_callers():
    clock, servable = Clock(), Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=8, allowed_batch_sizes=(2, 4, 8)), clock=clock, start_threads=False)
    a = submit(batcher, servable, [[1.0], [2.0], [3.0]])
    with batcher._lock:
        batch = batcher._take()
    batcher._execute(batch)
    assert servable.calls == [4]
    assert a.result()["y"].tolist() == [[2.0], [4.0], [6.0]]


def test_bad_batched_output_fails_every_task_in_the_batch():
    clock, servable = Clock(), Recorder(bad_output=True)
    batcher = Batcher(BatchingParams(max_batch_size=8), clock=clock, start_threads=False)
    a, b = submit(batcher, servable, [[1.0]]), submit(batcher, servable, [[2.0]])
    with batcher._lock:
        batcher._execute(batcher._take())
    for future in (a, b):
        with pytest.raises(ServingError) as err:
            future.result()
        assert err.value.code == Code.INTERNAL


def test_inner_shapes_and_unbatchable_inputs_keep_apart():
    servable = Recorder()
    k1, _ = batch_key(req(servable, {"x": np.zeros((1, 2), np.float32)}))
    k2, _ = batch_key(req(servable, {"x": np.zeros((3, 3), np.float32)}))
    k3, _ = batch_key(req(servable, {"x": np.zeros((5, 2), np.float32)}))
    assert k1 != k2 and k1 == k3
    assert batch_key(req(servable, {"x": np.zeros(()), "z": np.zeros(2)}))[0] is None
    assert batch_key(req(servable, {"x": np.zeros(2), "z": np.zeros(3)}))[0] is None


def test_concurrent_requests_meet_in_batches_and_get_their_own_rows():
    servable = Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=64, batch_timeout_micros=20_000, num_batch_threads=1))
    results = {}

    def call(i):
        results[i] = batcher.submit(req(servable, {"x": np.full((1, 1), i, np.float32)}), inline=True).result()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    batcher.stop()
    assert {i: r["y"].item() for i, r in results.items()} == {i: 2.0 * i for i in range(40)}
    assert sum(servable.calls) == 40 and len(servable.calls) < 40  # fewer calls than requests


def test_allowed_batch_sizes_must_end_at_max():
    with pytest.raises(ServingError, match="must match max_batch_size"):
        BatchingParams(max_batch_size=8, allowed_batch_sizes=(2, 4))


def test_a_batch_that_fills_runs_at_once_without_waiting_for_its_deadline():
    servable = Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=4, batch_timeout_micros=30_000_000, num_batch_threads=1))
    try:
        futures = [batcher.submit(req(servable, {"x": np.full((1, 1), i, np.float32)})) for i in range(4)]
        assert [f.result(timeout=5)["y"].item() for f in futures] == [0.0, 2.0, 4.0, 6.0]
        assert servable.calls == [4]
    finally:
        batcher.stop()


def test_submit_merges_without_blocking_and_runs_unbatchable_inputs_alone():
    servable = Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=64, batch_timeout_micros=50_000, num_batch_threads=1))
    try:
        futures = [batcher.submit(req(servable, {"x": np.full((2, 1), i, np.float32)})) for i in range(10)]
        alone = batcher.submit(req(servable, {"x": np.float32(4.0)}))  # a scalar has no batch dimension
        assert alone.result(timeout=5)["y"] == 8.0
        assert [f.result(timeout=5)["y"].tolist() for f in futures] == [[[2.0 * i]] * 2 for i in range(10)]
        assert sorted(servable.calls, key=str) == [20, "scalar"]  # the ten met in one call
    finally:
        batcher.stop()


def test_pad_variable_length_inputs_merges_ragged_tasks_padding_each_with_its_first_element():
    clock, servable = Clock(), Recorder()
    params = BatchingParams(max_batch_size=8, batch_timeout_micros=1000, pad_variable_length_inputs=True)
    batcher = Batcher(params, clock=clock, start_threads=False)
    short = {"x": np.array([[7.0, 1.0]], np.float32)}
    long = {"x": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)}
    keys = [batch_key(req(servable, v), pad=True) for v in (short, long)]
    assert keys[0][0] == keys[1][0]  # same rank: one queue
    assert batch_key(req(servable, short))[0] != batch_key(req(servable, long))[0]
    futures = [batcher.submit(req(servable, v)) for v in (short, long)]
    clock.now += 0.002
    with batcher._lock:
        batch = batcher._take()
    batcher._execute(batch)
    assert servable.calls == [3]
    assert futures[0].result()["y"].tolist() == [[14.0, 2.0, 14.0]]  # padded with its own 7.0
    assert futures[1].result()["y"].tolist() == [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]


def test_without_padding_ragged_tasks_run_in_separate_batches_as_unbatched():
    servable = Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=8, batch_timeout_micros=20_000, num_batch_threads=1))
    try:
        a = batcher.submit(req(servable, {"x": np.ones((1, 2), np.float32)}))
        b = batcher.submit(req(servable, {"x": np.ones((1, 3), np.float32)}))
        assert a.result(timeout=5)["y"].shape == (1, 2) and b.result(timeout=5)["y"].shape == (1, 3)
        assert sorted(servable.calls) == [1, 1]
    finally:
        batcher.stop()


def _run_due(batcher):
    with batcher._lock:
        batches = []
        while (batch := batcher._take()) is not None:
            batches.append(batch)
    for batch in batches:
        batcher._execute(batch)


@pytest.mark.parametrize("size,room,limit,pieces", [
    (3, 5, 4, [3]), (6, 1, 4, [1, 4, 1]), (6, 0, 4, [4, 2]), (8, 0, 4, [4, 4]), (2, 2, 4, [2]),
])
def test_split_sizes_fill_the_open_batch_first(size, room, limit, pieces):
    from pyserving.core.batching import split_sizes

    assert split_sizes(size, room, limit) == pieces


def test_large_batch_splitting_spreads_a_task_over_batches_and_joins_its_rows():
    clock, servable = Clock(), Recorder()
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=4, enable_large_batch_splitting=True,
                            batch_timeout_micros=10**9)
    batcher = Batcher(params, clock=clock, start_threads=False)
    a = submit(batcher, servable, [[1.0], [2.0], [3.0]])
    b = submit(batcher, servable, [[float(i)] for i in range(10, 16)])  # 1 row fills a's batch, then 4, then 1
    clock.now += 10**4
    _run_due(batcher)
    assert servable.calls == [4, 4, 1]
    assert a.result()["y"].tolist() == [[2.0], [4.0], [6.0]]
    assert b.result()["y"].tolist() == [[2.0 * i] for i in range(10, 16)]
    with pytest.raises(ServingError, match="Task size 9 is larger than maximum input batch size 8"):
        submit(batcher, servable, [[0.0]] * 9)  # max_batch_size still caps one task


def test_without_splitting_a_task_that_does_not_fit_opens_a_batch_of_its_own():
    clock, servable = Clock(), Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=8, max_execution_batch_size=4), clock=clock, start_threads=False)
    submit(batcher, servable, [[1.0]] * 3)
    submit(batcher, servable, [[2.0]] * 6)
    clock.now += 1
    _run_due(batcher)
    assert servable.calls == [3, 6]


def test_a_split_task_that_needs_more_batches_than_the_queue_holds_is_refused_whole():
    servable = Recorder()
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=2, enable_large_batch_splitting=True,
                            max_enqueued_batches=2)
    batcher = Batcher(params, start_threads=False)
    with pytest.raises(ServingError) as err:
        submit(batcher, servable, [[1.0]] * 5)  # 3 batches
    assert err.value.code == Code.UNAVAILABLE and not batcher._open
    assert submit(batcher, servable, [[1.0]] * 4) is not None  # 2 batches fit


def test_cancelling_a_split_task_waits_for_its_running_piece():
    clock, servable = Clock(), Recorder()
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=2, enable_large_batch_splitting=True)
    batcher = Batcher(params, clock=clock, start_threads=False)
    task = submit(batcher, servable, [[1.0]] * 4)
    with batcher._lock:
        first = batcher._take()  # full: due at once
    assert first.tasks[0].future.set_running_or_notify_cancel()  # the batch thread took it
    task.cancel()
    assert not task.done()  # its first piece still runs on the servable
    first.tasks[0].future.set_result({"y": np.zeros((2, 1))})
    with pytest.raises(ServingError) as err:
        task.result(timeout=1)
    assert err.value.code == Code.CANCELLED and err.value.message == "A part of the split task was cancelled"
    clock.now += 1
    _run_due(batcher)
    assert servable.calls == []  # the second piece was dropped


def test_a_servable_with_its_own_params_or_none_is_batched_by_them_or_not_at_all():
    clock, own, unbatched, shared = Clock(), Recorder(), Recorder(), Recorder()
    batcher = Batcher(BatchingParams(max_batch_size=64, batch_timeout_micros=10**9), clock=clock, start_threads=False)
    batcher.set_params(own, BatchingParams(max_batch_size=2, batch_timeout_micros=10**9))
    batcher.set_params(unbatched, None)
    x = {"x": np.ones((3, 1), np.float32)}
    with pytest.raises(ServingError, match="Task size 3 is larger than maximum input batch size 2"):
        batcher.submit(req(own, x))
    ran_here = batcher.submit(req(unbatched, x), inline=True)  # the caller may block: no hand-off
    assert ran_here.done() and ran_here.result()["y"].tolist() == [[2.0]] * 3 and unbatched.calls == [3]
    assert batcher.submit(req(unbatched, x)).result(timeout=5)["y"].shape == (3, 1)
    futures = [batcher.submit(req(s, {"x": np.ones((1, 1), np.float32)})) for s in (own, own, shared)]
    with batcher._lock:
        assert batcher._take().servable is own  # own's batch is full at 2 rows; shared's waits
        assert batcher._take() is None
    assert all(not f.done() for f in futures)
    batcher.stop()


def test_a_batch_above_the_largest_allowed_size_runs_unpadded():
    assert BatchingParams(max_batch_size=4, allowed_batch_sizes=(2, 4)).padded_size(6) == 6
    assert BatchingParams(max_batch_size=4, allowed_batch_sizes=(2, 4)).padded_size(3) == 4


class Spy:
    """A servable that returns its input and records each run: rows, signature, outputs, deadline, thread."""

    signatures = {}

    def __init__(self, outputs=None, error=None, gate=None):
        self.runs = []
        self.outputs, self.error, self.gate = outputs, error, gate

    def run(self, signature_name, inputs, output_keys, timeout_s=None):
        self.runs.append({"rows": len(inputs["x"]) if inputs["x"].ndim else None, "signature": signature_name,
                          "outputs": output_keys, "timeout": timeout_s, "thread": threading.current_thread().name})
        if self.gate is not None:
            self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return self.outputs(inputs["x"]) if self.outputs else {"y": inputs["x"]}


def spy_request(servable, x, timeout_s=None, dtype=np.float32) -> RunRequest:
    return RunRequest(servable, "sig_a", {"x": np.asarray(x, dtype)}, ("y",), timeout_s)


def run_due(batcher, clock, seconds=10**4):
    clock.now += seconds
    _run_due(batcher)


POSITIVE = "max_batch_size, max_enqueued_batches and num_batch_threads must be positive"
INCREASING = "allowed_batch_sizes must be positive and strictly increasing"


@pytest.mark.parametrize("fields,message", [
    ({"max_batch_size": 0}, POSITIVE), ({"max_enqueued_batches": 0}, POSITIVE), ({"num_batch_threads": 0}, POSITIVE),
    ({"max_execution_batch_size": 0}, "max_execution_batch_size must be positive"),
    ({"max_batch_size": 4, "allowed_batch_sizes": (2, 2, 4)}, INCREASING),
    ({"max_batch_size": 4, "allowed_batch_sizes": (4, 2)}, INCREASING),
    ({"max_batch_size": 4, "allowed_batch_sizes": (0, 4)}, INCREASING),
    ({"max_batch_size": 4, "allowed_batch_sizes": (1, 2, 3)},  # batching_session.cc's words
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 3; expected 4"),
])
def test_batching_params_are_checked(fields, message):
    with pytest.raises(ServingError) as err:
        BatchingParams(**fields)
    assert err.value.code == Code.INVALID_ARGUMENT and err.value.message == message


def test_the_smallest_batching_params_are_valid():
    params = BatchingParams(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1, allowed_batch_sizes=(1,),
                            enable_large_batch_splitting=True, max_execution_batch_size=1)
    assert params.execution_batch_size == 1 and params.padded_size(1) == 1


def test_padding_goes_up_to_the_next_allowed_size():
    params = BatchingParams(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    assert [params.padded_size(n) for n in (1, 2, 3, 5, 6, 8)] == [2, 2, 4, 8, 8, 8]


def test_padding_copies_the_first_row_of_inputs_of_any_rank_and_reports_both_sizes():
    clock, servable, sizes = Clock(), Spy(), []
    batcher = Batcher(BatchingParams(max_batch_size=4, allowed_batch_sizes=(2, 4)), clock=clock,
                      on_batch=lambda size, padded: sizes.append((size, padded)), start_threads=False)
    task = batcher.submit(spy_request(servable, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    run_due(batcher, clock)
    assert servable.runs[0]["rows"] == 4 and sizes == [(3, 4)]
    assert task.result()["y"].tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def test_a_batch_runs_the_tasks_signature_and_outputs_with_the_earliest_deadline():
    clock, servable = Clock(), Spy()
    batcher = Batcher(BatchingParams(max_batch_size=8), clock=clock, start_threads=False)
    for timeout in (5.0, None, 2.0):
        batcher.submit(spy_request(servable, [[1.0]], timeout))
    run_due(batcher, clock)
    batcher.submit(spy_request(servable, [[1.0]]))
    run_due(batcher, clock)
    assert [(r["rows"], r["signature"], r["outputs"], r["timeout"]) for r in servable.runs] == [
        (3, "sig_a", ("y",), 2.0), (1, "sig_a", ("y",), None)]


def test_two_servables_never_share_a_batch():
    clock, one, other = Clock(), Spy(), Spy()
    batcher = Batcher(BatchingParams(max_batch_size=8), clock=clock, start_threads=False)
    a, b = batcher.submit(spy_request(one, [[1.0]])), batcher.submit(spy_request(other, [[2.0], [3.0]]))
    run_due(batcher, clock)
    assert [r["rows"] for r in one.runs] == [1] and [r["rows"] for r in other.runs] == [2]
    assert a.result()["y"].tolist() == [[1.0]] and b.result()["y"].tolist() == [[2.0], [3.0]]


def test_the_deadline_is_the_first_tasks_arrival_plus_batch_timeout_micros():
    clock, servable = Clock(), Spy()
    batcher = Batcher(BatchingParams(max_batch_size=8, batch_timeout_micros=1_000_000), clock=clock,
                      start_threads=False)
    start = clock.now
    batcher.submit(spy_request(servable, [[1.0]]))
    clock.now = start + 0.9999995
    with batcher._lock:
        assert batcher._take() is None
    clock.now = start + 1.0
    with batcher._lock:
        assert batcher._take() is not None


def test_a_batch_that_a_later_task_could_not_join_is_due_at_once():
    clock, servable = Clock(), Spy()
    batcher = Batcher(BatchingParams(max_batch_size=4, batch_timeout_micros=10**9), clock=clock, start_threads=False)
    batcher.submit(spy_request(servable, [[1.0]] * 3))
    batcher.submit(spy_request(servable, [[2.0]] * 2))  # does not fit: opens a second batch
    with batcher._lock:
        first = batcher._take()
        assert first is not None and first.size == 3  # nothing more can join it: no need to wait
        assert batcher._take() is None


def test_the_queue_counts_only_the_batches_a_split_task_adds():
    clock, servable = Clock(), Spy()
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=4, enable_large_batch_splitting=True,
                            max_enqueued_batches=1, batch_timeout_micros=10**9)
    batcher = Batcher(params, clock=clock, start_threads=False)
    batcher.submit(spy_request(servable, [[1.0]] * 2))
    batcher.submit(spy_request(servable, [[2.0]] * 2))  # fills the open batch's room: no new batch
    with pytest.raises(ServingError) as err:
        batcher.submit(spy_request(servable, [[3.0]] * 4))  # would need a second batch
    assert err.value.code == Code.UNAVAILABLE
    batcher2 = Batcher(params, clock=clock, start_threads=False)
    batcher2.submit(spy_request(servable, [[1.0]] * 2))
    with pytest.raises(ServingError):
        batcher2.submit(spy_request(servable, [[2.0]] * 4))  # 2 rows fill the room, 2 need a new batch


def test_a_task_split_in_two_gets_each_piece_its_own_rows():
    clock, servable = Clock(), Spy()
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=4, enable_large_batch_splitting=True)
    batcher = Batcher(params, clock=clock, start_threads=False)
    task = batcher.submit(spy_request(servable, [[float(i)] for i in range(6)]))
    run_due(batcher, clock)
    assert [r["rows"] for r in servable.runs] == [4, 2]
    assert task.result()["y"].tolist() == [[float(i)] for i in range(6)]


def test_a_split_task_fails_with_its_failing_piece_s_error():
    clock = Clock()
    servable = Spy(outputs=lambda x: {"y": x} if len(x) == 4 else (_ for _ in ()).throw(
        ServingError(Code.RESOURCE_EXHAUSTED, "out of memory")))
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=4, enable_large_batch_splitting=True)
    batcher = Batcher(params, clock=clock, start_threads=False)
    task = batcher.submit(spy_request(servable, [[1.0]] * 6))
    run_due(batcher, clock)
    with pytest.raises(ServingError) as err:
        task.result()
    assert (err.value.code, err.value.message) == (Code.RESOURCE_EXHAUSTED, "out of memory")


def test_split_pieces_padded_to_different_widths_cannot_be_joined():
    clock, servable = Clock(), Spy()
    params = BatchingParams(max_batch_size=8, max_execution_batch_size=2, enable_large_batch_splitting=True,
                            pad_variable_length_inputs=True)
    batcher = Batcher(params, clock=clock, start_threads=False)
    batcher.submit(spy_request(servable, [[1.0, 1.0, 1.0]]))
    task = batcher.submit(spy_request(servable, [[2.0, 2.0]] * 2))  # one row padded to 3 wide, one left at 2
    run_due(batcher, clock)
    with pytest.raises(ServingError) as err:
        task.result()
    assert err.value.code == Code.INTERNAL
    assert err.value.message.startswith("Cannot join the outputs of a split task: ")


@pytest.mark.parametrize("dtype,fill", [(np.float32, 0.0), (object, b"")])
def test_padding_a_task_with_an_empty_inner_dimension_fills_zeros_or_empty_strings(dtype, fill):
    clock, servable = Clock(), Spy()
    params = BatchingParams(max_batch_size=8, pad_variable_length_inputs=True)
    batcher = Batcher(params, clock=clock, start_threads=False)
    wide = np.array([[b"a", b"b"]] if dtype is object else [[1.0, 2.0]], dtype)
    empty = batcher.submit(spy_request(servable, np.zeros((1, 0), dtype), dtype=dtype))
    batcher.submit(spy_request(servable, wide, dtype=dtype))
    run_due(batcher, clock)
    assert servable.runs[0]["rows"] == 2
    out = empty.result()["y"]
    assert out.dtype == np.dtype(dtype) and out.tolist() == [[fill, fill]]


def test_a_batched_output_without_a_row_per_input_row_fails_the_batch_with_its_sizes():
    clock = Clock()
    for outputs, shown in [(lambda x: {"y": x[:1]}, "1"), (lambda x: {"y": np.float32(1.0)}, "scalar")]:
        batcher = Batcher(BatchingParams(max_batch_size=8), clock=clock, start_threads=False)
        task = batcher.submit(spy_request(Spy(outputs=outputs), [[1.0], [2.0]]))
        run_due(batcher, clock)
        with pytest.raises(ServingError) as err:
            task.result()
        assert err.value.code == Code.INTERNAL and err.value.message == (
            f"Batched output tensor y's 0th dimension ({shown}) does not equal the sum of the 0th dimension sizes "
            "of the input tensors (2)")


def test_one_dimensional_outputs_are_split_by_row():
    clock = Clock()
    batcher = Batcher(BatchingParams(max_batch_size=8), clock=clock, start_threads=False)
    servable = Spy(outputs=lambda x: {"y": x.sum(axis=1)})
    a, b = (batcher.submit(spy_request(servable, x)) for x in ([[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]]))
    run_due(batcher, clock)
    assert a.result()["y"].tolist() == [3.0] and b.result()["y"].tolist() == [7.0, 11.0]


@pytest.mark.parametrize("error,code,message", [
    (ServingError(Code.RESOURCE_EXHAUSTED, "OOM when allocating"), Code.RESOURCE_EXHAUSTED, "OOM when allocating"),
    (ValueError("graph said no"), Code.INTERNAL, "graph said no"),
])
def test_a_failing_run_fails_every_task_of_its_batch(error, code, message):
    clock = Clock()
    batcher = Batcher(BatchingParams(max_batch_size=8), clock=clock, start_threads=False)
    servable = Spy(error=error)
    tasks = [batcher.submit(spy_request(servable, [[1.0]])) for _ in range(2)]
    run_due(batcher, clock)
    for task in tasks:
        with pytest.raises(ServingError) as err:
            task.result()
        assert (err.value.code, err.value.message) == (code, message)


def test_batches_run_on_daemon_batch_threads_and_unbatchable_runs_on_the_solo_pool():
    servable = Spy()
    batcher = Batcher(BatchingParams(max_batch_size=1, num_batch_threads=1))
    try:
        batcher.submit(spy_request(servable, [[1.0]])).result(timeout=5)
        batcher.submit(spy_request(servable, 1.0)).result(timeout=5)  # a scalar: no batch dimension
        assert [r["thread"] for r in servable.runs] == ["batch-0", "batch-solo_0"]
        assert all(t.daemon for t in threading.enumerate() if t.name == "batch-0")
    finally:
        batcher.stop()


def test_the_solo_pool_runs_as_many_unbatchable_tasks_at_once_as_there_are_batch_threads():
    for solo_threads, expected in [(None, 1), (2, 2)]:
        gate = threading.Event()
        servable = Spy(gate=gate)
        batcher = Batcher(BatchingParams(num_batch_threads=1), solo_threads=solo_threads)
        try:
            tasks = [batcher.submit(spy_request(servable, 1.0)) for _ in range(3)]
            time.sleep(0.2)
            assert len(servable.runs) == expected
            gate.set()
            assert all(t.result(timeout=5)["y"] == 1.0 for t in tasks)
        finally:
            batcher.stop()


def test_a_batch_that_fills_wakes_a_sleeping_batch_thread():
    servable = Spy()
    batcher = Batcher(BatchingParams(max_batch_size=2, batch_timeout_micros=30_000_000, num_batch_threads=1))
    try:
        first = batcher.submit(spy_request(servable, [[1.0]]))
        time.sleep(0.2)  # the batch thread now sleeps until the 30 s deadline
        second = batcher.submit(spy_request(servable, [[2.0]]))
        assert second.result(timeout=2)["y"].tolist() == [[2.0]] and first.done()
    finally:
        batcher.stop()


def test_a_batch_runs_at_its_deadline_not_later():
    servable = Spy()
    batcher = Batcher(BatchingParams(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1))
    try:
        started = time.monotonic()
        batcher.submit(spy_request(servable, [[1.0]])).result(timeout=5)
        assert time.monotonic() - started < 0.6
    finally:
        batcher.stop()


def test_stop_refuses_new_tasks_and_waits_for_running_unbatchable_ones():
    gate = threading.Event()
    servable = Spy(gate=gate)
    batcher = Batcher(BatchingParams(num_batch_threads=1))
    running = batcher.submit(spy_request(servable, 1.0))
    threading.Timer(0.2, gate.set).start()
    batcher.stop()
    assert running.done() and running.result()["y"] == 1.0
    with pytest.raises(ServingError) as err:
        batcher.submit(spy_request(servable, [[1.0]]))
    assert (err.value.code, err.value.message) == (Code.UNAVAILABLE, "Batch scheduler is shutting down")
