"""What the worker relay reads and writes: which worker keys are in force, whose room a room is, and the
audit rows of relayed connections and jobs."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.clock import Clock, utc_now
from gateway.persistence.dialect import upsert_insert
from gateway.persistence.tables import (
    agent_registrations,
    agent_revocations,
    sessions,
    worker_connections,
    worker_jobs,
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


class WorkerStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
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
        """The agent a session's room was dispatched to, or None if lkps started no session in that room."""
        async with self._engine.connect() as conn:
            agent: str | None = await conn.scalar(
                select(sessions.c.agent_app_id).where(sessions.c.room_name == room_name)
            )
            return agent

    async def connection_opened(self, opened: OpenedConnection) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(worker_connections).values(
                    id=opened.id,
                    agent_app_id=opened.agent_app_id,
                    worker_key_id=opened.worker_key_id,
                    client_address=opened.client_address,
                    replica=opened.replica,
                    connected_at=utc_now(self._clock),
                )
            )

    async def worker_registered(self, connection_id: str, worker_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(worker_connections)
                .where(worker_connections.c.id == connection_id)
                .values(worker_id=worker_id[:64])
            )

    async def connection_closed(self, connection_id: str, reason: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(worker_connections)
                .where(worker_connections.c.id == connection_id)
                .values(disconnected_at=utc_now(self._clock), close_reason=reason)
            )

    async def job_assigned(self, job_id: str, connection_id: str, agent_app_id: str, room_name: str) -> None:
        """Record a relayed job; a job LiveKit assigns again (after a reconnect) keeps its first row."""
        async with self._engine.begin() as conn:
            await conn.execute(
                upsert_insert(conn, worker_jobs)
                .values(
                    id=job_id[:64],
                    connection_id=connection_id,
                    agent_app_id=agent_app_id,
                    room_name=room_name[:255],
                    assigned_at=utc_now(self._clock),
                )
                .on_conflict_do_nothing(index_elements=[worker_jobs.c.id])
            )
