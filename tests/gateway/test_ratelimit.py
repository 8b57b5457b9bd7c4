"""Rate limiting of session starts per user and per client application: GCRA in memory and in Redis, end to
end."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from gateway.ratelimit import (
    Gcra,
    MemoryRateLimitStore,
    RedisRateLimitStore,
    build_rate_limits,
    retry_after_header,
)
from tests.gateway.conftest import Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.clock import FakeClock
from tests.support.entra import SERVICE_CLIENT_ID as SERVICE
from tests.support.entra import SPA_CLIENT_ID as SPA
from tests.support.entra import make_settings
from tests.support.groups import skip_unless_available

pytestmark = pytest.mark.anyio
REDIS_URL = os.environ.get("LKPS_TEST_REDIS_URL")


class TestGcra:
    def test_burst_then_steady_rate(self) -> None:
        """A client may send burst+1 requests at once, then one per interval."""
        gcra = Gcra(per_minute=60, burst=2)
        tat, now, decisions = 0.0, 100.0, []
        for _ in range(4):
            retry, new_tat = gcra.decide(tat, now)
            decisions.append(retry)
            if not retry:
                tat = new_tat
        assert decisions[:3] == [0.0, 0.0, 0.0]
        assert decisions[3] == pytest.approx(1.0)
        assert gcra.decide(tat, now + 1.0)[0] == 0.0

    def test_retry_after_is_whole_seconds_rounded_up(self) -> None:
        """Retry-After is at least 1 and never rounds a wait down."""
        assert retry_after_header(0.01) == "1"
        assert retry_after_header(1.2) == "2"


class TestMemory:
    async def test_limits_each_client_separately(self) -> None:
        """One client exhausting its burst does not affect another client."""
        clock = FakeClock()
        limiter, gcra = MemoryRateLimitStore(clock), Gcra(per_minute=60, burst=1)
        assert [await limiter.acquire("a", gcra) for _ in range(2)] == [0.0, 0.0]
        assert await limiter.acquire("a", gcra) > 0
        assert await limiter.acquire("b", gcra) == 0.0
        clock.advance(1.0)
        assert await limiter.acquire("a", gcra) == 0.0

    def test_disabled_when_both_rates_are_zero(self) -> None:
        """A rate of 0 per minute disables a budget; with both off there is no limiter."""
        off = make_settings(rate_limit_per_minute=0, user_rate_limit_per_minute=0)
        assert build_rate_limits(off, FakeClock(), CollectorRegistry()) is None
        users_only = build_rate_limits(
            make_settings(rate_limit_per_minute=0, user_rate_limit_per_minute=30),
            FakeClock(),
            CollectorRegistry(),
        )
        assert users_only is not None
        assert (users_only.per_client, users_only.per_user is not None) == (None, True)


@pytest.fixture
def redis_url() -> str:
    """The real Redis server named by LKPS_TEST_REDIS_URL (CI sets it; `scripts/test` finds a local one)."""
    skip_unless_available("redis")
    assert REDIS_URL is not None
    return REDIS_URL


class TestRedis:
    async def test_replicas_share_one_budget(self, redis_url: str) -> None:
        """Two limiters on one Redis (two replicas) draw from the same budget for a client."""
        registry = CollectorRegistry()
        gcra = Gcra(per_minute=60, burst=1)
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        first = RedisRateLimitStore(Redis.from_url(redis_url), _errors(registry), prefix)
        second = RedisRateLimitStore(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix)
        try:
            assert await first.acquire("client", gcra) == 0.0
            assert await second.acquire("client", gcra) == 0.0
            wait = await first.acquire("client", gcra)
            assert 0 < wait <= 1.0
            assert await second.acquire("other-client", gcra) == 0.0
        finally:
            await first.aclose()
            await second.aclose()

    async def test_keys_expire_with_their_state(self, redis_url: str) -> None:
        """A client's key carries a TTL, so idle clients leave nothing behind in Redis."""
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        limiter = RedisRateLimitStore(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix)
        probe = Redis.from_url(redis_url)
        try:
            await limiter.acquire("client", Gcra(60, 1))
            ttl = await probe.pttl(prefix + "client")
            assert 0 < ttl <= 3000
        finally:
            await limiter.aclose()
            await probe.aclose()


