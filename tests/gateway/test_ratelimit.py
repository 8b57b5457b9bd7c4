"""Rate limiting of session starts per user and per client application: GCRA in memory and in Redis, end to
end."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from gateway.ratelimit import (
    Charge,
    Gcra,
    MemoryRateLimitStore,
    ReconciledRateLimitStore,
    RedisBudgets,
    SharedBudgets,
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


class FakeBudgets:
    """Shared budgets in memory on a fake clock (GCRA as Redis runs it), counting charges and answers; while
    holding, each round trip waits until released, as behind a slow Redis."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.round_trips = 0
        self.charges = 0
        self.answered = 0
        self.holding = False
        self._held: list[asyncio.Event] = []
        self._tat: dict[str, float] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def hold(self) -> None:
        self.holding = True

    def release(self, count: int | None = None) -> None:
        """Let the first `count` held round trips through; all of them, and every later one, if None."""
        released = self._held[: len(self._held) if count is None else count]
        del self._held[: len(released)]
        for gate in released:
            gate.set()
        if count is None:
            self.holding = False

    async def charge(self, items: Sequence[tuple[str, Gcra]]) -> list[Charge] | None:
        self.round_trips += 1
        self.charges += len(items)
        if self.holding:
            gate = asyncio.Event()
            self._held.append(gate)
            await gate.wait()
        answers = []
        now = self.clock.monotonic()
        for key, gcra in items:
            retry_after, tat = gcra.decide(self._tat.get(key, now), now)
            if not retry_after:
                self._tat[key] = tat
            answers.append((retry_after, max(self._tat.get(key, now), now) - now))
        self.answered += len(items)
        return answers

    async def aclose(self) -> None:
        return None


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run (no time passes) until `condition` holds."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


async def from_the_copy(limiter: ReconciledRateLimitStore, gcra: Gcra) -> float:
    """The limiter's answer for "client", which must come without waiting for the shared store."""
    decided = asyncio.ensure_future(limiter.acquire("client", gcra))
    await asyncio.sleep(0)  # one turn of the event loop: enough for a request that awaits nothing
    assert decided.done(), "the request waited for the shared store"
    return decided.result()


def reconciled(shared: SharedBudgets, clock: FakeClock, **limits: int) -> ReconciledRateLimitStore:
    return ReconciledRateLimitStore(shared, clock, _counter(CollectorRegistry(), "over"), **limits)


def replica(**limits: int) -> tuple[FakeBudgets, ReconciledRateLimitStore]:
    """A replica's limiter over fake shared budgets, both on one fake clock (`shared.clock`)."""
    shared = FakeBudgets(FakeClock())
    return shared, reconciled(shared, shared.clock, **limits)


async def holding_answers(gcra: Gcra) -> tuple[FakeBudgets, ReconciledRateLimitStore]:
    """A replica whose first request for "client" was charged in the shared store, which now holds its
    answers: the next requests are decided from the replica's copy."""
    shared, limiter = replica()
    assert await limiter.acquire("client", gcra) == 0.0
    shared.hold()
    return shared, limiter


