"""Worker presence: shared by replicas through the database, answered from memory, with a grace after a
worker leaves and an expiry for the workers of a replica that stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.db import create_engine
from gateway.persistence.tables import worker_presence
from gateway.presence import MISS_RECHECK_SECONDS, STALE_SECONDS, WorkerPresence
from tests.support.clock import FakeClock

pytestmark = pytest.mark.anyio
AGENT = "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"
GRACE = 15.0


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def replica(engine: AsyncEngine, clock: FakeClock, name: str) -> WorkerPresence:
    return WorkerPresence(engine, clock, name, GRACE)


async def test_a_worker_on_one_replica_is_seen_by_another(engine: AsyncEngine, clock: FakeClock) -> None:
    """A worker registered through replica A counts on A at once and on B as soon as it is written."""
    a, b = replica(engine, clock, "a"), replica(engine, clock, "b")
    assert not await a.is_present(AGENT)
    a.registered("conn-1", AGENT, "")
    assert await a.is_present(AGENT)
    await a.flush()
    assert await b.is_present(AGENT)


async def test_a_departed_worker_counts_for_the_grace_only(engine: AsyncEngine, clock: FakeClock) -> None:
    """After the worker's connection ended it still counts, on every replica, for the grace period."""
    a, b = replica(engine, clock, "a"), replica(engine, clock, "b")
    a.registered("conn-1", AGENT, "")
    a.ended("conn-1")
    await a.flush()
    await b.refresh()
    clock.advance(GRACE - 1)
    assert await a.is_present(AGENT)
    assert await b.is_present(AGENT)
    clock.advance(2)
    await b.refresh()
    assert not await a.is_present(AGENT)
    assert not await b.is_present(AGENT)


async def test_a_stopped_replicas_workers_expire(engine: AsyncEngine, clock: FakeClock) -> None:
    """Workers of a replica that stopped refreshing count until the staleness limit plus the grace; a
    replica that keeps its heartbeat keeps its workers present."""
    crashed, alive, reader = (replica(engine, clock, name) for name in ("crashed", "alive", "reader"))
    crashed.registered("conn-1", AGENT, "")
    other = "9a7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"
    alive.registered("conn-2", other, "")
    await crashed.flush()
    await alive.flush()
    for _ in range(int((STALE_SECONDS + GRACE) // 5) + 1):
        clock.advance(5)
        await alive.heartbeat()
    await reader.refresh()
    clock.advance(MISS_RECHECK_SECONDS)
    assert not await reader.is_present(AGENT)
    assert await reader.is_present(other)


async def test_a_miss_is_checked_again_at_most_once_a_second(engine: AsyncEngine, clock: FakeClock) -> None:
    """A replica that found no worker answers from memory for a second, then asks the database again."""
    a, b = replica(engine, clock, "a"), replica(engine, clock, "b")
    assert not await b.is_present(AGENT)
    a.registered("conn-1", AGENT, "")
    await a.flush()
    assert not await b.is_present(AGENT)
    clock.advance(MISS_RECHECK_SECONDS)
    assert await b.is_present(AGENT)


async def test_presence_is_per_deployment(engine: AsyncEngine, clock: FakeClock) -> None:
    """A worker registered for a deployment makes the agent present for that deployment only."""
    a, b = replica(engine, clock, "a"), replica(engine, clock, "b")
    a.registered("conn-1", AGENT, "eu-west")
    await a.flush()
    assert await a.is_present(AGENT, "eu-west")
    assert not await a.is_present(AGENT)
    await b.refresh()
    assert await b.is_present(AGENT, "eu-west")
    assert not await b.is_present(AGENT, "")


async def test_long_gone_rows_are_pruned(engine: AsyncEngine, clock: FakeClock) -> None:
    """Rows of connections that ended over an hour ago are deleted by a heartbeat."""
    a = replica(engine, clock, "a")
    a.registered("conn-1", AGENT, "")
    a.ended("conn-1")
    await a.flush()
    clock.advance(3601)
    await a.heartbeat()
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(worker_presence)) == 0
