"""The admin audit trail: one `admin_actions` row per admin API call (who, what, on what, when)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Insert, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.caller import Caller
from gateway.persistence.tables import admin_actions


@dataclass(frozen=True, slots=True)
class AdminAction:
    actor: Caller
    action: str  # list_agents, list_sessions, get_session, end_session, revoke_agent, unrevoke_agent
    target: str  # an agent app id, a room name, or the collection listed
    request_id: str
    details: dict[str, Any] = field(default_factory=dict)


def audit_insert(entry: AdminAction, at: datetime) -> Insert:
    """The row for `entry`, to execute inside the transaction of the action it records."""
    return insert(admin_actions).values(
        id=str(uuid.uuid4()),
        actor_tenant_id=entry.actor.tenant_id,
        actor_object_id=entry.actor.object_id,
        actor_client_app_id=entry.actor.client_app_id,
        action=entry.action,
        target=entry.target[:255],
        at=at,
        request_id=entry.request_id,
        details=msgspec.json.encode(entry.details).decode() if entry.details else None,
    )


async def record(engine: AsyncEngine, entry: AdminAction, at: datetime) -> None:
    """Audit an action that has no transaction of its own (reads, and ending a session through LiveKit)."""
    async with engine.begin() as conn:
        await conn.execute(audit_insert(entry, at))
