"""Registry changes announced through a real Redis: they reach every replica's cache, a (re)subscription
forgets everything, and an announcement that cannot be made is logged, never raised."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import structlog
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.agent_changes import RedisAgentChanges
from gateway.persistence.agents import AgentRegistry
from gateway.persistence.db import create_engine
from tests.support.clock import FakeClock
from tests.support.groups import skip_unless_available
from tests.support.registrations import new_registration
from tests.support.revocations import insert_revocation

pytestmark = pytest.mark.anyio
AGENT = "5d1c8a3e-2f4b-4e6a-9c7d-8e9f0a1b2c3d"
REDIS_URL = os.environ.get("LKPS_TEST_REDIS_URL")
WAIT_SECONDS = 10  # for a Redis round trip on a loaded machine; a lost announcement never arrives


@pytest.fixture
def redis_url() -> str:
    skip_unless_available("redis")
    assert REDIS_URL is not None
    return REDIS_URL


@pytest.fixture
def channel() -> str:
    return f"lkps-test:agent-changes:{uuid.uuid4().hex}"  # no other test's announcements


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


class _Told:
    """What a replica was told to forget, in order (`None`: everything), passed on to `then` if given."""

    def __init__(self, then: Callable[[str | None], None] | None = None) -> None:
        self.agents: list[str | None] = []
        self._then = then
        self._changed = asyncio.Event()

    def __call__(self, agent: str | None) -> None:
        self.agents.append(agent)
        if self._then is not None:
            self._then(agent)
        self._changed.set()

    async def until(self, condition: Callable[[list[str | None]], bool]) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while not condition(self.agents):
                self._changed.clear()
                await self._changed.wait()


def _changes(redis_url: str, channel: str) -> RedisAgentChanges:
    return RedisAgentChanges(Redis.from_url(redis_url), CollectorRegistry(), channel)


@asynccontextmanager
async def _subscribed(
    changes: RedisAgentChanges, then: Callable[[str | None], None] | None = None
) -> AsyncIterator[_Told]:
    """One replica's changes applied (passed to `then`) once subscribed: it was told to forget everything."""
    told = _Told(then)
    listening = asyncio.ensure_future(changes.run(told))
    try:
        await told.until(lambda agents: agents == [None])
        yield told
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await changes.aclose()


async def test_an_announcement_reaches_every_subscribed_replica(redis_url: str, channel: str) -> None:
    """Announced on one replica, an agent is forgotten on each subscribed replica (the announcer too)."""
    first = _changes(redis_url, channel)
    async with _subscribed(first) as first_forgot, _subscribed(_changes(redis_url, channel)) as second_forgot:
        first.announce(AGENT)
        await first_forgot.until(lambda agents: AGENT in agents)
        await second_forgot.until(lambda agents: AGENT in agents)
        assert second_forgot.agents == [None, AGENT]


async def test_a_replica_forgets_everything_when_it_subscribes_again(redis_url: str, channel: str) -> None:
    """A subscription that was cut (announcements meanwhile are lost) is re-established, and the replica
    then forgets every cached answer, as it did on its first subscription; the outage is one warning line
    and its end one info line."""
    async with _subscribed(_changes(redis_url, channel)) as forgot:
        admin = Redis.from_url(redis_url)
        with structlog.testing.capture_logs() as logs:
            try:
                await admin.client_kill_filter(_type="pubsub")
            finally:
                await admin.aclose()
            await forgot.until(lambda agents: agents == [None, None])
    assert [line["event"] for line in logs] == ["agent_changes_unavailable", "agent_changes_subscribed_again"]


async def test_an_outage_is_logged_once_however_often_subscribing_fails(channel: str) -> None:
    """With Redis unreachable, a replica keeps trying to subscribe, and says so once."""
    changes = RedisAgentChanges(
        Redis.from_url("redis://127.0.0.1:1/0"), CollectorRegistry(), channel, resubscribe_seconds=0.01
    )
    told = _Told()
    with structlog.testing.capture_logs() as logs:
        listening = asyncio.ensure_future(changes.run(told))
        await asyncio.sleep(0.3)  # about thirty attempts
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
    await changes.aclose()
    assert [(line["event"], line["error"]) for line in logs] == [
        ("agent_changes_unavailable", "ConnectionError")
    ]
    assert told.agents == []


async def test_an_announcement_that_cannot_be_made_is_logged(channel: str) -> None:
    """With Redis unreachable, announcing returns at once and the failure is one warning line (the change
    itself is committed; other replicas see it within the cache TTL)."""
    changes = RedisAgentChanges.from_url("redis://127.0.0.1:1/0", CollectorRegistry())
    try:
        with structlog.testing.capture_logs() as logs:
            changes.announce(AGENT)
            await changes.flush()
    finally:
        await changes.aclose()
    assert [(line["event"], line["log_level"]) for line in logs] == [
        ("agent_change_announce_failed", "warning")
    ]
    assert logs[0]["error"] == "ConnectionError"


async def test_a_revocation_on_one_replica_is_read_by_the_other_at_once(
    redis_url: str, channel: str, engine: AsyncEngine
) -> None:
    """Two replicas' registries, each caching answers for ten minutes: the revocation one of them commits
    and invalidates is read by the other as soon as the announcement arrives."""
    clock = FakeClock()
    first_changes, second_changes = _changes(redis_url, channel), _changes(redis_url, channel)
    first = AgentRegistry(engine, clock, 600, first_changes)
    second = AgentRegistry(engine, clock, 600, second_changes)
    async with _subscribed(first_changes, first.forget), _subscribed(second_changes, second.forget) as told:
        await first.register(
            new_registration(AGENT, enforce_client_authz=False), expires_at=int(clock.now()) + 3600
        )
        await told.until(lambda agents: AGENT in agents)  # the registration's own announcement
        assert await second.active(AGENT) is not None
        async with engine.begin() as conn:
            await insert_revocation(conn, AGENT)
        assert await second.active(AGENT) is not None  # cached: nothing announced yet
        first.invalidate(AGENT)
        assert await first.active(AGENT) is None
        await told.until(lambda agents: agents.count(AGENT) == 2)
        assert await second.active(AGENT) is None
