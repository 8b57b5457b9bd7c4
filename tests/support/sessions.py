"""Session rows written straight into the database, for tests of what reads and changes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.tables import sessions
from tests.support.entra import SPA_CLIENT_ID, TENANT_ID, USER_OID

AGENT = "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"


def session_row(room: str, created_at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    """A session as session start writes it (status issued), created at `created_at` (default now)."""
    created = created_at or datetime.now(UTC)
    return {
        "id": str(uuid.uuid4()),
        "room_name": room,
        "agent_app_id": AGENT,
        "tenant_id": TENANT_ID,
        "caller_object_id": USER_OID,
        "client_app_id": SPA_CLIENT_ID,
        "caller_kind": "user",
        "user_id": "ADA0001",
        "participant_identity": "ADA0001",
        "created_at": created,
        "token_expires_at": created + timedelta(minutes=10),
        "request_id": "req-test",
        "deployment": "",
        **overrides,
    }


async def insert_sessions(engine: AsyncEngine, *rows: dict[str, Any]) -> None:
    """One statement per row: rows may set different columns (an executemany takes the first row's)."""
    async with engine.begin() as conn:
        for row in rows:
            await conn.execute(insert(sessions).values(**row))
