"""What the admin API reads: agents with their latest registration, sessions by filter, a session's events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import msgspec
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.lifecycle import LifecycleEvent, SessionState, session_state
from gateway.persistence.revocations import Revocation
from gateway.persistence.tables import agent_registrations, agent_revocations, session_events, sessions


@dataclass(frozen=True, slots=True)
class LatestRegistration:
    id: str
    issued_at: datetime
    expires_at: datetime
    revoked: bool
    enforce_client_authz: bool
    display_name: str | None
    agent_version: str | None


@dataclass(frozen=True, slots=True)
class AgentOverview:
    agent_app_id: str
    latest: LatestRegistration | None  # None: revoked before it ever registered
    registrations: int
    revocation: Revocation | None


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """Filters of the session listing (all optional), newest first, in pages of `limit`."""

    agent_app_id: str | None = None
    client_app_id: str | None = None
    user: str | None = None  # the user id of room names, or the caller's object id
    status: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    limit: int = 50
    after: tuple[datetime, str] | None = None  # (created_at, id) of the last row of the previous page


class AdminQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def agents(self) -> list[AgentOverview]:
        """Every agent that ever registered or was revoked, by app id."""
        t = agent_registrations
        per_agent = (
            select(
                t.c.agent_app_id, func.count().label("registrations"), func.max(t.c.issued_at).label("last")
            )
            .group_by(t.c.agent_app_id)
            .subquery()
        )
        latest = select(
            t.c.agent_app_id,
            t.c.id,
            t.c.issued_at,
            t.c.expires_at,
            t.c.revoked,
            t.c.enforce_client_authz,
            t.c.display_name,
            t.c.agent_version,
            per_agent.c.registrations,
        ).join(
            per_agent, and_(t.c.agent_app_id == per_agent.c.agent_app_id, t.c.issued_at == per_agent.c.last)
        )
        async with self._engine.connect() as conn:
            registrations = (await conn.execute(latest.order_by(t.c.id))).all()
            revocations = {
                row.agent_app_id: Revocation(**row._asdict())
                for row in await conn.execute(select(agent_revocations))
            }
        overviews: dict[str, AgentOverview] = {}
        for row in registrations:
            fields = row._asdict()
            agent, count = fields.pop("agent_app_id"), fields.pop("registrations")
            # Two registrations issued in the same microsecond: either is "the latest".
            overviews.setdefault(
                agent, AgentOverview(agent, LatestRegistration(**fields), count, revocations.get(agent))
            )
        for agent, revocation in revocations.items():
            overviews.setdefault(agent, AgentOverview(agent, None, 0, revocation))
        return [overviews[agent] for agent in sorted(overviews)]

    async def sessions(self, query: SessionQuery) -> tuple[list[SessionState], bool]:
        """One page of sessions, newest first, and whether more follow."""
        s = sessions
        conditions: list[ColumnElement[bool]] = []
        if query.agent_app_id is not None:
            conditions.append(s.c.agent_app_id == query.agent_app_id)
        if query.client_app_id is not None:
            conditions.append(s.c.client_app_id == query.client_app_id)
        if query.user is not None:
            conditions.append(or_(s.c.user_id == query.user, s.c.caller_object_id == query.user))
        if query.status is not None:
            conditions.append(s.c.status == query.status)
        if query.since is not None:
            conditions.append(s.c.created_at >= query.since)
        if query.until is not None:
            conditions.append(s.c.created_at < query.until)
        if query.after is not None:
            created_at, session_id = query.after
            conditions.append(
                or_(s.c.created_at < created_at, and_(s.c.created_at == created_at, s.c.id < session_id))
            )
        statement = (
            select(s).where(*conditions).order_by(s.c.created_at.desc(), s.c.id.desc()).limit(query.limit + 1)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [session_state(row) for row in rows[: query.limit]], len(rows) > query.limit

    async def events(self, room_name: str) -> list[LifecycleEvent]:
        """The webhook events of a room in the order they happened (kept even when lkps has no session)."""
        e = session_events
        statement = (
            select(e).where(e.c.room_name == room_name).order_by(e.c.occurred_at, e.c.received_at, e.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            LifecycleEvent(**{**row._asdict(), "details": msgspec.json.decode(row.details or "{}")})
            for row in rows
        ]
