"""Group commit of session rows: batching under concurrency, durability before answering, all-or-nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.persistence.db import create_engine
from gateway.persistence.sessions import LANE_LINGER_SECONDS, SessionRecord, SessionWriter
from gateway.persistence.tables import sessions
from tests.support.db import unreachable

pytestmark = pytest.mark.anyio
_FIELDS = [field.name for field in fields(SessionRecord)]


def _record(room: str | None = None) -> SessionRecord:
    now = datetime.now(UTC)
    return SessionRecord(
        id=str(uuid.uuid4()),
        room_name=room or f"room-{uuid.uuid4().hex}",
        agent_app_id="8b0f4f0e-54a4-4c44-9a4b-2c7f0d2b6a10",
        deployment="",
        tenant_id="0d0a8b5e-95a2-4b8b-9d0e-7d6c5b4a3f21",
        caller_object_id="1c9a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        client_app_id="2d9a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        caller_kind="user",
        user_id="ALICE",
        participant_identity="ALICE",
        created_at=now,
        token_expires_at=now,
        request_id="r",
        agent_metadata="{}",
        next_check_at=None,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(sessions))).scalar_one())


async def test_record_returns_after_the_row_is_committed(engine: AsyncEngine) -> None:
    """When `record` returns, the row is visible to another connection."""
    writer = SessionWriter(engine, Metrics())
    await writer.record(_record("room-a"))
    assert await _count(engine) == 1
    await writer.aclose()


async def test_a_stored_row_reads_back_exactly(engine: AsyncEngine) -> None:
    """Every field reads back equal to the record (microseconds, quotes, backslashes, non-ASCII included),
    and the lifecycle columns take their defaults."""
    created = datetime(2026, 11, 23, 2, 4, 3, 123456, tzinfo=UTC)
    record = replace(
        _record('room-"quoted"-\\back-é'),
        participant_identity='app-"x"\\ü',
        created_at=created,
        token_expires_at=created + timedelta(seconds=600, microseconds=1),
        request_id="req:1.2_3-4",
    )
    writer = SessionWriter(engine, Metrics())
    await writer.record(record)
    await writer.aclose()
    async with engine.connect() as conn:
        row = (await conn.execute(select(sessions))).mappings().one()
    assert {name: row[name] for name in _FIELDS} == asdict(record)
    assert (row["status"], row["started_at"], row["ended_at"], row["ended_by"]) == (
        "issued",
        None,
        None,
        None,
    )


async def test_concurrent_records_share_transactions(engine: AsyncEngine) -> None:
    """200 concurrent rows are committed in far fewer transactions than rows, and all are stored."""
    metrics = Metrics()
    writer = SessionWriter(engine, metrics, max_batch=64)
    await asyncio.gather(*(writer.record(_record()) for _ in range(200)))
    assert await _count(engine) == 200
    batches = metrics.registry.get_sample_value("lkps_session_write_batch_size_count")
    assert batches is not None
    assert batches < 200
    await writer.aclose()


async def test_a_busy_writer_keeps_its_connections_and_an_idle_one_holds_none(engine: AsyncEngine) -> None:
    """On PostgreSQL each lane commits batch after batch on one pooled connection while rows keep waiting;
    on both backends every connection is back in the pool once the queue is empty."""
    checkouts = 0

    def count_checkout(*_: object) -> None:
        nonlocal checkouts
        checkouts += 1

    event.listen(engine.sync_engine, "checkout", count_checkout)
    metrics = Metrics()
    writer = SessionWriter(engine, metrics, max_batch=8, max_inflight=2)
    await asyncio.gather(*(writer.record(_record()) for _ in range(200)))
    batches = metrics.registry.get_sample_value("lkps_session_write_batch_size_count")
    assert batches is not None
    assert batches >= 25
    if engine.dialect.name == "postgresql":
        assert checkouts <= 2
    async with asyncio.timeout(5):
        while engine.pool.checkedout():  # type: ignore[attr-defined]  # noqa: ASYNC110 - the pool has no awaitable signal
            await asyncio.sleep(0.01)
    await writer.aclose()


async def test_a_lane_keeps_its_connection_across_a_short_pause(engine: AsyncEngine) -> None:
    """Rows arriving a moment after the queue ran empty (the next requests of the clients a commit just
    answered) are committed on the connection the lane still holds, not on a fresh checkout."""
    checkouts = 0

    def count_checkout(*_: object) -> None:
        nonlocal checkouts
        checkouts += 1

    event.listen(engine.sync_engine, "checkout", count_checkout)
    writer = SessionWriter(engine, Metrics(), max_inflight=1)
    await asyncio.gather(*(writer.record(_record()) for _ in range(10)))
    await asyncio.sleep(LANE_LINGER_SECONDS / 10)
    await asyncio.gather(*(writer.record(_record()) for _ in range(10)))
    if engine.dialect.name == "postgresql":
        assert checkouts == 1
    assert await _count(engine) == 20
    await writer.aclose()


async def test_a_cancelled_request_leaves_its_batch_to_commit(engine: AsyncEngine) -> None:
    """A request cancelled while its batch commits (its client left) does not fail its neighbours."""
    writer = SessionWriter(engine, Metrics())
    tasks = [asyncio.ensure_future(writer.record(_record())) for _ in range(10)]
    await asyncio.sleep(0)  # every row is queued
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [None] * 9
    assert await _count(engine) >= 9
    await writer.aclose()


async def test_a_conflicting_row_fails_alone(engine: AsyncEngine) -> None:
    """A duplicate room name fails only its own request; its batch neighbours are committed."""
    writer = SessionWriter(engine, Metrics())
    await writer.record(_record("taken"))
    results = await asyncio.gather(
        writer.record(_record("fresh-1")),
        writer.record(_record("taken")),
        writer.record(_record("fresh-2")),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], RuntimeError)
    assert results[2] is None
    assert await _count(engine) == 3
    await writer.aclose()


async def test_database_failure_fails_every_request_of_the_batch(
    engine: AsyncEngine, database_url: str
) -> None:
    """If the database is unreachable, every waiting request gets the error and no row is written."""
    broken = create_engine(unreachable(database_url), pool_size=1)
    writer = SessionWriter(broken, Metrics())
    results = await asyncio.gather(*(writer.record(_record()) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, Exception) for result in results)
    assert await _count(engine) == 0
    await writer.aclose()
    await broken.dispose()
