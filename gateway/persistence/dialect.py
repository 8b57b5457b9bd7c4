"""`INSERT ... ON CONFLICT` for both backends: SQLite and PostgreSQL spell it the same, from their own module."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def upsert_insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An insert into `table` that supports `on_conflict_do_nothing` / `on_conflict_do_update`."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
