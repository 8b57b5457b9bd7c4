"""The schema, as SQLAlchemy Core tables (Alembic migrations must match these exactly)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    MetaData,
    String,
    Table,
    TypeDecorator,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC everywhere: timestamptz on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _guid(name: str, **kwargs: Any) -> Column[str]:
    return Column(name, String(36), **kwargs)


agent_registrations = Table(
    "agent_registrations",
    metadata,
    _guid("id", primary_key=True),
    _guid("agent_app_id", nullable=False),
    Column("tenant_id", String(36), nullable=False),
    _guid("requester_object_id", nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("revoked", Boolean(), nullable=False, server_default=false()),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("enforce_client_authz", Boolean(), nullable=False),
    Column("display_name", String(128), nullable=True),
    Column("description", String(1024), nullable=True),
    Column("agent_version", String(64), nullable=True),
    Column("request_id", String(64), nullable=False),
    Index(None, "agent_app_id", "expires_at"),
)

sessions = Table(
    "sessions",
    metadata,
    _guid("id", primary_key=True),
    Column("room_name", String(255), nullable=False, unique=True),
    _guid("agent_app_id", nullable=False),
    Column("tenant_id", String(36), nullable=False),
    _guid("caller_object_id", nullable=False),
    _guid("client_app_id", nullable=False),
    Column("caller_kind", String(8), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("participant_identity", String(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("token_expires_at", UtcDateTime(), nullable=False),
    Column("request_id", String(64), nullable=False),
    Index(None, "agent_app_id", "created_at"),
    Index(None, "caller_object_id", "created_at"),
    Index(None, "client_app_id", "created_at"),
)
