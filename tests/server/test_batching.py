"""The batcher: merging, one deadline per batch (fake clock), padding, full queues, fallbacks."""
from __future__ import annotations

import threading

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
    assert err.value.code == Code.UNAVAILABLE
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
    assert err.value.code == Code.CANCELLED
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
