"""Session rows, written by group commit: each request awaits the durable commit of its own batch.

While one batch commits, rows of concurrent requests queue up and go in the next single transaction. At
low load a batch is one row and nothing waits; under load the commit cost is shared. A request answers
200 only after its row is committed; if the commit fails, every request of that batch fails and no row of
it exists (one transaction), so an acknowledged session is never lost and a refused one never recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.persistence.tables import sessions

log = structlog.get_logger("lkps.sessions")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    room_name: str
    agent_app_id: str
    tenant_id: str
    caller_object_id: str
    client_app_id: str
    caller_kind: str
    user_id: str
    participant_identity: str
    created_at: datetime
    token_expires_at: datetime
    request_id: str


_Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


class SessionWriter:
    def __init__(self, engine: AsyncEngine, metrics: Metrics, max_batch: int = 256) -> None:
        self._engine = engine
        self._metrics = metrics
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def record(self, row: SessionRecord) -> None:
        """Return once `row` is committed; raise the database error if its batch failed."""
        if self._closing:
            raise RuntimeError("session writer is shut down")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lkps-session-writer")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((asdict(row), future))
        self._wakeup.set()
        # Shielded: a client that disconnects must not cancel the batch other requests are waiting on.
        await asyncio.shield(future)

    async def aclose(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            while self._pending:
                await asyncio.sleep(0.01)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            await self._insert([row for row, _ in batch])
        except IntegrityError:
            if len(batch) == 1:
                _settle(batch, RuntimeError("session row conflicts with an existing one"))
                return
            # One conflicting row (a duplicate room name) must not fail its neighbours: retry one by one.
            for item in batch:
                await self._commit_batch([item])
            return
        except Exception as exc:
            log.warning("session_batch_failed", rows=len(batch), error=type(exc).__name__)
            _settle(batch, exc)
            return
        self._metrics.db_batch_size.observe(len(batch))
        self._metrics.db_commit_latency.observe(time.perf_counter() - started)
        _settle(batch, None)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(sessions), rows)


def _settle(batch: list[_Pending], error: BaseException | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
            future.exception()  # marks it retrieved: a disconnected client's future has no awaiter
