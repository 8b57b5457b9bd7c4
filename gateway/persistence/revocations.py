"""Agent revocation by an administrator: an agent-level block plus its live registrations revoked, audited
in the same transaction.

The block is what refuses the agent from then on (registration and session start both check it); the
registrations are marked so each row tells its own story.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.clock import Clock, utc_now
from gateway.persistence.agents import lock_agent
from gateway.persistence.audit import AdminAction, audit_insert
from gateway.persistence.dialect import upsert_insert
from gateway.persistence.tables import agent_registrations, agent_revocations


@dataclass(frozen=True, slots=True)
class Revocation:
    agent_app_id: str
    revoked_at: datetime
    revoked_by_object_id: str
    revoked_by_client_app_id: str
    reason: str | None


class AgentRevocations:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def revoke(
        self, agent_app_id: str, reason: str | None, audit: AdminAction
    ) -> tuple[Revocation, int]:
        """Revoke the agent (again: the latest administrator and reason win); returns the revocation and
        how many unexpired registrations it revoked."""
        now = utc_now(self._clock)
        revocation = Revocation(agent_app_id, now, audit.actor.object_id, audit.actor.client_app_id, reason)
        fields = {
            "revoked_at": now,
            "revoked_by_object_id": revocation.revoked_by_object_id,
            "revoked_by_client_app_id": revocation.revoked_by_client_app_id,
            "reason": reason,
        }
        async with self._engine.begin() as conn:
            await lock_agent(conn, agent_app_id)
            await conn.execute(
                upsert_insert(conn, agent_revocations)
                .values(agent_app_id=agent_app_id, **fields)
                .on_conflict_do_update(index_elements=[agent_revocations.c.agent_app_id], set_=fields)
            )
            registrations = await conn.execute(
                update(agent_registrations)
                .where(
                    agent_registrations.c.agent_app_id == agent_app_id,
                    agent_registrations.c.revoked.is_(False),
                    agent_registrations.c.expires_at > now,
                )
                .values(revoked=True, revoked_at=now)
            )
            revoked = registrations.rowcount
            details = {**audit.details, "reason": reason, "registrations_revoked": revoked}
            await conn.execute(audit_insert(replace(audit, details=details), now))
        return revocation, revoked

    async def unrevoke(self, agent_app_id: str, audit: AdminAction) -> bool:
        """Lift the agent-level block (its revoked registrations stay revoked: the agent registers anew).
        Returns whether the agent was revoked."""
        now = utc_now(self._clock)
        async with self._engine.begin() as conn:
            deleted = await conn.execute(
                delete(agent_revocations).where(agent_revocations.c.agent_app_id == agent_app_id)
            )
            was_revoked = deleted.rowcount > 0
            details = {**audit.details, "was_revoked": was_revoked}
            await conn.execute(audit_insert(replace(audit, details=details), now))
        return was_revoked
