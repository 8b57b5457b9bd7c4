"""The agent registry: what counts as connected, the short cache, changes that drop it, and single-flight
lookups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.caller import CallerKind
from gateway.persistence.agents import ActiveAgent, AgentRegistry, AgentRevoked, NewRegistration
from gateway.persistence.audit import AdminAction
from gateway.persistence.db import create_engine
from gateway.persistence.revocations import AgentRevocations
from gateway.persistence.tables import agent_registrations
from gateway.persistence.workers import WorkerStore
from tests.support.callers import make_caller
from tests.support.clock import FakeClock
from tests.support.registrations import new_registration
from tests.support.revocations import insert_revocation

pytestmark = pytest.mark.anyio
AGENT = "8b0f4f0e-54a4-4c44-9a4b-2c7f0d2b6a10"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


def _new(enforce: bool = True) -> NewRegistration:
    return new_registration(AGENT, enforce_client_authz=enforce)


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


class _Announcements:
    """The registry's `AgentChanges` seam, recording what this replica announced."""

    def __init__(self) -> None:
        self.announced: list[str] = []

    def announce(self, agent_app_id: str) -> None:
        self.announced.append(agent_app_id)


class _HeldReads(AgentRegistry):
    """A registry whose first read of the database is held, after it read, until `release` is set."""

    def __init__(self, engine: AsyncEngine, clock: FakeClock) -> None:
        super().__init__(engine, clock, cache_ttl_seconds=600)
        self.reads = 0
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def _load(self, agent_app_id: str) -> ActiveAgent | None:
        self.reads += 1
        answer = await super()._load(agent_app_id)
        if self.reads == 1:
            self.read_done.set()
            await self.release.wait()
        return answer


