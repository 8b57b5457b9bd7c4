"""The Alembic head builds exactly the schema the tables declare, on every backend."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gateway.persistence.db import create_engine
from gateway.persistence.migrate import current_revision, head_revision, upgrade
from gateway.persistence.tables import metadata

pytestmark = pytest.mark.anyio


async def test_head_matches_the_models(database_url: str) -> None:
    """After upgrading to head, autogenerate finds no difference between the database and the models."""
    engine = create_engine(database_url, pool_size=1)
    try:
        assert await current_revision(engine) == head_revision()

        def diff(connection):  # type: ignore[no-untyped-def]
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)

        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent(database_url: str) -> None:
    """Running the migration again on a database at head changes nothing (as `lkps migrate` on redeploy)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
