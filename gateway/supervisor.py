"""The session supervisor: brings an agent (back) into a session's room, and ends sessions that must end.

Webhooks keep each session row's picture of the room (the user's and agents' latest joins and departures)
and bring its `next_check_at` forward; every replica looks for due sessions every TICK_SECONDS, claims each
(exactly one replica wins it) and acts on what `decide` says:

- the user is in the room, no agent is, and the agent is overdue (no agent LKPS_AGENT_JOIN_TIMEOUT_SECONDS
  after the user's join or after the last dispatch, or the agent left) -> a new dispatch through LiveKit's
  AgentDispatchService, same agent and metadata, up to LKPS_AGENT_DISPATCH_ATTEMPTS dispatches in all
  (the room's own dispatch is the first); then the agent is `unavailable`;
- the session reached LKPS_MAX_SESSION_SECONDS, or its agent was revoked with `end_sessions` -> its room is
  deleted (everyone disconnected) and the session ends with that reason;
- a session that ended is never looked at again.

A failed dispatch (LiveKit unreachable or refusing) uses up its attempt like any other, and the next comes
no sooner than a join timeout later: never a tight loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from authz.clock import Clock, utc_now
from gateway.background import cancel
from gateway.livekit_rooms import AgentDispatcher, LiveKitRefused, LiveKitUnavailable, RoomControl
from gateway.observability.metrics import Metrics
from gateway.persistence.lifecycle import DEPARTURE_SETTLE, SessionLifecycle, SessionState
from gateway.persistence.supervision import DISPATCH_EVENT, UNAVAILABLE_EVENT, SupervisionStore

log = structlog.get_logger("lkps.supervisor")

TICK_SECONDS = 1.0
LEASE = timedelta(seconds=30)  # a replica that dies holding a session leaves it to others after this
END_RETRY = timedelta(seconds=5)  # LiveKit could not delete the room: try again
BATCH = 100
MAX_DURATION = "max_duration"
REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Policy:
    join_timeout: timedelta
    dispatch_attempts: int
    max_age: timedelta | None  # None: sessions have no age limit


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a due session: `end` (a reason), `dispatch` (a cause), `give_up`, or only wait until
    `next_check` (None: never look again)."""

    next_check: datetime | None
    end: str | None = None
    dispatch: str | None = None
    give_up: bool = False


def decide(session: SessionState, now: datetime, policy: Policy) -> Decision:
    """The supervisor's state machine: a pure function of the session row and the time."""
    limit = session.created_at + policy.max_age if policy.max_age is not None else None
    ending = _ending(session, now, limit)
    if ending is not None:
        return ending
    if not session.user_present or session.agent_present or session.dispatch_exhausted_at is not None:
        return Decision(limit)
    cause, overdue_at = _overdue(session, policy.join_timeout)
    if now < overdue_at:
        return Decision(overdue_at if limit is None else min(overdue_at, limit))
    if session.dispatch_attempts >= policy.dispatch_attempts:
        return Decision(limit, give_up=True)
    return Decision(now + policy.join_timeout, dispatch=cause)


def _ending(session: SessionState, now: datetime, limit: datetime | None) -> Decision | None:
    """Ended sessions are forgotten; revoked or too old ones are ended."""
    if session.status == "ended":
        return Decision(None)
    if session.end_requested:
        return Decision(None, end=session.end_requested)
    if limit is not None and now >= limit:
        return Decision(None, end=MAX_DURATION)
    return None


def _overdue(session: SessionState, join_timeout: timedelta) -> tuple[str, datetime]:
    """Why an agent is needed and from when: as soon as its departure settled if it left since the last
    dispatch, else a join timeout after the later of the user's join and the last dispatch."""
    left = session.agent_last_left_at
    last = session.last_dispatch_at
    if left is not None and (last is None or last < left):
        return "agent_lost", left + DEPARTURE_SETTLE
    assert session.user_last_joined_at is not None  # the user is present
    since = max(session.user_last_joined_at, last) if last is not None else session.user_last_joined_at
    return "join_timeout", since + join_timeout