async def _revoke(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await insert_revocation(conn, AGENT)


class TestChanges:
    async def test_changes_on_this_replica_are_announced(self, engine: AsyncEngine) -> None:
        """A registration, and each change an administrator makes (`invalidate`), is announced."""
        clock, announcements = FakeClock(), _Announcements()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=600, changes=announcements)
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        registry.invalidate(AGENT)
        assert announcements.announced == [AGENT, AGENT]

    @pytest.mark.parametrize("forgotten", [AGENT, None], ids=["the-agent", "everything"])
    async def test_a_forgotten_answer_is_read_again(self, engine: AsyncEngine, forgotten: str | None) -> None:
        """A cached "connected" outlives a revocation committed elsewhere until the agent (or the whole
        cache) is forgotten, then the next lookup reads the revocation; forgetting announces nothing."""
        clock, announcements = FakeClock(), _Announcements()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=600, changes=announcements)
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        assert await registry.active(AGENT) is not None
        await _revoke(engine)
        assert await registry.active(AGENT) is not None  # the cache, within its TTL
        registry.forget(forgotten)
        assert await registry.active(AGENT) is None
        assert announcements.announced == [AGENT]  # the registration's only

    async def test_a_read_in_flight_across_a_change_answers_only_who_asked_before(
        self, engine: AsyncEngine
    ) -> None:
        """A lookup that read "connected" before a revocation answers its own callers, but is not cached,
        and a lookup that starts after the change reads anew instead of joining it."""
        clock = FakeClock()
        registry = _HeldReads(engine, clock)
        await registry.register(_new(), expires_at=int(clock.now()) + 60)
        before = asyncio.ensure_future(registry.active(AGENT))
        await registry.read_done.wait()
        await _revoke(engine)
        registry.forget(AGENT)
        assert await asyncio.wait_for(registry.active(AGENT), timeout=10) is None  # not the held read
        registry.release.set()
        assert await before is not None
        assert await registry.active(AGENT) is None
        assert registry.reads == 2


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

    async def test_why_a_key_is_out_of_force_is_about_that_key(self, engine: AsyncEngine) -> None:
        """A key that ran out is `expired` even while another agent is revoked; a revoked agent's key is
        `revoked` (the reason a relayed worker is closed with)."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        workers = WorkerStore(engine, clock)
        other = replace(_new(), agent_app_id="0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f")
        ran_out = await registry.register(_new(), expires_at=int(clock.now()) + 60)
        revoked = await registry.register(other, expires_at=int(clock.now()) + 3600)
        async with engine.begin() as conn:
            await insert_revocation(conn, other.agent_app_id)
        clock.advance(61)
        assert await workers.why_not_in_force(ran_out.worker_key_id) == "expired"
        assert await workers.why_not_in_force(revoked.worker_key_id) == "revoked"

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


OPERATOR = make_caller(
    object_id="2d0b3c4d-5e6f-4a70-8b9c-0d1e2f3a4b5c",
    client_app_id="3e1c4d5e-6f70-4b81-9cad-1e2f3a4b5c6d",
    kind=CallerKind.APP,
)


async def _waiting_on_locks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return int(await conn.scalar(query) or 0)


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class TestKeyRotation:
    async def test_rotation_gives_a_new_key_and_ends_the_old_ones_after_the_grace(
        self, engine: AsyncEngine
    ) -> None:
        """A rotating registration carries a new key; the agent's other keys stay in force for the grace
        period only, and a later renewal keeps the new key."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        workers = WorkerStore(engine, clock)
        first = await registry.register(_new(), expires_at=int(clock.now()) + 86400)
        rotated = await registry.register(
            _new(), expires_at=int(clock.now()) + 86400, rotate_key_grace_seconds=600
        )
        assert rotated.worker_key_id != first.worker_key_id
        renewed = await registry.register(_new(), expires_at=int(clock.now()) + 86400)
        assert renewed.worker_key_id == rotated.worker_key_id
        clock.advance(599)
        assert await workers.key_in_force(first.worker_key_id) is not None
        clock.advance(2)
        assert await workers.key_in_force(first.worker_key_id) is None
        assert await workers.key_in_force(rotated.worker_key_id) is not None

    async def test_a_renewal_keeps_the_running_key_past_a_registration_without_one(
        self, engine: AsyncEngine
    ) -> None:
        """A registration row from before worker keys existed (no key) never makes a renewal mint a new key:
        the renewal keeps the key the running worker holds, even when that row expires later."""
        clock = FakeClock()
        registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
        first = await registry.register(_new(), expires_at=int(clock.now()) + 3600)
        legacy = await registry.register(_new(), expires_at=int(clock.now()) + 86400)
        async with engine.begin() as conn:
            await conn.execute(
                update(agent_registrations)
                .where(agent_registrations.c.id == legacy.id)
                .values(worker_key_id=None)
            )
        renewed = await registry.register(_new(), expires_at=int(clock.now()) + 86400)
        assert renewed.worker_key_id == first.worker_key_id


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_registration_racing_a_revocation_never_brings_the_key_back_after_an_unrevoke(
    engine: AsyncEngine,
) -> None:
    """A registration that runs while a revocation is in flight (its transaction has revoked the rows but
    not committed) does not insert the key again unrevoked: after the unrevoke the old key is not in force."""
    clock = FakeClock()
    registry = AgentRegistry(engine, clock, cache_ttl_seconds=0)
    revocations = AgentRevocations(engine, clock)
    first = await registry.register(_new(), expires_at=int(clock.now()) + 3600)
    audit = AdminAction(OPERATOR, "revoke_agent", AGENT, "req-revoke")
    async with engine.connect() as blocker:
        # Hold the revocation open after its writes: its audit row waits for this lock.
        await blocker.execute(text("LOCK TABLE admin_actions IN EXCLUSIVE MODE"))
        revoking = asyncio.ensure_future(revocations.revoke(AGENT, "race", audit))

        async def waiting(count: int) -> bool:
            return await _waiting_on_locks(engine) >= count

        await _until(lambda: waiting(1), "the revocation to wait for the audit lock")
        registering = asyncio.ensure_future(registry.register(_new(), expires_at=int(clock.now()) + 3600))

        async def registered_or_waiting() -> bool:
            return registering.done() or await waiting(2)

        await _until(registered_or_waiting, "the registration to finish or wait for the agent's lock")
        await blocker.rollback()
    await revoking
    await asyncio.gather(registering, return_exceptions=True)
    await revocations.unrevoke(AGENT, AdminAction(OPERATOR, "unrevoke_agent", AGENT, "req-unrevoke"))
    assert await WorkerStore(engine, clock).key_in_force(first.worker_key_id) is None
