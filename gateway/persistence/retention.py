"""Retention: delete rows older than the retention period, in batches with a commit each, so a large
backlog neither holds long locks nor grows one huge transaction.

Agent revocations are never deleted: they are standing decisions, not history.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.tables import (
    admin_actions,
    agent_registrations,
    session_events,
    sessions,
    worker_connections,
    worker_jobs,
    worker_security_events,
)

# Each table with the time that ages its rows; a registration ages from its expiry, so none in force goes.
PRUNED: tuple[tuple[Table, Column[datetime]], ...] = (
    (sessions, sessions.c.created_at),
    (session_events, session_events.c.received_at),
    (agent_registrations, agent_registrations.c.expires_at),
    (admin_actions, admin_actions.c.at),
    (worker_connections, worker_connections.c.connected_at),
    (worker_jobs, worker_jobs.c.assigned_at),
    (worker_security_events, worker_security_events.c.occurred_at),
)


async def prune(
    engine: AsyncEngine, cutoff: datetime, batch_size: int, *, dry_run: bool = False
) -> dict[str, int]:
    """Delete every row older than `cutoff` (count them instead with `dry_run`); rows per table."""
    counts: dict[str, int] = {}
    for table, aged in PRUNED:
        if dry_run:
            async with engine.connect() as conn:
                counts[table.name] = int(
                    await conn.scalar(select(func.count()).select_from(table).where(aged < cutoff)) or 0
                )
            continue
        # DELETE ... WHERE id IN (SELECT id ... LIMIT n): both backends, no DELETE ... LIMIT needed.
        batch = delete(table).where(table.c.id.in_(select(table.c.id).where(aged < cutoff).limit(batch_size)))
        deleted = 0
        while True:
            async with engine.begin() as conn:
                removed = (await conn.execute(batch)).rowcount
            deleted += removed
            if removed < batch_size:
                break
        counts[table.name] = deleted
    return counts
