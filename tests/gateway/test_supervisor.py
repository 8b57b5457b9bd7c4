"""The session supervisor's state machine, driven by webhook events and a hand-moved clock, on a real database
with fakes of LiveKit's dispatch and room APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.persistence.db import create_engine
from gateway.persistence.lifecycle import LifecycleEvent, SessionLifecycle, SessionState
from gateway.persistence.supervision import SupervisionStore
from gateway.persistence.tables import session_events
from gateway.supervisor import LEASE, Decision, Policy, SessionSupervisor, decide
from tests.support.clock import FakeClock
from tests.support.sessions import AGENT, insert_sessions, session_row
from tests.support.supervision import FakeDispatcher, FakeRooms

pytestmark = pytest.mark.anyio
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
JOIN_TIMEOUT = timedelta(seconds=20)
POLICY = Policy(join_timeout=JOIN_TIMEOUT, dispatch_attempts=3, max_age=timedelta(hours=4))
USER = "ADA0001"


@dataclass
class Harness:
    engine: AsyncEngine
    clock: FakeClock
    lifecycle: SessionLifecycle
    dispatcher: FakeDispatcher
    rooms: FakeRooms
    metrics: Metrics

    def supervisor(self, policy: Policy = POLICY) -> SessionSupervisor:
        """A supervisor as a replica (or a restarted process) builds it: nothing but the database shared."""
        return SessionSupervisor(
            store=SupervisionStore(self.engine),
            lifecycle=self.lifecycle,
            rooms=self.rooms,
            dispatcher=self.dispatcher,
            metrics=self.metrics,
            clock=self.clock,
            policy=policy,
        )

    async def session(self, room: str, policy: Policy = POLICY, deployment: str = "") -> None:
        await insert_sessions(
            self.engine,
            session_row(
                room,
                created_at=T0,
                agent_metadata='{"language":"en"}',
                deployment=deployment,
                next_check_at=self.supervisor(policy).first_check(T0),
            ),
        )

    async def webhook(
        self, event: str, room: str, identity: str, kind: str, event_id: str = "", at: datetime | None = None
    ) -> bool:
        """LiveKit reports `event` (which happened `at`, default now); whether it was new."""
        at = at or datetime.fromtimestamp(self.clock.now(), UTC)
        recorded = await self.lifecycle.record(
            LifecycleEvent(
                id=event_id or f"EV_{event}_{identity}_{at.timestamp()}",
                event=event,
                room_name=room,
                participant_identity=identity,
                participant_kind=kind,
                occurred_at=at,
                received_at=at,
                details={},
            )
        )
        return recorded.new

    async def state(self, room: str) -> SessionState:
        session = await self.lifecycle.session(room)
        assert session is not None
        return session

    async def dispatch_events(self, room: str) -> list[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(session_events.c.event)
                .where(session_events.c.room_name == room, session_events.c.event.like("lkps_%"))
                .order_by(session_events.c.occurred_at)
            )
            return [row.event for row in rows]


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    engine = create_engine(database_url, pool_size=2)
    clock = FakeClock(T0.timestamp())
    yield Harness(
        engine,
        clock,
        SessionLifecycle(engine, clock, JOIN_TIMEOUT.total_seconds()),
        FakeDispatcher(),
        FakeRooms(),
        Metrics(),
    )
    await engine.dispose()


def row(**changes: object) -> SessionState:
    """A session row whose user joined at T0 and whose agent never came."""
    base = SessionState(
        **session_row("room", created_at=T0, agent_metadata="{}", next_check_at=None),
        status="active",
        started_at=T0,
        ended_at=None,
        agent_joined_at=None,
        ended_by=None,
        user_last_joined_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class TestDecide:
    def test_before_the_join_timeout_it_waits_for_it(self) -> None:
        """A user alone in the room for less than the join timeout: look again when it runs out."""
        assert decide(row(), T0 + timedelta(seconds=5), POLICY) == Decision(T0 + JOIN_TIMEOUT)

    def test_after_the_join_timeout_it_dispatches(self) -> None:
        """A user alone in the room for the join timeout: dispatch, and look again a join timeout later."""
        now = T0 + JOIN_TIMEOUT
        assert decide(row(), now, POLICY) == Decision(now + JOIN_TIMEOUT, dispatch="join_timeout")

    def test_an_agent_that_left_is_replaced_at_once(self) -> None:
        """The agent left while the user stays: dispatch once its departure settled (a second), whatever the
        join timeout."""
        left = T0 + timedelta(minutes=5)
        session = row(agent_joined_at=T0, agent_last_joined_at=T0, agent_last_left_at=left)
        assert decide(session, left, POLICY) == Decision(left + timedelta(seconds=1))
        assert decide(session, left + timedelta(seconds=1), POLICY).dispatch == "agent_lost"
        assert session.agent_state == "lost"

    def test_a_dispatch_after_the_departure_gets_its_join_timeout(self) -> None:
        """Once dispatched after the agent left, the next dispatch waits for that dispatch's join timeout."""
        left = T0 + timedelta(minutes=5)
        session = row(
            agent_joined_at=T0, agent_last_joined_at=T0, agent_last_left_at=left, last_dispatch_at=left
        )
        assert decide(session, left + timedelta(seconds=1), POLICY) == Decision(left + JOIN_TIMEOUT)

    def test_the_last_attempt_gives_up(self) -> None:
        """With every dispatch used, the agent is given up on (unavailable) and only the age limit remains."""
        decision = decide(row(dispatch_attempts=3, last_dispatch_at=T0), T0 + JOIN_TIMEOUT, POLICY)
        assert decision == Decision(T0 + timedelta(hours=4), give_up=True)
        assert row(dispatch_exhausted_at=T0).agent_state == "unavailable"

    def test_nobody_waits_for_an_agent_without_a_user_or_with_an_agent(self) -> None:
        """No user in the room, or an agent in it: nothing to do until the age limit."""
        limit = T0 + timedelta(hours=4)
        late = T0 + timedelta(hours=1)
        assert decide(row(user_last_left_at=T0 + timedelta(seconds=1)), late, POLICY) == Decision(limit)
        present = row(agent_joined_at=T0, agent_last_joined_at=T0)
        assert decide(present, late, POLICY) == Decision(limit)
        assert present.agent_state == "joined"

    def test_sessions_end_at_their_age_limit_or_when_revoked(self) -> None:
        """The age limit ends the session (max_duration); a revocation with end_sessions ends it at once."""
        assert decide(row(), T0 + timedelta(hours=4), POLICY) == Decision(None, end="max_duration")
        assert decide(row(end_requested="revoked"), T0, POLICY) == Decision(None, end="revoked")
        unlimited = replace(POLICY, max_age=None)
        agent_in_room = row(agent_last_joined_at=T0)
        assert decide(agent_in_room, T0 + timedelta(days=30), unlimited) == Decision(None)

    def test_an_ended_session_is_forgotten(self) -> None:
        """An ended session is never dispatched to nor ended again, and never looked at again."""
        assert decide(row(status="ended", end_requested="revoked"), T0 + JOIN_TIMEOUT, POLICY) == Decision(
            None
        )


