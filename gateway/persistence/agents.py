"""The agent registry: registrations are rows; "connected" means an unexpired, unrevoked registration of an
agent that an administrator has not revoked.

Session start asks `active()` on every request, so answers are cached for `agent_cache_ttl_seconds`
(default 1 s, the bound on how late another replica's revocation is seen). A change on this replica
(registration, revocation, unrevocation) drops the entry at once and, with Redis, is announced to the other
replicas, which drop theirs as soon as the announcement arrives (gateway.agent_changes). Concurrent misses
for one agent share one query; an answer read while the agent changed is not cached.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from authz.clock import Clock, utc_now
from gateway.agent_changes import AgentChanges
from gateway.persistence.tables import agent_registrations as t
from gateway.persistence.tables import agent_revocations
from gateway.relay.credentials import new_key_id

_MAX_CACHED = 10_000


class AgentRevoked(Exception):
    """The agent is revoked: it may not register (nothing is written)."""


async def lock_agent(conn: AsyncConnection, agent_app_id: str) -> None:
    """Serialize this transaction with every other registration or revocation of the agent (PostgreSQL; an
    SQLite write transaction is serialized already). Without it a registration that read the key in force
    before a revocation committed could insert it again unrevoked, and an unrevoke would bring it back."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(agent_app_id, 0))))


def _revoked(agent_app_id: str) -> ColumnElement[bool]:
    return exists().where(agent_revocations.c.agent_app_id == agent_app_id)


@dataclass(frozen=True, slots=True)
class ActiveAgent:
    agent_app_id: str
    enforce_client_authz: bool
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewRegistration:
    agent_app_id: str
    tenant_id: str
    requester_object_id: str
    enforce_client_authz: bool
    display_name: str | None
    description: str | None
    agent_version: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class Registration:
    id: str
    agent_app_id: str
    issued_at: datetime
    expires_at: datetime
    enforce_client_authz: bool
    worker_key_id: str


