"""Small pieces for work done beside requests: writes queued in order, and loops that are cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

import structlog

log = structlog.get_logger("lkps.background")


class OrderedWrites:
    """Database writes taken off a hot path and done one at a time in the order queued (a failure is logged
    and counted as done, so one bad write never blocks the next)."""

    def __init__(self, failure_event: str) -> None:
        self._failure_event = failure_event
        self._queue: asyncio.Queue[Awaitable[None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def later(self, work: Awaitable[None]) -> None:
        self._queue.put_nowait(work)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def flush(self) -> None:
        """Wait until every write queued so far is done."""
        await self._queue.join()

    async def aclose(self) -> None:
        await self.flush()
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            work = await self._queue.get()
            try:
                await work
            except Exception as exc:
                log.warning(self._failure_event, error=type(exc).__name__)
            finally:
                self._queue.task_done()


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop and wait for it to stop."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
