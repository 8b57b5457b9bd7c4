"""The session lifecycle: each LiveKit webhook event is stored once and folded into its session row.

Every rule only moves a session forward (issued -> active -> ended) and keeps the earliest start and
agent-join times, so events applied in any order, or more than once, leave the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, Update, and_, case, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from authz.clock import Clock, utc_now
from gateway.persistence.dialect import upsert_insert
from gateway.persistence.sessions import SessionRecord
from gateway.persistence.tables import UtcDateTime, session_events, sessions

ROOM_STARTED = "room_started"
ROOM_FINISHED = "room_finished"
PARTICIPANT_JOINED = "participant_joined"
# Departures do not end a session (LiveKit closes the room after its departure timeout and then sends
# room_finished); an agent's departure while the user stays makes the supervisor dispatch one again.
DEPARTURES = frozenset({"participant_left", "participant_connection_aborted"})
RECORDED_EVENTS = frozenset({ROOM_STARTED, PARTICIPANT_JOINED, ROOM_FINISHED} | DEPARTURES)
# Let the user's own departure (sent about when the agent's is) arrive before deciding the agent was lost.
DEPARTURE_SETTLE = timedelta(seconds=1)
AGENT_KIND = "AGENT"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One webhook event as stored; `id` is LiveKit's event id, the key that makes retries no-ops."""

    id: str
    event: str
    room_name: str
    participant_identity: str | None
    participant_kind: str | None
    occurred_at: datetime
    received_at: datetime
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionState(SessionRecord):
    """A session row: who started it, with which agent (the recorded facts), and how far its lifecycle
    has come."""

    status: str
    started_at: datetime | None
    ended_at: datetime | None
    agent_joined_at: datetime | None
    ended_by: str | None
    reopened_count: int = 0
    reopened_at: datetime | None = None
    dispatch_attempts: int = 1
    last_dispatch_at: datetime | None = None
    dispatch_exhausted_at: datetime | None = None
    user_last_joined_at: datetime | None = None
    user_last_left_at: datetime | None = None
    agent_last_joined_at: datetime | None = None
    agent_last_left_at: datetime | None = None
    end_requested: str | None = None

    @property
    def user_present(self) -> bool:
        return _later(self.user_last_joined_at, self.user_last_left_at)

    @property
    def agent_present(self) -> bool:
        return _later(self.agent_last_joined_at, self.agent_last_left_at)

    @property
    def agent_state(self) -> str:
        """joined | lost (it left, another is coming) | unavailable (no more dispatches) | waiting."""
        if self.agent_present:
            return "joined"
        if self.dispatch_exhausted_at is not None:
            return "unavailable"
        return "lost" if self.agent_joined_at is not None else "waiting"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


def _later(joined: datetime | None, left: datetime | None) -> bool:
    return joined is not None and (left is None or left < joined)


def session_state(row: Any) -> SessionState:
    return SessionState(**row._asdict())


@dataclass(frozen=True, slots=True)
class Recorded:
    new: bool  # False: an event with this id was already recorded, nothing changed
    reopened: bool  # activity in the room after its session ended: the room must be deleted again


def _earliest(column: Any, moment: datetime) -> ColumnElement[datetime]:
    value = literal(moment, UtcDateTime())
    return case((or_(column.is_(None), column > value), value), else_=column)


def _latest(column: Any, moment: datetime) -> ColumnElement[datetime]:
    value = literal(moment, UtcDateTime())
    return case((or_(column.is_(None), column < value), value), else_=column)


def _ended_before(event: LifecycleEvent) -> ColumnElement[bool]:
    """The event's session had ended before the event happened (a late delivery of earlier activity is not
    a reopening)."""
    return and_(
        sessions.c.room_name == event.room_name,
        sessions.c.status == "ended",
        sessions.c.ended_at < literal(event.occurred_at, UtcDateTime()),
    )


def _if_user(event: LifecycleEvent, column: Any, value: ColumnElement[Any]) -> ColumnElement[Any]:
    """`value` if the event's participant is the session's user, else the column unchanged."""
    return case((sessions.c.participant_identity == event.participant_identity, value), else_=column)


