"""Session rows, written by group commit: each request awaits the durable commit of its own batch.

While batches commit, rows of concurrent requests queue up and go into the next one. At low load a batch
is one row and nothing waits; under load the commit (an fsync on PostgreSQL) is shared. On PostgreSQL a
batch is one prepared `INSERT ... SELECT FROM json_populate_recordset(...)` in autocommit mode: atomic,
never recompiled, and one round trip instead of BEGIN / INSERT / COMMIT, which matters because every
await on a busy event loop waits a full loop turn. The rows travel as one JSON parameter encoded by
msgspec, which costs half the client CPU of one array parameter per column (asyncpg inspects every array
element) and lets PostgreSQL convert each value by the table's own column types. Up to `max_inflight`
batches commit at once, each in a lane of its own, so the database also groups their WAL flushes. A lane
commits batch after batch on one connection while rows are waiting and returns it to the pool when the
queue is empty: a pool checkout and check-in cost about as much client CPU as the INSERT itself. SQLite
(one writer, no network) takes an executemany in one transaction.

A request answers 200 only after its row is committed; if a batch fails, every request of that batch
fails and no row of it exists, so an acknowledged session is never lost and a refused one never recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, fields
from datetime import datetime

import asyncpg
import msgspec
import structlog
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.persistence.tables import sessions

log = structlog.get_logger("lkps.sessions")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    room_name: str
    agent_app_id: str
    deployment: str  # the agent's LiveKit deployment; "" is LiveKit's default
    tenant_id: str
    caller_object_id: str
    client_app_id: str
    caller_kind: str
    user_id: str
    participant_identity: str
    created_at: datetime
    token_expires_at: datetime
    request_id: str
    agent_metadata: str  # the dispatch metadata, sent again if the agent has to be dispatched again
    next_check_at: datetime | None  # when the supervisor first looks at the session (its age limit)


_FIELDS = tuple(f.name for f in fields(SessionRecord))
# A unique violation from either path: SQLAlchemy's (SQLite) or asyncpg's own (the raw PostgreSQL path).
_CONFLICT = (IntegrityError, asyncpg.IntegrityConstraintViolationError)
# Dataclasses encode as JSON objects keyed by field name; datetimes as RFC 3339 with their offset.
_encode_rows = msgspec.json.Encoder().encode


def _postgres_insert() -> str:
    """The PostgreSQL batch statement: the record type is the table's, so a column cannot drift apart."""
    columns = ", ".join(_FIELDS)
    # Built once from the table definition (no input reaches it); the rows are one bound parameter.
    return (
        f"INSERT INTO {sessions.name} ({columns}) "  # noqa: S608
        f"SELECT {columns} FROM json_populate_recordset(NULL::{sessions.name}, $1::json)"
    )


# How long a lane keeps its connection after its queue ran empty, waiting for more rows.
LANE_LINGER_SECONDS = 0.01

_Pending = tuple[SessionRecord, "asyncio.Future[None]"]


class _Lane:
    """The PostgreSQL connection one lane of the writer keeps while it has batches to commit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def execute(self, statement: str, rows: bytes) -> None:
        conn = self._conn or await self._engine.connect()
        self._conn = None
        try:
            raw = await conn.get_raw_connection()
            # asyncpg caches the prepared statement per connection; outside a transaction it autocommits.
            await raw.driver_connection.execute(statement, rows.decode())  # type: ignore[union-attr]
        except BaseException:
            # After a failed statement (or a broken socket) its state is unknown: it is never reused, and
            # cleaning it up must not replace the error the batch's requests are waiting for.
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()
            raise
        self._conn = conn

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


class SessionWriter:
    def __init__(
        self, engine: AsyncEngine, metrics: Metrics, max_batch: int = 256, max_inflight: int = 2
    ) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._statement = _postgres_insert() if self._postgres else None
        self._metrics = metrics
        self._max_batch = max_batch
        # SQLite has one writer: concurrent batches would only queue on its lock.
        self._max_inflight = max_inflight if self._postgres else 1
        self._pending: list[_Pending] = []
        self._arrived = asyncio.Event()  # set by every row, so a lingering lane takes it
        self._lingering = 0  # lanes waiting for rows with their connection
        self._lanes: set[asyncio.Task[None]] = set()
        self._closing = False

    async def record(self, row: SessionRecord) -> None:
        """Return once `row` is committed; raise the database error if its batch failed."""
        if self._closing:
            raise RuntimeError("session writer is shut down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._arrived.set()
        self._flush()
        # Not shielded: a request cancelled meanwhile (its client left) cancels only its own future, which
        # `_settle` then skips; the batch, run by the lane's task, commits for the others all the same.
        await future

    async def aclose(self) -> None:
        """Commit what is queued, then stop accepting rows."""
        self._closing = True
        while self._lanes:
            await asyncio.gather(*self._lanes, return_exceptions=True)

    def _flush(self) -> None:
        # A busy lane takes the waiting rows itself when its batch is committed, and a lingering one as soon
        # as they arrive; a new lane starts only while none lingers and fewer than `max_inflight` run.
        while self._pending and not self._lingering and len(self._lanes) < self._max_inflight:
            task = asyncio.get_running_loop().create_task(self._drain())
            self._lanes.add(task)
            task.add_done_callback(self._lane_done)

    def _lane_done(self, task: asyncio.Task[None]) -> None:
        self._lanes.discard(task)
        self._flush()  # rows that arrived while the lane was giving its connection back

    async def _drain(self) -> None:
        lane = _Lane(self._engine)
        try:
            while self._pending or await self._more_rows():
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit_batch(batch, lane)
        finally:
            await lane.release()

    async def _more_rows(self) -> bool:
        """Whether rows arrive within LANE_LINGER_SECONDS. Under load the requests a commit answered send
        their next rows within a millisecond or two, and a lane that kept its connection for them saves a
        pool check-in and checkout; an idle writer still gives every connection back within the linger."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LANE_LINGER_SECONDS
        self._lingering += 1
        try:
            while not self._pending:  # another lingering lane may take the rows that woke this one
                if self._closing or loop.time() >= deadline:
                    return False
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._arrived.wait()
        finally:
            self._lingering -= 1
        return True

    async def _commit_batch(self, batch: list[_Pending], lane: _Lane) -> None:
        started = time.perf_counter()
        try:
            await self._insert([row for row, _ in batch], lane)
        except _CONFLICT:
            if len(batch) == 1:
                _settle(batch, RuntimeError("session row conflicts with an existing one"))
                return
            # One conflicting row (a duplicate room name) must not fail its neighbours: retry one by one.
            for item in batch:
                await self._commit_batch([item], lane)
            return
        except Exception as exc:
            log.warning("session_batch_failed", rows=len(batch), error=type(exc).__name__)
            _settle(batch, exc)
            return
        self._metrics.db_batch_size.observe(len(batch))
        self._metrics.db_commit_latency.observe(time.perf_counter() - started)
        _settle(batch, None)

    async def _insert(self, rows: list[SessionRecord], lane: _Lane) -> None:
        if self._statement is None:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(sessions), [{name: getattr(row, name) for name in _FIELDS} for row in rows]
                )
            return
        await lane.execute(self._statement, _encode_rows(rows))


def _settle(batch: list[_Pending], error: BaseException | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
            future.exception()  # marks it retrieved: a disconnected client's future has no awaiter
