"""Rate limiting of session starts (GCRA: a steady rate plus a burst), per user and per client application.

Two budgets: each user of a client application has their own (`LKPS_USER_RATE_LIMIT_*`), and all users of
one client share a ceiling above it (`LKPS_RATE_LIMIT_*`). The session starter charges the user's budget
first and the client's only for a request that is about to be served, so one user's burst, or their
requests for unknown agents, run out their own budget and never the one their colleagues share.

In memory by default (per replica); shared by all replicas through Redis when `LKPS_REDIS_URL` is set,
where one Lua script does the whole check atomically against Redis's own clock, so replicas with skewed
clocks agree. If Redis fails the request is allowed and the failure logged and counted: the limiter
protects capacity, it is not an access control, and an outage of it must not stop every session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from authz.caller import Caller, CallerKind
from authz.clock import Clock
from config import Settings

log = structlog.get_logger("lkps.ratelimit")
_MAX_KEYS = 100_000


class RateLimitStore(Protocol):
    async def acquire(self, key: str, gcra: Gcra) -> float:
        """Take one request for `key` under `gcra`: 0.0 if allowed, else the seconds until one would be."""
        ...

    async def aclose(self) -> None: ...


class Gcra:
    """The arithmetic of the generic cell rate algorithm, shared by both stores."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.interval = 60.0 / per_minute  # seconds between requests at the steady rate
        # How far ahead of the steady rate a caller may run; plus a microsecond, because at epoch-sized
        # clocks (Redis's TIME) `burst` float intervals add up to a hair more than `interval * burst`, and
        # the last request of a burst would be refused.
        self.tolerance = self.interval * burst + 1e-6

    def decide(self, tat: float, now: float) -> tuple[float, float]:
        """(retry_after, new theoretical arrival time) for a request at `now` given the stored `tat`."""
        tat = max(tat, now)
        if tat - now > self.tolerance:
            return tat - self.tolerance - now, tat
        return 0.0, tat + self.interval


class MemoryRateLimitStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}

    async def acquire(self, key: str, gcra: Gcra) -> float:
        now = self._clock.monotonic()
        retry_after, tat = gcra.decide(self._tat.get(key, now), now)
        if not retry_after:
            if len(self._tat) >= _MAX_KEYS:
                # Entries in the past carry no state (a fresh key behaves the same); drop them.
                self._tat = {k: v for k, v in self._tat.items() if v > now}
            self._tat[key] = tat
        return retry_after

    async def aclose(self) -> None:
        return None


# KEYS[1]: the budget's key; ARGV: interval, tolerance (seconds). Returns "0" or the retry-after seconds.
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


class RedisRateLimitStore:
    def __init__(self, redis: Redis, errors: Counter, prefix: str = "lkps:rl:") -> None:
        self._redis = redis
        self._errors = errors
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_SCRIPT)

    async def acquire(self, key: str, gcra: Gcra) -> float:
        try:
            answer = await self._script(keys=[self._prefix + key], args=[gcra.interval, gcra.tolerance])
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


@dataclass(frozen=True, slots=True)
class SessionRateLimits:
    """The two budgets of session starts; a None budget is off (its rate is 0)."""

    store: RateLimitStore
    per_user: Gcra | None
    per_client: Gcra | None

    async def user_wait(self, caller: Caller) -> float:
        """Charge the user's own budget with this client (app-only callers: none, the client's is theirs)."""
        if self.per_user is None or caller.kind is not CallerKind.USER:
            return 0.0
        return await self.store.acquire(f"u:{caller.client_app_id}:{caller.object_id}", self.per_user)

    async def client_wait(self, caller: Caller) -> float:
        """Charge the budget all callers of this client application share."""
        if self.per_client is None:
            return 0.0
        return await self.store.acquire(f"c:{caller.client_app_id}", self.per_client)

    async def aclose(self) -> None:
        await self.store.aclose()


def build_rate_limits(
    settings: Settings, clock: Clock, registry: CollectorRegistry
) -> SessionRateLimits | None:
    """None when both budgets are off; Redis-backed when a URL is configured, else in memory."""
    per_user = _gcra(settings.user_rate_limit_per_minute, settings.user_rate_limit_burst)
    per_client = _gcra(settings.rate_limit_per_minute, settings.rate_limit_burst)
    if per_user is None and per_client is None:
        return None
    return SessionRateLimits(_store(settings.redis_url, clock, registry), per_user, per_client)


def _gcra(per_minute: int, burst: int) -> Gcra | None:
    return Gcra(per_minute, burst) if per_minute > 0 else None


def _store(redis_url: str | None, clock: Clock, registry: CollectorRegistry) -> RateLimitStore:
    if redis_url is None:
        return MemoryRateLimitStore(clock)
    errors = Counter(
        "lkps_rate_limit_store_errors",
        "Rate-limit checks that could not reach Redis (the request was allowed).",
        registry=registry,
    )
    redis = Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return RedisRateLimitStore(redis, errors)
