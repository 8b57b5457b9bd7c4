"""Whether an agent has a worker connected through the relay, on any replica, answered from memory.

Each replica writes a row per worker connection LiveKit registered (`worker_presence`), marks it when the
connection ends, and refreshes `seen_at` of its live rows every HEARTBEAT_SECONDS. Every replica reloads
the whole picture every REFRESH_SECONDS into a dict of "present until" times, so a session start costs a
dict lookup. A connection counts until LKPS_WORKER_PRESENCE_GRACE_SECONDS after it ended (a rolling restart
of workers or replicas does not refuse sessions); a replica that stopped refreshing (crashed) counts as
having lost its workers STALE_SECONDS after its last refresh. A miss is checked once against the database
(at most once a second per agent), so a worker that registered on another replica a moment ago counts at
once.

Presence is per agent and deployment (the worker's `register.deployment`; "" is LiveKit's default).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from authz.clock import Clock, utc_now
from gateway.background import OrderedWrites
from gateway.persistence.tables import worker_presence

log = structlog.get_logger("lkps.presence")

REFRESH_SECONDS = 2.0
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 3 * HEARTBEAT_SECONDS
MAX_RECHECKED = 10_000
MISS_RECHECK_SECONDS = 1.0
# Rows of connections that ended this long ago tell nothing more (worker_connections keeps the history).
KEEP_ENDED = timedelta(hours=1)

_Key = tuple[str, str]  # (agent id, deployment)


class WorkerPresence:
    def __init__(self, engine: AsyncEngine, clock: Clock, replica: str, grace_seconds: float) -> None:
        self._engine = engine
        self._clock = clock
        self._replica = replica
        self._grace = grace_seconds
        self._until: dict[_Key, float] = {}  # from the last refresh: wall time each pair counts until
        self._live: dict[str, _Key] = {}  # this replica's registered connections
        self._live_keys: Counter[_Key] = Counter()
        self._rechecked: dict[_Key, float] = {}  # monotonic time of each pair's last miss check
        self._writes = OrderedWrites("presence_write_failed")

    async def is_present(self, agent_id: str, deployment: str = "") -> bool:
        key = (agent_id, deployment)
        if self._live_keys[key] or self._until.get(key, 0.0) > self._clock.now():
            return True
        now = self._clock.monotonic()
        if now - self._rechecked.get(key, -MISS_RECHECK_SECONDS) < MISS_RECHECK_SECONDS:
            return False
        if len(self._rechecked) >= MAX_RECHECKED:  # callers choose deployment names: never unbounded
            self._rechecked.clear()
        self._rechecked[key] = now
        until = await self._present_until(agent_id)
        self._until.update(until)
        return until.get(key, 0.0) > self._clock.now()

    # Relay hooks: called by the relay (synchronously, off its frame path); the writes go out in order.

    def registered(self, connection_id: str, agent_id: str, deployment: str) -> None:
        self._live[connection_id] = (agent_id, deployment)
        self._live_keys[(agent_id, deployment)] += 1
        self._writes.later(self._write_registered(connection_id, agent_id, deployment))

    def ended(self, connection_id: str) -> None:
        key = self._live.pop(connection_id, None)
        if key is None:
            return
        self._live_keys[key] -= 1
        if not self._live_keys[key]:
            del self._live_keys[key]
        # Until the next refresh reads the row back, this replica counts the grace itself.
        self._until[key] = max(self._until.get(key, 0.0), self._clock.now() + self._grace)
        self._writes.later(self._write_ended(connection_id))

    async def refresh(self) -> None:
        """Reload every agent's presence from the database."""
        self._until = await self._present_until(None)

    async def heartbeat(self) -> None:
        """Mark this replica's live rows seen now and drop rows of connections long gone."""
        now = utc_now(self._clock)
        async with self._engine.begin() as conn:
            if self._live:
                await conn.execute(
                    update(worker_presence)
                    .where(
                        worker_presence.c.replica == self._replica,
                        worker_presence.c.connection_id.in_(list(self._live)),
                    )
                    .values(seen_at=now)
                )
            await conn.execute(delete(worker_presence).where(worker_presence.c.seen_at < now - KEEP_ENDED))

    async def run(self) -> None:
        """Heartbeat and refresh until cancelled; a failing database only makes the view older."""
        beat_due = 0.0
        while True:
            try:
                if self._clock.monotonic() >= beat_due:
                    beat_due = self._clock.monotonic() + HEARTBEAT_SECONDS
                    await self.heartbeat()
                await self.refresh()
            except Exception as exc:
                log.warning("presence_refresh_failed", error=type(exc).__name__)
            await asyncio.sleep(REFRESH_SECONDS)

    async def flush(self) -> None:
        """Wait until every presence write queued so far is done."""
        await self._writes.flush()

    async def aclose(self) -> None:
        await self._writes.aclose()

    async def _present_until(self, agent_id: str | None) -> dict[_Key, float]:
        now = utc_now(self._clock)
        grace = timedelta(seconds=self._grace)
        stale = timedelta(seconds=STALE_SECONDS)
        t = worker_presence
        query = select(t.c.agent_app_id, t.c.deployment, t.c.seen_at, t.c.disconnected_at).where(
            or_(t.c.disconnected_at.is_(None), t.c.disconnected_at > now - grace),
            t.c.seen_at > now - grace - stale,
        )
        if agent_id is not None:
            query = query.where(t.c.agent_app_id == agent_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        until: dict[_Key, float] = {}
        for row in rows:
            gone: datetime = row.disconnected_at or row.seen_at + stale
            moment = (gone + grace).timestamp()
            key = (row.agent_app_id, row.deployment)
            until[key] = max(until.get(key, 0.0), moment)
        return until

    async def _write_registered(self, connection_id: str, agent_id: str, deployment: str) -> None:
        now = utc_now(self._clock)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(worker_presence).values(
                    connection_id=connection_id,
                    agent_app_id=agent_id,
                    deployment=deployment,
                    replica=self._replica,
                    registered_at=now,
                    seen_at=now,
                )
            )

    async def _write_ended(self, connection_id: str) -> None:
        now = utc_now(self._clock)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(worker_presence)
                .where(worker_presence.c.connection_id == connection_id)
                .values(disconnected_at=now, seen_at=now)
            )
