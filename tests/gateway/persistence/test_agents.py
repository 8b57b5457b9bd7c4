"""The agent registry: what counts as connected, the short cache, and single-flight lookups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.agents import AgentRegistry, AgentRevoked, NewRegistration
from gateway.persistence.db import create_engine
from gateway.persistence.tables import agent_registrations
from tests.support.clock import FakeClock
from tests.support.revocations import insert_revocation

pytestmark = pytest.mark.anyio
AGENT = "8b0f4f0e-54a4-4c44-9a4b-2c7f0d2b6a10"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


def _new(enforce: bool = True) -> NewRegistration:
    return NewRegistration(
        agent_app_id=AGENT,
        tenant_id="0d0a8b5e-95a2-4b8b-9d0e-7d6c5b4a3f21",
        requester_object_id="1c9a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        enforce_client_authz=enforce,
        display_name="Agent",
        description=None,
        agent_version="1.2.3",
        request_id="req-1",
    )


def _count_selects(engine: AsyncEngine) -> list[str]:
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _record(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    return statements


class TestActive:
    async def test_unknown_agent_is_not_connected(self, engine: AsyncEngine) -> None:
        """An agent with no registration is not connected."""
        assert await AgentRegistry(engine, FakeClock()).active(AGENT) is None

    async def test_registration_makes_the_agent_connected_until_it_expires(self, engine: AsyncEngine) -> None:
        """A registration is in force until its expiry, then the agent is not connected."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        await registry.register(_new(enforce=False), expires_at=int(clock.now()) + 60)
        active = await registry.active(AGENT)
        assert active is not None
        assert active.enforce_client_authz is False
        clock.advance(61)
        assert await registry.active(AGENT) is None

    async def test_revoked_registration_does_not_count(self, engine: AsyncEngine) -> None:
        """A revoked registration does not make the agent connected."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        async with engine.begin() as conn:
            await conn.execute(update(agent_registrations).values(revoked=True))
        assert await registry.active(AGENT) is None

    async def test_latest_registration_sets_enforcement(self, engine: AsyncEngine) -> None:
        """When several registrations are active, the most recent one's enforce_client_authz applies."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        await registry.register(_new(enforce=False), expires_at=int(clock.now()) + 600)
        clock.advance(1)
        await registry.register(_new(enforce=True), expires_at=int(clock.now()) + 60)
        active = await registry.active(AGENT)
        assert active is not None
        assert active.enforce_client_authz is True

    async def test_every_registration_is_a_row(self, engine: AsyncEngine) -> None:
        """Each registration call leaves its own audit row with requester, expiry and revocation status."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock)
        first = await registry.register(_new(), expires_at=int(clock.now()) + 60)
        second = await registry.register(_new(), expires_at=int(clock.now()) + 120)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(select(agent_registrations).order_by(agent_registrations.c.expires_at))
            ).all()
        assert [row.id for row in rows] == [first.id, second.id]
        assert all(
            row.requester_object_id == _new().requester_object_id and row.revoked is False for row in rows
        )
        assert rows[0].expires_at.timestamp() == int(clock.now()) + 60


class TestCache:
    async def test_answers_are_cached_for_the_ttl(self, engine: AsyncEngine) -> None:
        """Within the TTL a repeated lookup makes no query; after it, one."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=1.0)
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        selects = _count_selects(engine)
        await registry.active(AGENT)
        await registry.active(AGENT)
        assert len(selects) == 1
        clock.advance(1.5)
        await registry.active(AGENT)
        assert len(selects) == 2

    async def test_own_registration_invalidates_a_cached_absence(self, engine: AsyncEngine) -> None:
        """A cached "not connected" is dropped when this replica records a registration."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=60)
        assert await registry.active(AGENT) is None
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        assert await registry.active(AGENT) is not None

    async def test_cached_registration_still_honours_its_expiry(self, engine: AsyncEngine) -> None:
        """A cached registration stops counting at its expiry even inside the cache TTL."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=600)
        await registry.register(_new(), expires_at=int(clock.now()) + 5)
        assert await registry.active(AGENT) is not None
        clock.advance(6)
        assert await registry.active(AGENT) is None

    async def test_concurrent_misses_share_one_query(self, engine: AsyncEngine) -> None:
        """Many simultaneous lookups of an uncached agent make a single query."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=1.0)
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        selects = _count_selects(engine)
        results = await asyncio.gather(*(registry.active(AGENT) for _ in range(20)))
        assert all(result is not None for result in results)
        assert len(selects) == 1


class TestRevocation:
    async def revoke(self, engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            await insert_revocation(conn, AGENT)

    async def test_a_revoked_agent_cannot_register(self, engine: AsyncEngine) -> None:
        """With a revocation in place, register raises AgentRevoked and writes no row."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        await self.revoke(engine)
        assert await registry.revoked(AGENT) is True
        with pytest.raises(AgentRevoked):
            await registry.register(_new(), expires_at=int(clock.now()) + 3600)
        async with engine.connect() as conn:
            assert (await conn.execute(select(agent_registrations))).all() == []

    async def test_a_registration_that_raced_the_revocation_does_not_connect(
        self, engine: AsyncEngine
    ) -> None:
        """A live, unmarked registration of a revoked agent (inserted as the revocation committed) is ignored."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        await registry.register(_new(), expires_at=int(clock.now()) + 3600)
        assert await registry.active(AGENT) is not None
        await self.revoke(engine)
        assert await registry.active(AGENT) is None