class AgentRegistry:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        cache_ttl_seconds: float = 1.0,
        changes: AgentChanges | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl = cache_ttl_seconds
        self._changes = changes
        self._cache: dict[str, tuple[float, ActiveAgent | None]] = {}
        self._inflight: dict[str, asyncio.Future[ActiveAgent | None]] = {}
        # Counts every forgetting: a read that ran across one may be older than the change it forgot.
        self._forgotten = 0

    async def active(self, agent_app_id: str) -> ActiveAgent | None:
        """The registration in force for this agent (the most recent active one), or None."""
        cached = self._cache.get(agent_app_id)
        if cached is not None and cached[0] > self._clock.monotonic():
            agent = cached[1]
            if agent is None or agent.expires_at > utc_now(self._clock):
                return agent
        pending = self._inflight.get(agent_app_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ActiveAgent | None] = asyncio.get_running_loop().create_future()
        self._inflight[agent_app_id] = future
        forgotten = self._forgotten
        try:
            agent = await self._load(agent_app_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            if self._inflight.get(agent_app_id) is future:
                del self._inflight[agent_app_id]
        future.set_result(agent)
        if forgotten != self._forgotten:
            return agent  # answers its own waiters, who asked before the change, but is not kept
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[agent_app_id] = (self._clock.monotonic() + self._ttl, agent)
        return agent

    async def _load(self, agent_app_id: str) -> ActiveAgent | None:
        query = (
            select(t.c.enforce_client_authz, t.c.expires_at)
            .where(
                t.c.agent_app_id == agent_app_id,
                t.c.revoked.is_(False),
                t.c.expires_at > utc_now(self._clock),
                # Also covers a registration that raced the revocation (see `register`).
                ~_revoked(agent_app_id),
            )
            .order_by(t.c.issued_at.desc())
            .limit(1)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return ActiveAgent(agent_app_id, row.enforce_client_authz, row.expires_at)

    def invalidate(self, agent_app_id: str) -> None:
        """This replica changed the agent's registry rows (committed): forget it here, tell the others."""
        self.forget(agent_app_id)
        if self._changes is not None:
            self._changes.announce(agent_app_id)

    def forget(self, agent_app_id: str | None) -> None:
        """Drop the cached answer for this agent, or for every agent (None); a read in flight answers only
        those who asked before, and whoever asks next reads anew."""
        self._forgotten += 1
        if agent_app_id is None:
            self._cache.clear()
            self._inflight.clear()
        else:
            self._cache.pop(agent_app_id, None)
            self._inflight.pop(agent_app_id, None)

    async def revoked(self, agent_app_id: str) -> bool:
        """Whether an administrator has revoked this agent (checked before an agent token is minted)."""
        async with self._engine.connect() as conn:
            return bool(await conn.scalar(select(_revoked(agent_app_id))))

    async def register(
        self, new: NewRegistration, expires_at: int, rotate_key_grace_seconds: int | None = None
    ) -> Registration:
        """Record one registration (an audit row per call) and make it the one in force until `expires_at`.

        The registration carries the worker key id of the agent's registration in force, if any (a renewal:
        the running worker's credentials stay valid), else a new one. With `rotate_key_grace_seconds` it
        gets a new key and the agent's other keys stay in force at most that much longer. Raises
        AgentRevoked, writing nothing, if the agent is revoked when the row would be inserted.
        """
        issued_at = utc_now(self._clock)
        in_force = (
            select(t.c.worker_key_id)
            .where(
                t.c.agent_app_id == new.agent_app_id,
                t.c.revoked.is_(False),
                t.c.expires_at > issued_at,
                t.c.worker_key_id.is_not(None),
            )
            .order_by(t.c.expires_at.desc())
            .limit(1)
        )
        async with self._engine.begin() as conn:
            await lock_agent(conn, new.agent_app_id)
            rotating = rotate_key_grace_seconds is not None
            key_id = (None if rotating else await conn.scalar(in_force)) or new_key_id()
            registration = await self._insert(conn, new, issued_at, expires_at, key_id)
            if rotate_key_grace_seconds is not None:
                # The other keys' registrations end with the grace period (their rows say when).
                retired_at = issued_at + timedelta(seconds=rotate_key_grace_seconds)
                await conn.execute(
                    update(t)
                    .where(
                        t.c.agent_app_id == new.agent_app_id,
                        t.c.worker_key_id != key_id,
                        t.c.expires_at > retired_at,
                    )
                    .values(expires_at=retired_at)
                )
        self.invalidate(new.agent_app_id)
        return registration

    @staticmethod
    async def _insert(
        conn: AsyncConnection, new: NewRegistration, issued_at: datetime, expires_at: int, key_id: str
    ) -> Registration:
        registration = Registration(
            id=str(uuid.uuid4()),
            agent_app_id=new.agent_app_id,
            issued_at=issued_at,
            expires_at=datetime.fromtimestamp(expires_at, UTC),
            enforce_client_authz=new.enforce_client_authz,
            worker_key_id=key_id,
        )
        values = {
            "id": registration.id,
            "agent_app_id": new.agent_app_id,
            "tenant_id": new.tenant_id,
            "requester_object_id": new.requester_object_id,
            "issued_at": issued_at,
            "expires_at": registration.expires_at,
            "revoked": False,
            "enforce_client_authz": new.enforce_client_authz,
            "display_name": new.display_name,
            "description": new.description,
            "agent_version": new.agent_version,
            "request_id": new.request_id,
            "worker_key_id": key_id,
        }
        # INSERT ... SELECT ... WHERE NOT EXISTS: the revocation check and the insert are one statement.
        row = select(*(literal(value, t.c[name].type).label(name) for name, value in values.items()))
        statement = insert(t).from_select(list(values), row.where(~_revoked(new.agent_app_id)))
        inserted = await conn.execute(statement)
        if inserted.rowcount == 0:
            raise AgentRevoked(new.agent_app_id)
        return registration