async def test_an_agent_that_never_comes_is_dispatched_twice_then_unavailable(harness: Harness) -> None:
    """A user alone: a dispatch (same agent and metadata) a join timeout after the join, another one a join
    timeout later, then the agent is unavailable and nothing more is dispatched."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    supervisor = harness.supervisor()
    harness.clock.advance(19)
    await supervisor.run_once()
    assert harness.dispatcher.dispatches == []
    harness.clock.advance(1)
    await supervisor.run_once()
    assert harness.dispatcher.dispatches == [("room-a", AGENT, '{"language":"en"}', "")]
    for _ in range(3):
        harness.clock.advance(20)
        await supervisor.run_once()
    assert len(harness.dispatcher.dispatches) == 2
    state = await harness.state("room-a")
    assert (state.agent_state, state.dispatch_attempts) == ("unavailable", 3)
    assert await harness.dispatch_events("room-a") == [
        "lkps_agent_dispatch",
        "lkps_agent_dispatch",
        "lkps_agent_unavailable",
    ]


async def test_a_dispatch_goes_to_the_sessions_deployment(harness: Harness) -> None:
    """A session started for the agent's `staging` deployment is dispatched again to `staging`, never to the
    default deployment's workers."""
    await harness.session("room-s", deployment="staging")
    await harness.webhook("participant_joined", "room-s", USER, "STANDARD")
    harness.clock.advance(20)
    await harness.supervisor().run_once()
    assert harness.dispatcher.dispatches == [("room-s", AGENT, '{"language":"en"}', "staging")]


