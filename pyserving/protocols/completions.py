"""Hands the core's Futures (completed on runner threads) back to an event loop.

A batch completes dozens of requests at once; waking the loop once per request costs a
self-pipe write and a GIL hand-off each, so finished futures are queued and the loop is woken
once per burst. The deadline is a loop timer rather than asyncio.wait_for, which would make a
Task per request.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import Future
from typing import Optional

from pyserving.errors import Code, ServingError

# An in-progress run answers its own deadline error (RunOptions timeout); this grace lets it.
DEADLINE_GRACE_S = 0.1


class Completions:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._done: deque = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    async def result(self, future: Future, timeout_s: Optional[float] = None):
        """The future's result, awaited on the loop; past the deadline, DEADLINE_EXCEEDED (and a
        run that has not started is cancelled)."""
        waiter = self._loop.create_future()
        timer = None
        if timeout_s is not None:
            timer = self._loop.call_later(timeout_s + DEADLINE_GRACE_S, self._expire, waiter, future)
        future.add_done_callback(lambda f: self._arrived(waiter, f))
        try:
            return await waiter
        except asyncio.CancelledError:  # the client went away: drop the run if it can be
            future.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _arrived(self, waiter: asyncio.Future, future: Future) -> None:
        # Any thread. Only the first arrival of a burst wakes the loop.
        self._done.append((waiter, future))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        while self._done:
            waiter, future = self._done.popleft()
            if waiter.done():  # expired
                continue
            if future.cancelled():
                waiter.cancel()
            elif future.exception() is not None:
                waiter.set_exception(future.exception())
            else:
                waiter.set_result(future.result())

    @staticmethod
    def _expire(waiter: asyncio.Future, future: Future) -> None:
        if not waiter.done():
            future.cancel()  # drops it from its batch if it has not run yet
            waiter.set_exception(
                ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded while waiting for the model run"))
