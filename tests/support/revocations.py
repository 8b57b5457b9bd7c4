"""An agent revocation written straight into the database, for tests of what reads it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.persistence.tables import agent_revocations


async def insert_revocation(conn: AsyncConnection, agent_app_id: str) -> None:
    """Revoke `agent_app_id` as an administrator would (by the agent itself, for brevity), now."""
    await conn.execute(
        insert(agent_revocations).values(
            agent_app_id=agent_app_id,
            revoked_at=datetime.now(UTC),
            revoked_by_object_id=agent_app_id,
            revoked_by_client_app_id=agent_app_id,
        )
    )
