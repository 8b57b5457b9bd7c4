"""Rate limiting of session starts (GCRA: a steady rate plus a burst), per user and per client application.

Two budgets: each user of a client application has their own (`LKPS_USER_RATE_LIMIT_*`), and all users of
one client share a ceiling above it (`LKPS_RATE_LIMIT_*`). The session starter charges the user's budget
first and the client's only for a request that is about to be served, so one user's burst, or their
requests for unknown agents, run out their own budget and never the one their colleagues share.

In memory by default (per replica); shared by all replicas through Redis when `LKPS_REDIS_URL` is set,
where one Lua script does the whole check atomically against Redis's own clock, so replicas with skewed
clocks agree, and each replica decides for the keys in use from its own copy, reconciled with Redis in the
background (see `ReconciledRateLimitStore`): no round trip on the path of a session start for them. If Redis
fails the request is allowed and the failure logged and counted: the limiter protects capacity, it is not
an access control, and an outage of it must not stop every session.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
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


# KEYS[1]: the budget's key; ARGV: interval, tolerance (seconds). Returns the retry-after seconds ("0": the
# request is charged) and the key's theoretical arrival time as seconds from Redis's now, both as strings
# (a Lua number would reach the client truncated to an integer).
_GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return {tostring(tat - tolerance - now), tostring(tat - now)} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {'0', tostring(new_tat - now)}
"""


Charge = tuple[float, float]  # (retry_after, seconds from now to the key's theoretical arrival time)


class SharedBudgets(Protocol):
    async def charge(self, items: Sequence[tuple[str, Gcra]]) -> list[Charge] | None:
        """Take one request for each (key, budget) from the budgets all replicas share, in order and in one
        round trip: per item its retry_after (0.0: charged) and the key's theoretical arrival time as seconds
        from now; None if the store did not answer."""
        ...

    async def aclose(self) -> None: ...


class RedisBudgets:
    """The shared budgets in Redis: one Lua script checks and charges atomically against Redis's own clock, so
    replicas with skewed clocks agree; several charges travel as one pipeline."""

    def __init__(self, redis: Redis, errors: Counter, prefix: str = "lkps:rl:") -> None:
        self._redis = redis
        self._errors = errors
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_SCRIPT)

    async def charge(self, items: Sequence[tuple[str, Gcra]]) -> list[Charge] | None:
        try:
            if len(items) == 1:
                ((key, gcra),) = items
                answers = [
                    await self._script(keys=[self._prefix + key], args=[gcra.interval, gcra.tolerance])
                ]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for key, gcra in items:
                    await self._script(
                        keys=[self._prefix + key], args=[gcra.interval, gcra.tolerance], client=pipe
                    )
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._errors.inc()
            log.warning("rate_limit_store_unavailable", error=type(exc).__name__, charges=len(items))
            return None
        return [(float(retry_after), float(until_tat)) for retry_after, until_tat in answers]

    async def aclose(self) -> None:
        await self._redis.aclose()


@dataclass(slots=True)
class _Copy:
    """A replica's copy of a key's state, on its monotonic clock."""

    tat: float  # theoretical arrival time
    synced_at: float  # when the shared store last answered for the key


class ReconciledRateLimitStore:
    """Decisions in microseconds from a per-replica copy of each budget, reconciled with the shared budgets.

    A key this replica has no recent answer for (none within `sync_seconds`) is charged in the shared store
    before the request is answered, so a caller who spent their budget on another replica is refused here at
    once. While answers keep coming, the replica decides from its copy and charges the shared store in the
    background; every answer brings the copy up to what all replicas spent. A single replica therefore never
    exceeds a budget, and a caller spending on several replicas at once gets at most the requests each
    replica admits for the key while its charges are in flight; each of those is counted in
    `lkps_rate_limit_reconciled_over_budget_total`. Charges go to the shared store in batches, one round trip
    each, one batch at a time: what queues while a batch travels, waited for or not, goes in the next one
    (group commit, as for session rows). At most `max_pending` charges wait or travel in the background;
    beyond that a request waits for its own. If the shared store fails, the request is allowed (see the
    module).
    """

    def __init__(
        self,
        shared: SharedBudgets,
        clock: Clock,
        over_budget: Counter,
        sync_seconds: float = 1.0,
        max_pending: int = 1024,
    ) -> None:
        self._shared = shared
        self._clock = clock
        self._over_budget = over_budget
        self._sync_seconds = sync_seconds
        self._max_pending = max_pending
        self._copies: dict[str, _Copy] = {}
        # Charges for the next batch; a future when a request waits for its answer, else None.
        self._queued: list[tuple[str, Gcra, asyncio.Future[Charge | None] | None]] = []
        self._background = 0  # charges queued or travelling that no request waits for
        self._reconciler: asyncio.Task[None] | None = None

    async def acquire(self, key: str, gcra: Gcra) -> float:
        now = self._clock.monotonic()
        copy = self._copies.get(key)
        if copy is None or now - copy.synced_at > self._sync_seconds or self._background >= self._max_pending:
            answer: asyncio.Future[Charge | None] = asyncio.get_running_loop().create_future()
            self._enqueue(key, gcra, answer)
            charged = await answer
            return 0.0 if charged is None else charged[0]
        retry_after, tat = gcra.decide(copy.tat, now)
        if retry_after:
            return retry_after
        copy.tat = tat
        self._background += 1
        self._enqueue(key, gcra, None)
        return 0.0

    async def settled(self) -> None:
        """Wait until every charge queued so far has its answer."""
        while self._reconciler is not None and not self._reconciler.done():
            await asyncio.wait({self._reconciler})

    async def aclose(self) -> None:
        await self.settled()
        await self._shared.aclose()

    def _enqueue(self, key: str, gcra: Gcra, answer: asyncio.Future[Charge | None] | None) -> None:
        self._queued.append((key, gcra, answer))
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = asyncio.ensure_future(self._reconcile())

    async def _reconcile(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            answers: list[Charge] | None = None
            try:
                answers = await self._shared.charge([(key, gcra) for key, gcra, _ in batch])
            finally:
                for index, (key, _, waiting) in enumerate(batch):
                    charged = answers[index] if answers is not None else None
                    if charged is not None:
                        self._adopt(key, charged[1])
                    if waiting is None:
                        self._background -= 1
                        if charged is not None and charged[0]:
                            self._over_budget.inc()
                    elif not waiting.done():
                        waiting.set_result(charged)

    def _adopt(self, key: str, until_tat: float) -> None:
        """Bring the copy up to the shared state (never back: admissions still in flight are in the copy)."""
        now = self._clock.monotonic()
        copy = self._copies.get(key)
        if copy is None:
            if len(self._copies) >= _MAX_KEYS:
                # A copy whose arrival time has passed carries no state the shared store lacks; drop those.
                self._copies = {k: v for k, v in self._copies.items() if v.tat > now}
            self._copies[key] = _Copy(now + until_tat, now)
            return
        copy.tat = max(copy.tat, now + until_tat)
        copy.synced_at = now


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
    over_budget = Counter(
        "lkps_rate_limit_reconciled_over_budget",
        "Requests a replica admitted from its copy of a budget that the budget shared in Redis had no room "
        "for (callers spending on several replicas at once, within one Redis round trip).",
        registry=registry,
    )
    redis = Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return ReconciledRateLimitStore(RedisBudgets(redis, errors), clock, over_budget)
