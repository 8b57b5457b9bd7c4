"""What the worker relay reads and writes: which worker keys are in force, whose room a room is, and the
audit rows of relayed connections, jobs and security events (written in batches, see `write`)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import groupby
from typing import Any

from sqlalchemy import Executable, bindparam, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.clock import Clock, utc_now
from gateway.persistence.tables import (
    agent_registrations,
    agent_revocations,
    sessions,
    worker_connections,
    worker_jobs,
    worker_security_events,
)

t = agent_registrations


@dataclass(frozen=True, slots=True)
class WorkerKey:
    key_id: str
    agent_app_id: str
    expires_at: datetime  # when the last registration carrying the key expires


@dataclass(frozen=True, slots=True)
class OpenedConnection:
    id: str
    agent_app_id: str
    worker_key_id: str
    client_address: str | None
    replica: str
    at: datetime


@dataclass(frozen=True, slots=True)
class WorkerRegistered:
    connection_id: str
    worker_id: str  # LiveKit's, from its register answer


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    connection_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class JobAssigned:
    job_id: str
    connection_id: str
    agent_app_id: str
    room_name: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    kind: str
    agent_app_id: str
    worker_key_id: str
    connection_id: str | None
    detail: str | None
    at: datetime


AuditRecord = OpenedConnection | WorkerRegistered | ConnectionClosed | JobAssigned | SecurityEvent


class WorkerStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock

    async def keys_in_force(self, key_ids: Collection[str]) -> dict[str, WorkerKey]:
        """The keys among `key_ids` that an unexpired, unrevoked registration of an unrevoked agent carries."""
        if not key_ids:
            return {}
        query = (
            select(t.c.worker_key_id, t.c.agent_app_id, func.max(t.c.expires_at).label("expires_at"))
            .where(
                t.c.worker_key_id.in_(list(key_ids)),
                t.c.revoked.is_(False),
                t.c.expires_at > utc_now(self._clock),
                ~exists().where(agent_revocations.c.agent_app_id == t.c.agent_app_id),
            )
            .group_by(t.c.worker_key_id, t.c.agent_app_id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row.worker_key_id: WorkerKey(row.worker_key_id, row.agent_app_id, row.expires_at) for row in rows
        }

    async def key_in_force(self, key_id: str) -> WorkerKey | None:
        return (await self.keys_in_force((key_id,))).get(key_id)

    async def why_not_in_force(self, key_id: str) -> str:
        """`revoked` if the key's agent or registrations were revoked, else `expired` (a metric label)."""
        revoked = select(t.c.id).where(
            t.c.worker_key_id == key_id,
            t.c.revoked.is_(True) | exists().where(agent_revocations.c.agent_app_id == t.c.agent_app_id),
        )
        async with self._engine.connect() as conn:
            return "revoked" if await conn.scalar(select(exists(revoked))) else "expired"

    async def room_agent(self, room_name: str) -> str | None:
        """The agent a session's room was dispatched to, or None if lkps started no session in that room.
        On the relay's path, so on PostgreSQL one prepared statement straight on the driver, in autocommit:
        no BEGIN and ROLLBACK round trips and no SQLAlchemy statement machinery (half the client CPU)."""
        async with self._reader.connect() as conn:
            if self._postgres:
                raw = await conn.get_raw_connection()
                # asyncpg prepares the statement once per connection and caches it.
                found = await raw.driver_connection.fetchval(_ROOM_AGENT, room_name)  # type: ignore[union-attr]
                return None if found is None else str(found)
            agent: str | None = await conn.scalar(
                select(sessions.c.agent_app_id).where(sessions.c.room_name == room_name)
            )
            return agent

    async def write(self, records: Sequence[AuditRecord]) -> None:
        """Write audit records in order, in one transaction; a run of records of one kind is one executemany."""
        statements = _statements(self._engine.dialect.name)
        async with self._engine.begin() as conn:
            for kind, run in groupby(records, key=type):
                await conn.execute(statements[kind], [_params(record) for record in run])


# Built from the table definition (no input reaches it); the room is the one bound parameter.
_ROOM_AGENT = f"SELECT agent_app_id FROM {sessions.name} WHERE room_name = $1"  # noqa: S608


@cache
def _statements(dialect: str) -> dict[type, Executable]:
    """One statement per audit record kind, executed with each record's `_params`."""
    jobs = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(worker_jobs)
    return {
        OpenedConnection: insert(worker_connections),
        WorkerRegistered: update(worker_connections)
        .where(worker_connections.c.id == bindparam("connection_id"))
        .values(worker_id=bindparam("worker_id")),
        ConnectionClosed: update(worker_connections)
        .where(worker_connections.c.id == bindparam("connection_id"))
        .values(disconnected_at=bindparam("at"), close_reason=bindparam("reason")),
        # A job LiveKit assigns again (after a reconnect) keeps its first row.
        JobAssigned: jobs.on_conflict_do_nothing(index_elements=[worker_jobs.c.id]),
        SecurityEvent: insert(worker_security_events),
    }


def _params(record: AuditRecord) -> dict[str, Any]:
    match record:
        case OpenedConnection():
            return {
                "id": record.id,
                "agent_app_id": record.agent_app_id,
                "worker_key_id": record.worker_key_id,
                "client_address": record.client_address,
                "replica": record.replica,
                "connected_at": record.at,
            }
        case WorkerRegistered():
            return {"connection_id": record.connection_id, "worker_id": record.worker_id[:64]}
        case ConnectionClosed():
            return {"connection_id": record.connection_id, "at": record.at, "reason": record.reason[:32]}
        case JobAssigned():
            return {
                "id": record.job_id[:64],
                "connection_id": record.connection_id,
                "agent_app_id": record.agent_app_id,
                "room_name": record.room_name[:255],
                "assigned_at": record.at,
            }
        case SecurityEvent():
            return {
                "id": str(uuid.uuid4()),
                "occurred_at": record.at,
                "agent_app_id": record.agent_app_id,
                "worker_key_id": record.worker_key_id,
                "connection_id": record.connection_id,
                "kind": record.kind[:32],
                "detail": None if record.detail is None else record.detail[:128],
            }