async def test_unreachable_redis_fails_open_and_is_counted() -> None:
    """If Redis cannot be reached the request is allowed, and the failure is counted for alerting."""
    registry = CollectorRegistry()
    limits = build_rate_limits(make_settings(redis_url="redis://127.0.0.1:1/0"), FakeClock(), registry)
    assert limits is not None
    try:
        assert await limits.store.acquire("client", Gcra(60, 1)) == 0.0
    finally:
        await limits.aclose()
    assert registry.get_sample_value("lkps_rate_limit_store_errors_total") == 1.0


def _errors(registry: CollectorRegistry) -> Counter:
    return Counter("lkps_rate_limit_store_errors", "test", registry=registry)


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[Gateway]:
    async for gateway in running_gateway(
        database_url, rate_limit_per_minute=60, rate_limit_burst=1, user_rate_limit_per_minute=0
    ):
        yield gateway


async def test_session_start_answers_429_with_retry_after(limited: Gateway) -> None:
    """Past its burst a client gets 429 with Retry-After and the error shape; nothing is written."""
    await limited.register_agent()
    assert [(await limited.start()).status_code for _ in range(2)] == [200, 200]
    response = await limited.start()
    body = assert_error(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "1"
    assert "retry after 1 s" in body["message"]
    assert await limited.session_rows() == 2
    other_client = await limited.start(limited.entra.mint_app_token())
    assert other_client.status_code == 200


COLLEAGUE_OID = "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"
THIRD_OID = "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f"
UNKNOWN_AGENT = "0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"


@pytest.fixture
async def per_user(database_url: str) -> AsyncIterator[Gateway]:
    """Each user 2 starts at once (burst 1); all users of a client 4 at once (burst 3)."""
    async for gateway in running_gateway(
        database_url,
        user_rate_limit_per_minute=60,
        user_rate_limit_burst=1,
        rate_limit_per_minute=600,
        rate_limit_burst=3,
    ):
        await gateway.register_agent()
        yield gateway


def _user(gateway: Gateway, oid: str) -> str:
    return gateway.entra.mint_user_token(oid=oid, cwid=f"U{oid[:8]}")


async def test_one_user_cannot_lock_out_colleagues_of_the_same_app(per_user: Gateway) -> None:
    """A user past their own budget gets 429 and their refused requests cost the shared client ceiling
    nothing; colleagues are served until the ceiling itself is reached."""
    eager = [(await per_user.start()).status_code for _ in range(10)]
    assert eager == [200, 200] + [429] * 8
    refused = assert_error(await per_user.start(), 429, "rate_limited")
    assert "by you" in refused["message"]
    colleague = _user(per_user, COLLEAGUE_OID)
    assert [(await per_user.start(colleague)).status_code for _ in range(2)] == [200, 200]
    ceiling = assert_error(await per_user.start(_user(per_user, THIRD_OID)), 429, "rate_limited")
    assert f"for client application '{SPA}'" in ceiling["message"]
    assert await per_user.session_rows() == 4


async def test_requests_for_unknown_agents_only_use_up_the_callers_own_budget(per_user: Gateway) -> None:
    """404s for an unknown agent are charged to that user alone: the client's ceiling stays whole."""
    statuses = [
        (await per_user.start(body={"agent_entra_app_id": UNKNOWN_AGENT})).status_code for _ in range(6)
    ]
    assert statuses == [404, 404, 429, 429, 429, 429]
    served = [(await per_user.start(_user(per_user, oid))).status_code for oid in (COLLEAGUE_OID, THIRD_OID)]
    assert served == [200, 200]
    assert (await per_user.start(_user(per_user, COLLEAGUE_OID))).status_code == 200
    assert (await per_user.start(_user(per_user, THIRD_OID))).status_code == 200


async def test_app_only_callers_are_bounded_by_the_client_ceiling_alone(per_user: Gateway) -> None:
    """A backend service starting sessions for many people is one caller: only its client's ceiling applies."""
    service = per_user.entra.mint_app_token()
    assert [(await per_user.start(service)).status_code for _ in range(5)] == [200] * 4 + [429]


async def test_a_users_budget_is_per_client_application(per_user: Gateway) -> None:
    """The same person through another allowed client app has a budget of their own there."""
    assert [(await per_user.start()).status_code for _ in range(3)] == [200, 200, 429]
    other_app = per_user.entra.mint_user_token(azp=SERVICE)
    assert (await per_user.start(other_app)).status_code == 200
