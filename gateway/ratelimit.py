"""Rate limiting of session starts per client application (GCRA: a steady rate plus a burst).

In memory by default (per replica); shared by all replicas through Redis when `LKPS_REDIS_URL` is set,
where one Lua script does the whole check atomically against Redis's own clock, so replicas with skewed
clocks agree. If Redis fails the request is allowed and the failure logged and counted: the limiter
protects capacity, it is not an access control, and an outage of it must not stop every session.
"""

from __future__ import annotations

import math
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from authz.clock import Clock

log = structlog.get_logger("lkps.ratelimit")
_MAX_KEYS = 100_000


class RateLimiter(Protocol):
    async def acquire(self, key: str) -> float:
        """Take one request for `key`: 0.0 if allowed, else the seconds until one would be."""
        ...

    async def aclose(self) -> None: ...


class Gcra:
    """The arithmetic of the generic cell rate algorithm, shared by both stores."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.interval = 60.0 / per_minute  # seconds between requests at the steady rate
        self.tolerance = self.interval * burst  # how far ahead of the steady rate a client may run

    def decide(self, tat: float, now: float) -> tuple[float, float]:
        """(retry_after, new theoretical arrival time) for a request at `now` given the stored `tat`."""
        tat = max(tat, now)
        if tat - now > self.tolerance:
            return tat - self.tolerance - now, tat
        return 0.0, tat + self.interval


class MemoryRateLimiter:
    def __init__(self, gcra: Gcra, clock: Clock) -> None:
        self._gcra = gcra
        self._clock = clock
        self._tat: dict[str, float] = {}

    async def acquire(self, key: str) -> float:
        now = self._clock.monotonic()
        retry_after, tat = self._gcra.decide(self._tat.get(key, now), now)
        if not retry_after:
            if len(self._tat) >= _MAX_KEYS:
                # Entries in the past carry no state (a fresh key behaves the same); drop them.
                self._tat = {k: v for k, v in self._tat.items() if v > now}
            self._tat[key] = tat
        return retry_after

    async def aclose(self) -> None:
        return None


# KEYS[1]: the client's key; ARGV: interval, tolerance (seconds). Returns "0" or the retry-after seconds.
_GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return tostring(tat - tolerance - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, gcra: Gcra, errors: Counter, prefix: str = "lkps:rl:") -> None:
        self._redis = redis
        self._gcra = gcra
        self._errors = errors
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_SCRIPT)

    async def acquire(self, key: str) -> float:
        try:
            answer = await self._script(
                keys=[self._prefix + key], args=[self._gcra.interval, self._gcra.tolerance]
            )
        except (RedisError, OSError) as exc:
            self._errors.inc()
            log.warning("rate_limit_store_unavailable", error=type(exc).__name__)
            return 0.0
        return float(answer)

    async def aclose(self) -> None:
        await self._redis.aclose()


def retry_after_header(seconds: float) -> str:
    """Whole seconds, rounded up and at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(seconds)))


def build_rate_limiter(
    per_minute: int, burst: int, redis_url: str | None, clock: Clock, registry: CollectorRegistry
) -> RateLimiter | None:
    """None when disabled (`per_minute` 0); Redis-backed when a URL is configured, else in memory."""
    if per_minute <= 0:
        return None
    gcra = Gcra(per_minute, burst)
    if redis_url is None:
        return MemoryRateLimiter(gcra, clock)
    errors = Counter(
        "lkps_rate_limit_store_errors",
        "Rate-limit checks that could not reach Redis (the request was allowed).",
        registry=registry,
    )
    redis = Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RedisRateLimiter(redis, gcra, errors)
