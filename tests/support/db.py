"""Migrated, empty databases for tests: an SQLite file copied from a migrated template, or one PostgreSQL
database per test session (created on the server named by LKPS_TEST_POSTGRES_URL) emptied per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.persistence.db import create_engine
from gateway.persistence.migrate import upgrade
from gateway.persistence.tables import metadata

POSTGRES_SERVER = os.environ.get("LKPS_TEST_POSTGRES_URL")
DB_KINDS = ["sqlite", "postgres"]  # postgres skips, naming why, without LKPS_TEST_POSTGRES_URL


async def _migrate(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def _execute(url: str, *statements: str, autocommit: bool = False) -> None:
    engine = create_engine(url, pool_size=1)
    if autocommit:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
            await conn.commit()
    finally:
        await engine.dispose()


def unreachable(url: str) -> str:
    """The same kind of database URL, pointing where no database can be opened."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.set(database="/nonexistent-dir/lkps.db").render_as_string(hide_password=False)
    return parsed.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


def dedicated_postgres() -> str:
    """A migrated PostgreSQL database of its own on LKPS_TEST_POSTGRES_URL's server, for drills that take it
    away (`block_connections`) or kill its clients; drop it with `drop_postgres`."""
    assert POSTGRES_SERVER, "PostgreSQL drills need LKPS_TEST_POSTGRES_URL"
    name = f"lkps_drill_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(POSTGRES_SERVER, f"CREATE DATABASE {name}", autocommit=True))
    url = make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrate(url))
    return url


def drop_postgres(url: str) -> None:
    assert POSTGRES_SERVER
    name = make_url(url).database
    asyncio.run(_execute(POSTGRES_SERVER, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", autocommit=True))


async def block_connections(url: str, *, blocked: bool) -> None:
    """Take a PostgreSQL database away from its clients (new connections refused, open ones terminated)
    as an outage or failover would, or give it back (`blocked=False`)."""
    assert POSTGRES_SERVER
    name = make_url(url).database
    statements = [f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if blocked else 'true'}"]
    if blocked:
        statements.append(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
    await _execute(POSTGRES_SERVER, *statements, autocommit=True)


class TestDatabases:
    __test__ = False

    def __init__(self, directory: Path) -> None:
        self._template = directory / "template.db"
        asyncio.run(_migrate(f"sqlite+aiosqlite:///{self._template}"))
        self._postgres_url: str | None = None
        self._postgres_name: str | None = None

    def fresh(self, kind: str, tmp_path: Path) -> str:
        if kind == "sqlite":
            path = tmp_path / "lkps.db"
            shutil.copyfile(self._template, path)
            return f"sqlite+aiosqlite:///{path}"
        url = self._postgres()
        tables = ", ".join(table.name for table in metadata.sorted_tables)
        asyncio.run(_execute(url, f"TRUNCATE {tables}"))
        return url

    def _postgres(self) -> str:
        if self._postgres_url is None:
            assert POSTGRES_SERVER, "PostgreSQL tests need LKPS_TEST_POSTGRES_URL"
            self._postgres_name = f"lkps_test_{uuid.uuid4().hex[:12]}"
            asyncio.run(_execute(POSTGRES_SERVER, f"CREATE DATABASE {self._postgres_name}", autocommit=True))
            url = make_url(POSTGRES_SERVER).set(database=self._postgres_name)
            self._postgres_url = url.render_as_string(hide_password=False)
            asyncio.run(_migrate(self._postgres_url))
        return self._postgres_url

    def server_url(self) -> str:
        return self._postgres()

    def close(self) -> None:
        if self._postgres_name is not None and POSTGRES_SERVER:
            asyncio.run(
                _execute(
                    POSTGRES_SERVER,
                    f"DROP DATABASE IF EXISTS {self._postgres_name} WITH (FORCE)",
                    autocommit=True,
                )
            )
