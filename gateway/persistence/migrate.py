"""Schema migrations: bring a database to the head revision, or tell whether it is there (readiness)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.persistence.db import create_engine

if TYPE_CHECKING:
    from authz.clock import Clock

_SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@functools.cache
def _older_revisions() -> frozenset[str]:
    """Every revision this code knows that is not its head: a database there is not migrated yet."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return frozenset(script.revision for script in scripts.walk_revisions()) - {scripts.get_current_head()}


async def database_status(engine: AsyncEngine, within_seconds: float = 2.0) -> str:
    """Readiness of the database: `ok`, `unreachable` (no answer within `within_seconds`) or what to do.

    A revision this code does not know is a newer one (a rolling upgrade migrated first), and is ready: the
    migrations only add to the schema. An empty or older schema would make every request fail.
    """
    try:
        async with asyncio.timeout(within_seconds), engine.connect() as conn:
            revision = await conn.run_sync(_read_revision)
    except Exception:
        return "unreachable"
    if revision is None or revision in _older_revisions():
        return f"not migrated (revision {revision or 'none'}, head {head_revision()}): run `lkps migrate`"
    return "ok"


class CachedDatabaseStatus:
    """`database_status`, asked at most once per `ttl_seconds` whoever asks and however often: the health
    endpoints answer without credentials, so they must not be a way to load the database. Concurrent
    callers while the answer is stale share one check."""

    def __init__(self, engine: AsyncEngine, clock: Clock, ttl_seconds: float = 1.0) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl = ttl_seconds
        self._lock = asyncio.Lock()
        self._status = ""
        self._checked_at: float | None = None

    def _fresh(self) -> bool:
        return self._checked_at is not None and 0 <= self._clock.monotonic() - self._checked_at < self._ttl

    async def status(self) -> str:
        if self._fresh():
            return self._status
        async with self._lock:
            if not self._fresh():
                self._status = await database_status(self._engine)
                self._checked_at = self._clock.monotonic()
            return self._status


def _read_revision(connection: Any) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def run(connection: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_read_revision)


async def upgrade_url(url: str) -> str | None:
    """`lkps migrate`: upgrade the database at `url` to head and return the revision reached."""
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine)
        return await current_revision(engine)
    finally:
        await engine.dispose()
