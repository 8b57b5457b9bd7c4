"""Rate limiting of session starts per client application: GCRA in memory and in Redis, end to end."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from gateway.ratelimit import (
    Gcra,
    MemoryRateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
    retry_after_header,
)
from tests.gateway.conftest import Gateway, running_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.clock import FakeClock
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
        limiter = MemoryRateLimiter(Gcra(per_minute=60, burst=1), clock)
        assert [await limiter.acquire("a") for _ in range(2)] == [0.0, 0.0]
        assert await limiter.acquire("a") > 0
        assert await limiter.acquire("b") == 0.0
        clock.advance(1.0)
        assert await limiter.acquire("a") == 0.0

    def test_disabled_when_rate_is_zero(self) -> None:
        """A rate of 0 per minute disables the limiter."""
        assert build_rate_limiter(0, 10, None, FakeClock(), CollectorRegistry()) is None


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
        first = RedisRateLimiter(Redis.from_url(redis_url), gcra, _errors(registry), prefix)
        second = RedisRateLimiter(Redis.from_url(redis_url), gcra, _errors(CollectorRegistry()), prefix)
        try:
            assert await first.acquire("client") == 0.0
            assert await second.acquire("client") == 0.0
            wait = await first.acquire("client")
            assert 0 < wait <= 1.0
            assert await second.acquire("other-client") == 0.0
        finally:
            await first.aclose()
            await second.aclose()

    async def test_keys_expire_with_their_state(self, redis_url: str) -> None:
        """A client's key carries a TTL, so idle clients leave nothing behind in Redis."""
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        limiter = RedisRateLimiter(
            Redis.from_url(redis_url), Gcra(60, 1), _errors(CollectorRegistry()), prefix
        )
        probe = Redis.from_url(redis_url)
        try:
            await limiter.acquire("client")
            ttl = await probe.pttl(prefix + "client")
            assert 0 < ttl <= 3000
        finally:
            await limiter.aclose()
            await probe.aclose()


async def test_unreachable_redis_fails_open_and_is_counted() -> None:
    """If Redis cannot be reached the request is allowed, and the failure is counted for alerting."""
    registry = CollectorRegistry()
    limiter = build_rate_limiter(60, 1, "redis://127.0.0.1:1/0", FakeClock(), registry)
    assert limiter is not None
    try:
        assert await limiter.acquire("client") == 0.0
    finally:
        await limiter.aclose()
    assert registry.get_sample_value("lkps_rate_limit_store_errors_total") == 1.0


def _errors(registry: CollectorRegistry) -> Counter:
    return Counter("lkps_rate_limit_store_errors", "test", registry=registry)


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[Gateway]:
    async for gateway in running_gateway(database_url, rate_limit_per_minute=60, rate_limit_burst=1):
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