async def test_an_agent_lost_mid_call_is_dispatched_again_once(harness: Harness) -> None:
    """The agent leaves while the user stays: one dispatch about a second later (its departure settled),
    none while the new agent is on its way, and the owner sees the agent joined again."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    await harness.webhook("participant_joined", "room-a", "agent-1", "AGENT")
    supervisor = harness.supervisor()
    harness.clock.advance(60)
    await harness.webhook("participant_left", "room-a", "agent-1", "AGENT")
    await supervisor.run_once()
    assert harness.dispatcher.dispatches == []
    assert (await harness.state("room-a")).agent_state == "lost"
    harness.clock.advance(1)
    await supervisor.run_once()
    harness.clock.advance(5)
    await supervisor.run_once()
    assert len(harness.dispatcher.dispatches) == 1
    await harness.webhook("participant_joined", "room-a", "agent-2", "AGENT")
    harness.clock.advance(60)
    await supervisor.run_once()
    state = await harness.state("room-a")
    assert (state.agent_state, state.dispatch_attempts) == ("joined", 2)


async def test_the_user_leaving_first_means_no_dispatch(harness: Harness) -> None:
    """The user left, then the agent did (the end of a call): nothing is dispatched."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    await harness.webhook("participant_joined", "room-a", "agent-1", "AGENT")
    harness.clock.advance(60)
    await harness.webhook("participant_left", "room-a", USER, "STANDARD")
    await harness.webhook("participant_left", "room-a", "agent-1", "AGENT")
    harness.clock.advance(120)
    await harness.supervisor().run_once()
    assert harness.dispatcher.dispatches == []


async def test_replayed_and_reordered_webhooks_change_nothing_twice(harness: Harness) -> None:
    """The agent's departure delivered twice, and its join delivered after it: still exactly one dispatch."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    harness.clock.advance(30)
    left_at = datetime.fromtimestamp(harness.clock.now(), UTC)
    assert await harness.webhook("participant_left", "room-a", "agent-1", "AGENT", event_id="EV_left")
    assert not await harness.webhook("participant_left", "room-a", "agent-1", "AGENT", event_id="EV_left")
    harness.clock.advance(1)
    supervisor = harness.supervisor()
    await supervisor.run_once()
    # The join the departure followed arrives late (it happened before the departure).
    joined_at = left_at - timedelta(seconds=10)
    await harness.webhook("participant_joined", "room-a", "agent-1", "AGENT", at=joined_at)
    harness.clock.advance(1)
    assert not await harness.webhook("participant_left", "room-a", "agent-1", "AGENT", event_id="EV_left")
    await supervisor.run_once()
    assert len(harness.dispatcher.dispatches) == 1


async def test_livekit_unreachable_uses_up_attempts_without_a_tight_loop(harness: Harness) -> None:
    """Dispatches that fail (LiveKit unreachable) count as attempts, and the next one waits a join timeout:
    running the supervisor again at once dispatches nothing more."""
    harness.dispatcher.unavailable = True
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    supervisor = harness.supervisor()
    harness.clock.advance(20)
    for _ in range(10):
        await supervisor.run_once()
    assert len(harness.dispatcher.dispatches) == 1
    harness.clock.advance(20)
    await supervisor.run_once()
    harness.clock.advance(20)
    await supervisor.run_once()
    assert len(harness.dispatcher.dispatches) == 2
    assert (await harness.state("room-a")).agent_state == "unavailable"
    outcomes = harness.metrics.agent_dispatches.labels("join_timeout", "livekit_unavailable")
    assert outcomes._value.get() == 2


async def test_two_replicas_make_one_dispatch_per_need(harness: Harness) -> None:
    """Two supervisors (two replicas) on one database looking at the same due session: one dispatch."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    harness.clock.advance(20)
    first, second = harness.supervisor(), harness.supervisor()
    acted = [await first.run_once(), await second.run_once()]
    assert sorted(acted) == [0, 1]
    assert len(harness.dispatcher.dispatches) == 1


