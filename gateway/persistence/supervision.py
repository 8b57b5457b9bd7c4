"""What the session supervisor reads and writes. Its state is the session row, so a restarted or another
replica carries on where one stopped.

A replica acts on a session only after claiming it: moving `next_check_at` from the value it read to a
lease in the future, which succeeds on exactly one replica. Webhooks may meanwhile bring the next check
forward; releasing the claim then keeps the earlier time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, case, insert, literal, null, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.lifecycle import DEPARTURE_SETTLE, SessionState, session_state
from gateway.persistence.tables import UtcDateTime, session_events, sessions

DISPATCH_EVENT = "lkps_agent_dispatch"
UNAVAILABLE_EVENT = "lkps_agent_unavailable"


def _moment(value: datetime) -> ColumnElement[datetime]:
    return literal(value, UtcDateTime())


def _earliest_check(value: datetime) -> ColumnElement[datetime]:
    column = sessions.c.next_check_at
    return case((or_(column.is_(None), column > _moment(value)), _moment(value)), else_=column)


class SupervisionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def due(self, now: datetime, limit: int) -> list[SessionState]:
        """Sessions whose next check has come, oldest first."""
        query = (
            select(sessions)
            .where(sessions.c.next_check_at <= _moment(now))
            .order_by(sessions.c.next_check_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [session_state(row) for row in (await conn.execute(query)).all()]

    async def claim(self, session: SessionState, lease_until: datetime) -> bool:
        """Whether this replica won the session until `lease_until` (no other replica read the same check)."""
        assert session.next_check_at is not None
        async with self._engine.begin() as conn:
            won = await conn.execute(
                update(sessions)
                .where(
                    sessions.c.room_name == session.room_name,
                    sessions.c.next_check_at == _moment(session.next_check_at),
                )
                .values(next_check_at=lease_until)
            )
        return won.rowcount == 1

    async def release(
        self, room_name: str, lease_until: datetime, next_check: datetime | None, **changes: Any
    ) -> None:
        """Set the next check (None: never) and `changes`; a check a webhook brought forward meanwhile stays."""
        await self._write(room_name, lease_until, next_check, changes, None)

    async def record_attempt(
        self,
        room_name: str,
        lease_until: datetime,
        next_check: datetime | None,
        changes: dict[str, Any],
        event: tuple[str, datetime, dict[str, Any]],
    ) -> None:
        """As `release`, with an audit event of the session in the same transaction."""
        await self._write(room_name, lease_until, next_check, changes, event)

    async def _write(
        self,
        room_name: str,
        lease_until: datetime,
        next_check: datetime | None,
        changes: dict[str, Any],
        event: tuple[str, datetime, dict[str, Any]] | None,
    ) -> None:
        column = sessions.c.next_check_at
        kept = column if next_check is None else _earliest_check(next_check)
        target = null() if next_check is None else _moment(next_check)
        follows = case((column == _moment(lease_until), target), else_=kept)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(sessions)
                .where(sessions.c.room_name == room_name)
                .values(next_check_at=follows, **changes)
            )
            if event is not None:
                name, at, details = event
                await conn.execute(
                    insert(session_events).values(
                        id=f"lkps:{uuid.uuid4()}",
                        room_name=room_name,
                        event=name,
                        participant_identity=None,
                        participant_kind=None,
                        occurred_at=at,
                        received_at=at,
                        details=msgspec.json.encode(details).decode(),
                    )
                )

    async def agent_failed(self, room_name: str, at: datetime) -> None:
        """The agent's job in the room failed: it counts as having left at `at`, so it is dispatched again as
        soon as a departure would be."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(sessions)
                .where(sessions.c.room_name == room_name, sessions.c.status != "ended")
                .values(
                    agent_last_left_at=case(
                        (
                            or_(
                                sessions.c.agent_last_left_at.is_(None),
                                sessions.c.agent_last_left_at < _moment(at),
                            ),
                            _moment(at),
                        ),
                        else_=sessions.c.agent_last_left_at,
                    ),
                    next_check_at=_earliest_check(at + DEPARTURE_SETTLE),
                )
            )

    async def request_end(self, agent_app_id: str, reason: str, at: datetime) -> int:
        """Ask the supervisor to end every open session of the agent now; returns how many."""
        async with self._engine.begin() as conn:
            marked = await conn.execute(
                update(sessions)
                .where(sessions.c.agent_app_id == agent_app_id, sessions.c.status != "ended")
                .values(end_requested=reason, next_check_at=_earliest_check(at))
            )
        return marked.rowcount