class TestReconciled:
    async def test_a_key_in_use_is_decided_without_waiting_for_the_shared_store(self) -> None:
        """The first request for a key waits for the shared store; while its answers are recent, the next ones
        are answered from the replica's copy, the charge following in the background."""
        gcra = Gcra(per_minute=60, burst=5)
        shared, limiter = await holding_answers(gcra)
        assert await from_the_copy(limiter, gcra) == 0.0
        await until(lambda: shared.charges == 2, "its charge sent in the background")
        shared.release()
        await limiter.settled()

    async def test_a_replica_counts_its_own_admissions_before_the_shared_store_answers(self) -> None:
        """Admissions from the copy are charged to the copy at once: with every charge still in flight, the
        replica refuses where the budget ends."""
        gcra = Gcra(per_minute=60, burst=1)
        shared, limiter = await holding_answers(gcra)
        assert await from_the_copy(limiter, gcra) == 0.0
        assert await from_the_copy(limiter, gcra) > 0
        shared.release()
        await limiter.settled()

    async def test_an_answer_never_takes_back_admissions_still_in_flight(self) -> None:
        """An answer that predates this replica's later admissions (their charges still in flight) does not
        roll the copy back, so that part of the budget is not handed out twice."""
        gcra = Gcra(per_minute=60, burst=2)
        shared, limiter = await holding_answers(gcra)
        assert await from_the_copy(limiter, gcra) == 0.0
        await until(lambda: shared.held == 1, "its charge on the way")
        assert await from_the_copy(limiter, gcra) == 0.0  # charged in the next round trip
        shared.release(1)
        await until(lambda: shared.answered == 2, "the first charge answered")
        assert await from_the_copy(limiter, gcra) > 0
        shared.release()
        await limiter.settled()

    async def test_without_a_recent_answer_the_request_waits_for_the_shared_store(self) -> None:
        """A copy whose last answer is over a second old is not trusted: the request is charged first."""
        shared, limiter = replica()
        gcra = Gcra(per_minute=60, burst=5)
        await limiter.acquire("client", gcra)
        shared.clock.advance(1.1)
        shared.hold()
        waiting = asyncio.ensure_future(limiter.acquire("client", gcra))
        await asyncio.sleep(0)
        assert not waiting.done()
        shared.release()
        assert await waiting == 0.0

    async def test_answers_keep_a_key_in_use_decided_from_the_copy(self) -> None:
        """Each answer renews the copy: a key used more often than once a second keeps being decided without
        waiting for the shared store."""
        shared, limiter = replica()
        gcra = Gcra(per_minute=600, burst=10)
        await limiter.acquire("client", gcra)
        for _ in range(3):
            shared.clock.advance(0.6)
            await limiter.acquire("client", gcra)
            await limiter.settled()
        shared.hold()
        assert await from_the_copy(limiter, gcra) == 0.0
        shared.release()
        await limiter.settled()

    async def test_a_refusal_is_answered_from_the_copy(self) -> None:
        """Once the shared store refused a key, the replica refuses it from its copy, without a charge."""
        shared, limiter = replica()
        gcra = Gcra(per_minute=60, burst=1)
        assert [await limiter.acquire("client", gcra) for _ in range(2)] == [0.0, 0.0]
        await limiter.settled()
        charges = shared.charges
        assert await from_the_copy(limiter, gcra) == pytest.approx(1.0, abs=1e-5)
        assert await from_the_copy(limiter, gcra) > 0
        assert shared.charges == charges

    async def test_requests_waiting_at_once_share_one_round_trip(self) -> None:
        """Charges queued while a round trip travels go together in the next one, waited for or not, and each
        request gets its own answer."""
        shared, limiter = replica()
        gcra = Gcra(per_minute=60, burst=0)
        await limiter.acquire("busy", gcra)
        shared.hold()
        first = asyncio.ensure_future(limiter.acquire("first", gcra))
        await until(lambda: shared.held == 1, "the first round trip travelling")
        waiting = [asyncio.ensure_future(limiter.acquire(key, gcra)) for key in ("a", "b", "a")]
        await asyncio.sleep(0)
        shared.release()
        assert await first == 0.0
        assert [await answer for answer in waiting] == [0.0, 0.0, pytest.approx(1.0, abs=1e-5)]
        assert (shared.round_trips, shared.charges) == (3, 5)

    async def test_background_charges_are_bounded(self) -> None:
        """With `max_pending` charges in the background, a request waits for its own charge instead of adding
        one; once they are answered, requests are decided from the copy again."""
        shared, limiter = replica(max_pending=2)
        gcra = Gcra(per_minute=600, burst=10)
        await limiter.acquire("client", gcra)
        shared.hold()
        for _ in range(2):
            assert await from_the_copy(limiter, gcra) == 0.0
        waiting = asyncio.ensure_future(limiter.acquire("client", gcra))
        await asyncio.sleep(0)
        assert not waiting.done()
        shared.release()
        assert await waiting == 0.0
        await limiter.settled()
        assert await from_the_copy(limiter, gcra) == 0.0  # answered charges no longer count
        await limiter.settled()