def _session_change(event: LifecycleEvent, join_timeout: timedelta) -> Update | None:
    """The monotonic update `event` makes to its session row, if any. The supervisor's next look is only
    ever brought forward here (it works out the exact next one itself)."""
    row = update(sessions).where(sessions.c.room_name == event.room_name)
    moment = event.occurred_at
    if event.event == ROOM_FINISHED:
        # An ended session keeps its first end (a caller's DELETE, or an earlier delivery).
        return row.where(sessions.c.status != "ended").values(
            status="ended", ended_at=moment, ended_by="webhook", next_check_at=None
        )
    if event.event == ROOM_STARTED:
        # A late room_started after room_finished fills in the start but never reopens the session.
        return row.values(
            status=case((sessions.c.status == "issued", "active"), else_=sessions.c.status),
            started_at=_earliest(sessions.c.started_at, moment),
        )
    if event.participant_kind == AGENT_KIND:
        return _agent_change(event, row)
    if event.event in DEPARTURES:
        column = sessions.c.user_last_left_at
        return row.values(user_last_left_at=_if_user(event, column, _latest(column, moment)))
    if event.event == PARTICIPANT_JOINED:
        joined, check = sessions.c.user_last_joined_at, sessions.c.next_check_at
        return row.values(
            status=case((sessions.c.status == "issued", "active"), else_=sessions.c.status),
            started_at=_earliest(sessions.c.started_at, moment),
            user_last_joined_at=_if_user(event, joined, _latest(joined, moment)),
            next_check_at=case(
                (sessions.c.status == "ended", check),
                else_=_if_user(event, check, _earliest(check, moment + join_timeout)),
            ),
        )
    return None


def _agent_change(event: LifecycleEvent, row: Update) -> Update | None:
    moment = event.occurred_at
    if event.event == PARTICIPANT_JOINED:
        return row.values(
            agent_joined_at=_earliest(sessions.c.agent_joined_at, moment),
            agent_last_joined_at=_latest(sessions.c.agent_last_joined_at, moment),
        )
    if event.event in DEPARTURES:
        return row.where(sessions.c.status != "ended").values(
            agent_last_left_at=_latest(sessions.c.agent_last_left_at, moment),
            next_check_at=_earliest(sessions.c.next_check_at, moment + DEPARTURE_SETTLE),
        )
    return None


class SessionLifecycle:
    def __init__(self, engine: AsyncEngine, clock: Clock, join_timeout_seconds: float = 20.0) -> None:
        self._engine = engine
        self._clock = clock
        self._join_timeout = timedelta(seconds=join_timeout_seconds)

    async def record(self, event: LifecycleEvent) -> Recorded:
        """Store `event` and apply it to its session (if lkps knows the room) in one transaction.

        An event with an id already recorded changes nothing (`new` False). Activity after the session
        ended is a reopening: counted once per event, and reported for every delivery, so a retried
        webhook retries deleting the room too.
        """
        async with self._engine.begin() as conn:
            stored = await conn.execute(
                upsert_insert(conn, session_events)
                .values(
                    id=event.id,
                    room_name=event.room_name,
                    event=event.event,
                    participant_identity=event.participant_identity,
                    participant_kind=event.participant_kind,
                    occurred_at=event.occurred_at,
                    received_at=event.received_at,
                    details=msgspec.json.encode(event.details).decode(),
                )
                .on_conflict_do_nothing(index_elements=[session_events.c.id])
            )
            new = stored.rowcount != 0
            reopened = False
            if event.event in {ROOM_STARTED, PARTICIPANT_JOINED}:
                reopened = await self._reopened(conn, event, count=new)
            change = _session_change(event, self._join_timeout) if new else None
            if change is not None:
                await conn.execute(change)
        return Recorded(new, reopened)

    @staticmethod
    async def _reopened(conn: AsyncConnection, event: LifecycleEvent, *, count: bool) -> bool:
        if not count:
            found = await conn.execute(select(sessions.c.room_name).where(_ended_before(event)))
            return found.first() is not None
        counted = await conn.execute(
            update(sessions)
            .where(_ended_before(event))
            .values(
                reopened_count=sessions.c.reopened_count + 1,
                reopened_at=_latest(sessions.c.reopened_at, event.occurred_at),
            )
        )
        return counted.rowcount != 0

    async def session(self, room_name: str) -> SessionState | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.room_name == room_name))).first()
        return None if row is None else session_state(row)

    async def end(self, room_name: str, ended_by: str, since: datetime | None = None) -> SessionState | None:
        """Mark the session ended now by `ended_by` (unless it already is) and return it as it then stands.

        `since` is when the one ending it began to delete the room: LiveKit's room_finished for that very
        deletion may be recorded first (as ended by `webhook`), and the end is then still `ended_by`'s."""
        now = utc_now(self._clock)
        still_open = sessions.c.status != "ended"
        if since is not None:
            still_open = or_(
                still_open,
                and_(sessions.c.ended_by == "webhook", sessions.c.ended_at >= literal(since, UtcDateTime())),
            )
        async with self._engine.begin() as conn:
            await conn.execute(
                update(sessions)
                .where(sessions.c.room_name == room_name, still_open)
                .values(
                    status="ended",
                    ended_at=case((sessions.c.status == "ended", sessions.c.ended_at), else_=now),
                    ended_by=ended_by,
                    next_check_at=None,
                )
            )
            row = (await conn.execute(select(sessions).where(sessions.c.room_name == room_name))).first()
        return None if row is None else session_state(row)
