"""An event loop that runs on a thread of its own until stopped, then closes."""
from __future__ import annotations

import asyncio


def run_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    """run_forever; once stopped, finish its async generators and default executor and close
    it, so that nothing of the loop (its self-pipe sockets among them) outlives the server."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