@pytest.fixture
def redis_url() -> str:
    """The real Redis server named by LKPS_TEST_REDIS_URL (CI sets it; `scripts/test` finds a local one)."""
    skip_unless_available("redis")
    assert REDIS_URL is not None
    return REDIS_URL


class TestRedis:
    async def test_a_budget_spent_on_one_replica_is_refused_on_the_other_at_once(
        self, redis_url: str
    ) -> None:
        """Two replicas on one Redis share a client's budget: the other replica's first request for it is
        checked against Redis, so a budget spent elsewhere is refused there at once; other clients are not."""
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        gcra, clock = Gcra(per_minute=60, burst=1), FakeClock()
        first = reconciled(
            RedisBudgets(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix), clock
        )
        second = reconciled(
            RedisBudgets(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix), clock
        )
        try:
            assert [await first.acquire("client", gcra) for _ in range(2)] == [0.0, 0.0]
            await first.settled()
            wait = await second.acquire("client", gcra)
            assert 0 < wait <= 1.0
            assert await second.acquire("other-client", gcra) == 0.0
        finally:
            await first.aclose()
            await second.aclose()

    async def test_replicas_spending_at_once_exceed_the_budget_by_what_their_copies_lag(
        self, redis_url: str
    ) -> None:
        """Two replicas taking turns on one key admit the shared budget plus the requests their copies had not
        yet seen the other spend (here one), count each of those, and then both refuse."""
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        gcra, clock = Gcra(per_minute=6, burst=3), FakeClock()  # four at once, then one per 10 s
        registry = CollectorRegistry()
        over = _counter(registry, "over")
        replicas = [
            ReconciledRateLimitStore(
                RedisBudgets(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix), clock, over
            )
            for _ in range(2)
        ]
        try:
            admitted = 0
            for turn in range(8):
                if await replicas[turn % 2].acquire("client", gcra) == 0.0:
                    admitted += 1
                for replica in replicas:
                    await replica.settled()
            assert admitted == 5
            assert registry.get_sample_value("over_total") == 1.0
        finally:
            for replica in replicas:
                await replica.aclose()

    async def test_charges_in_one_round_trip_are_answered_in_order(self, redis_url: str) -> None:
        """Several charges travel as one pipeline (the script loaded by it if Redis has forgotten it), each
        answered as if sent alone, in order."""
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        budgets = RedisBudgets(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix)
        probe = Redis.from_url(redis_url)
        gcra = Gcra(60, 1)  # two at once, then one a second
        try:
            await probe.script_flush()
            answers = await budgets.charge([("a", gcra), ("a", gcra), ("b", gcra), ("a", gcra)])
            assert answers == [
                (0.0, pytest.approx(1.0, abs=0.01)),
                (0.0, pytest.approx(2.0, abs=0.01)),
                (0.0, pytest.approx(1.0, abs=0.01)),
                (pytest.approx(1.0, abs=0.01), pytest.approx(2.0, abs=0.01)),
            ]
        finally:
            await budgets.aclose()
            await probe.aclose()

    async def test_keys_expire_with_their_state(self, redis_url: str) -> None:
        """A client's key carries a TTL, so idle clients leave nothing behind in Redis."""
        prefix = f"lkps-test:{uuid.uuid4().hex}:"
        budgets = RedisBudgets(Redis.from_url(redis_url), _errors(CollectorRegistry()), prefix)
        probe = Redis.from_url(redis_url)
        try:
            assert await budgets.charge([("client", Gcra(60, 1))]) == [(0.0, pytest.approx(1.0, abs=0.01))]
            ttl = await probe.pttl(prefix + "client")
            assert 0 < ttl <= 3000
        finally:
            await budgets.aclose()
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


def _counter(registry: CollectorRegistry, name: str) -> Counter:
    return Counter(name, "test", registry=registry)


def _errors(registry: CollectorRegistry) -> Counter:
    return _counter(registry, "lkps_rate_limit_store_errors")


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
