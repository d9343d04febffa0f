"""Completions: core Futures finished on other threads, awaited on an event loop."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

import pytest

from pyserving.errors import Code, ServingError
from pyserving.protocols import completions as completions_mod
from pyserving.protocols.completions import Completions


def test_a_burst_of_results_wakes_the_loop_once_per_burst_and_each_waiter_gets_its_own():
    async def main():
        completions = Completions(asyncio.get_running_loop())
        drains = []
        real_drain = completions._drain
        completions._drain = lambda: (drains.append(1), real_drain())
        futures = [Future() for _ in range(50)]
        waiters = [asyncio.ensure_future(completions.result(f)) for f in futures]
        await asyncio.sleep(0)

        def finish_all():  # as a batch thread does
            for i, f in enumerate(futures):
                f.set_result(i * 10)

        threading.Thread(target=finish_all).start()
        results = await asyncio.gather(*waiters)
        return results, len(drains)

    results, drains = asyncio.run(main())
    assert results == [i * 10 for i in range(50)]
    assert 1 <= drains < 50


def test_errors_and_cancellation_reach_the_waiter():
    async def main():
        completions = Completions(asyncio.get_running_loop())
        failing, cancelled = Future(), Future()
        w1 = asyncio.ensure_future(completions.result(failing))
        w2 = asyncio.ensure_future(completions.result(cancelled))
        await asyncio.sleep(0)
        failing.set_exception(ServingError(Code.INVALID_ARGUMENT, "bad row"))
        cancelled.cancel()
        with pytest.raises(ServingError, match="bad row"):
            await w1
        with pytest.raises(asyncio.CancelledError):
            await w2

    asyncio.run(main())


def test_deadline_answers_deadline_exceeded_and_drops_the_queued_run(monkeypatch):
    monkeypatch.setattr(completions_mod, "DEADLINE_GRACE_S", 0.0)

    async def main():
        completions = Completions(asyncio.get_running_loop())
        never = Future()
        started = time.monotonic()
        with pytest.raises(ServingError) as err:
            await completions.result(never, timeout_s=0.05)
        return err.value, time.monotonic() - started, never

    error, elapsed, never = asyncio.run(main())
    assert error.code == Code.DEADLINE_EXCEEDED
    assert 0.04 <= elapsed < 2
    assert never.cancelled()  # a run still in the batch queue is dropped


def test_a_caller_that_goes_away_cancels_its_run():
    async def main():
        completions = Completions(asyncio.get_running_loop())
        pending = Future()
        waiter = asyncio.ensure_future(completions.result(pending))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return pending

    assert asyncio.run(main()).cancelled()