async def test_a_replica_that_died_holding_a_session_leaves_it_to_another(harness: Harness) -> None:
    """A claimed session whose replica never released it becomes due again after the lease."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    harness.clock.advance(20)
    store = SupervisionStore(harness.engine)
    (due,) = await store.due(datetime.fromtimestamp(harness.clock.now(), UTC), 10)
    assert await store.claim(due, datetime.fromtimestamp(harness.clock.now(), UTC) + LEASE)  # then "dies"
    survivor = harness.supervisor()
    assert await survivor.run_once() == 0
    harness.clock.advance(LEASE.total_seconds())
    assert await survivor.run_once() == 1
    assert len(harness.dispatcher.dispatches) == 1


async def test_an_ended_session_is_never_dispatched_to(harness: Harness) -> None:
    """A session its owner ended is left alone, however long the user seemed to be waiting."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    await harness.lifecycle.end("room-a", "caller")
    harness.clock.advance(3600)
    await harness.supervisor().run_once()
    assert harness.dispatcher.dispatches == []
    assert harness.rooms.deleted == []


async def test_the_age_limit_deletes_the_room_and_ends_the_session(harness: Harness) -> None:
    """At its age limit the session's room is deleted and the session ends with max_duration; when LiveKit
    cannot be reached the session stays open and is tried again shortly."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    await harness.webhook("participant_joined", "room-a", "agent-1", "AGENT")
    supervisor = harness.supervisor()
    harness.clock.advance(4 * 3600)
    harness.rooms.unavailable = True
    await supervisor.run_once()
    assert (await harness.state("room-a")).status == "active"
    harness.rooms.unavailable = False
    await supervisor.run_once()
    assert harness.rooms.deleted == []  # not before the retry delay
    harness.clock.advance(5)
    await supervisor.run_once()
    assert harness.rooms.deleted == ["room-a"]
    state = await harness.state("room-a")
    assert (state.status, state.ended_by, state.next_check_at) == ("ended", "max_duration", None)


async def test_no_age_limit_when_it_is_off(harness: Harness) -> None:
    """With LKPS_MAX_SESSION_SECONDS=0 a session is never looked at for its age."""
    unlimited = replace(POLICY, max_age=None)
    await harness.session("room-a", unlimited)
    assert (await harness.state("room-a")).next_check_at is None


async def test_revocation_with_end_sessions_ends_every_open_session_of_the_agent(harness: Harness) -> None:
    """`request_end` marks the agent's open sessions; the next pass deletes their rooms and ends them with
    `revoked`, leaving ended sessions as they were."""
    await harness.session("room-a")
    await harness.session("room-b")
    await harness.lifecycle.end("room-b", "caller")
    supervisor = harness.supervisor()
    assert await supervisor.request_end(AGENT, "revoked") == 1
    await supervisor.run_once()
    assert harness.rooms.deleted == ["room-a"]
    assert (await harness.state("room-a")).ended_by == "revoked"
    assert (await harness.state("room-b")).ended_by == "caller"


async def test_a_failed_job_counts_as_the_agent_leaving(harness: Harness) -> None:
    """The relay reports the agent's job failed: the session is dispatched to as soon as after a departure,
    long before the join timeout."""
    await harness.session("room-a")
    await harness.webhook("participant_joined", "room-a", USER, "STANDARD")
    harness.clock.advance(2)
    supervisor = harness.supervisor()
    await supervisor.agent_failed("room-a")
    harness.clock.advance(1)
    await supervisor.run_once()
    assert [d[0] for d in harness.dispatcher.dispatches] == ["room-a"]