class SessionSupervisor:
    def __init__(
        self,
        *,
        store: SupervisionStore,
        lifecycle: SessionLifecycle,
        rooms: RoomControl,
        dispatcher: AgentDispatcher,
        metrics: Metrics,
        clock: Clock,
        policy: Policy,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._rooms = rooms
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._clock = clock
        self.policy = policy
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def first_check(self, created_at: datetime) -> datetime | None:
        """When a new session is first due: at its age limit (webhooks bring it forward)."""
        return created_at + self.policy.max_age if self.policy.max_age is not None else None

    def wake(self) -> None:
        """Look for due sessions now rather than at the next tick."""
        self._wake.set()

    async def run_once(self) -> int:
        """Act on every session due now that this replica wins; returns how many it acted on."""
        now = utc_now(self._clock)
        acted = 0
        for session in await self._store.due(now, BATCH):
            lease = now + LEASE
            if await self._store.claim(session, lease):
                acted += 1
                await self._act(session, decide(session, now, self.policy), now, lease)
        return acted

    async def _act(self, session: SessionState, decision: Decision, now: datetime, lease: datetime) -> None:
        room = session.room_name
        if decision.end is not None:
            await self._end(session, decision.end, lease)
        elif decision.dispatch is not None:
            await self._dispatch(session, decision, now, lease)
        elif decision.give_up:
            self._metrics.agents_unavailable.inc()
            log.warning("agent_unavailable", room=room, agent_id=session.agent_app_id)
            await self._store.record_attempt(
                room,
                lease,
                decision.next_check,
                {"dispatch_exhausted_at": now},
                (UNAVAILABLE_EVENT, now, {"dispatch_attempts": session.dispatch_attempts}),
            )
        else:
            await self._store.release(room, lease, decision.next_check)

    async def _dispatch(
        self, session: SessionState, decision: Decision, now: datetime, lease: datetime
    ) -> None:
        attempt = session.dispatch_attempts + 1
        outcome = "created"
        try:
            await self._dispatcher.create_dispatch(
                session.room_name, session.agent_app_id, session.agent_metadata or "", session.deployment
            )
        except LiveKitUnavailable:
            outcome = "livekit_unavailable"
        except LiveKitRefused:
            outcome = "livekit_refused"
        assert decision.dispatch is not None
        self._metrics.agent_dispatches.labels(decision.dispatch, outcome).inc()
        log.info(
            "agent_dispatch",
            room=session.room_name,
            agent_id=session.agent_app_id,
            cause=decision.dispatch,
            attempt=attempt,
            outcome=outcome,
        )
        await self._store.record_attempt(
            session.room_name,
            lease,
            decision.next_check,
            {"dispatch_attempts": attempt, "last_dispatch_at": now},
            (DISPATCH_EVENT, now, {"attempt": attempt, "cause": decision.dispatch, "outcome": outcome}),
        )

    async def _end(self, session: SessionState, reason: str, lease: datetime) -> None:
        deleting_since = utc_now(self._clock)
        try:
            await self._rooms.delete_room(session.room_name)
        except (LiveKitUnavailable, LiveKitRefused) as exc:
            log.warning("session_end_failed", room=session.room_name, reason=reason, error=str(exc))
            await self._store.release(session.room_name, lease, utc_now(self._clock) + END_RETRY)
            return
        await self._lifecycle.end(session.room_name, reason, since=deleting_since)
        self._metrics.sessions_ended.labels(reason).inc()
        log.info("session_ended", room=session.room_name, reason=reason, agent_id=session.agent_app_id)

    async def observe_join(self, room_name: str, joined_at: datetime) -> None:
        """An agent joined `room_name` (a new webhook): how long after the user's join, or after the agent
        was lost, goes into the join latency histogram."""
        session = await self._lifecycle.session(room_name)
        if session is None:
            return
        lost = session.agent_last_left_at
        if lost is not None and session.agent_joined_at is not None and session.agent_joined_at < joined_at:
            after, since = "redispatch", lost
        elif session.user_last_joined_at is not None:
            after, since = "first", session.user_last_joined_at
        else:
            return
        self._metrics.agent_join_latency.labels(after).observe(max(0.0, (joined_at - since).total_seconds()))

    async def request_end(self, agent_app_id: str, reason: str) -> int:
        """End every open session of the agent within a tick, on whichever replica claims each."""
        count = await self._store.request_end(agent_app_id, reason, utc_now(self._clock))
        self.wake()
        return count

    async def agent_failed(self, room_name: str) -> None:
        await self._store.agent_failed(room_name, utc_now(self._clock))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def aclose(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("supervisor_pass_failed", error=type(exc).__name__)
            self._wake.clear()
            try:
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
