"""The one run seam: `submit(request, inline=False) -> Future` of the run's outputs.

Two runners implement it: PoolRunner here (one servable call per request) and the Batcher
(batching.py); the metrics wrap either (pyserving/metrics.py). `inline` says the caller is a
thread that may block: a run that would be handed to a pool thread runs in the caller instead,
which saves a thread hand-off (an event loop passes False and awaits the Future).
"""
from __future__ import annotations

from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Optional, Protocol

from pyserving.errors import Code, ServingError
from pyserving.types import RunRequest


class Runner(Protocol):
    def submit(self, request: RunRequest, inline: bool = False) -> Future: ...


def run_now(request: RunRequest) -> Future:
    """Run in this thread; the outcome, error included, lands in an already completed Future."""
    future: Future = Future()
    future.set_running_or_notify_cancel()
    try:
        future.set_result(request.run())
    except BaseException as exc:  # the Future carries it to whoever waits
        future.set_exception(exc)
    return future


class PoolRunner:
    """No batching: each request is one servable call, on `pool` unless the caller may block."""

    def __init__(self, pool: Executor):
        self._pool = pool

    def submit(self, request: RunRequest, inline: bool = False) -> Future:
        return run_now(request) if inline else self._pool.submit(request.run)


def wait(future: Future, timeout_s: Optional[float]):
    """The outputs, for a caller that blocks; past the deadline the run is dropped if it has
    not started, and the caller gets DEADLINE_EXCEEDED."""
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        future.cancel()
        raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the batch queue") from None
