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
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    text,
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
    # The worker credential's key id (worker_api_key): a renewal inherits it from the registration in force,
    # so the worker started with it keeps working; NULL on rows from before the worker relay.
    Column("worker_key_id", String(40), nullable=True),
    Index(None, "agent_app_id", "expires_at"),
    Index(None, "expires_at"),  # pruning
    Index(None, "worker_key_id"),
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
    # The lifecycle, fed by LiveKit webhooks (and by ending a session): issued -> active -> ended.
    Column("status", String(8), nullable=False, server_default="issued"),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("agent_joined_at", UtcDateTime(), nullable=True),
    Column("ended_by", String(16), nullable=True),  # webhook | caller | admin
    # LiveKit activity (room_started, a join) after the session ended: a still-valid token re-created the
    # room. Each one is counted and the room deleted again.
    Column("reopened_count", Integer(), nullable=False, server_default=text("0")),
    Column("reopened_at", UtcDateTime(), nullable=True),  # the latest such activity
    Index(None, "agent_app_id", "created_at"),
    Index(None, "caller_object_id", "created_at"),
    Index(None, "client_app_id", "created_at"),
    Index(None, "user_id", "created_at"),
    Index(None, "status", "created_at"),
    Index(None, "created_at"),  # the unfiltered admin listing and pruning
)

# LiveKit webhook events as received: the primary key is LiveKit's event id, so a retried delivery is a
# no-op insert. Rows for rooms lkps does not know are kept too.
session_events = Table(
    "session_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("room_name", String(255), nullable=False),
    Column("event", String(40), nullable=False),
    Column("participant_identity", String(255), nullable=True),
    Column("participant_kind", String(16), nullable=True),
    Column("occurred_at", UtcDateTime(), nullable=False),  # LiveKit's createdAt
    Column("received_at", UtcDateTime(), nullable=False),
    Column("details", Text(), nullable=True),  # a few event fields as JSON; never a token or password
    Index(None, "room_name", "occurred_at"),
    Index(None, "received_at"),
)

# An agent-level block set by an administrator: while present, the agent can neither register nor be
# reached. Never pruned: it is a standing decision, not an audit record.
agent_revocations = Table(
    "agent_revocations",
    metadata,
    _guid("agent_app_id", primary_key=True),
    Column("revoked_at", UtcDateTime(), nullable=False),
    _guid("revoked_by_object_id", nullable=False),
    _guid("revoked_by_client_app_id", nullable=False),
    Column("reason", String(512), nullable=True),
)

# Who did what through the admin API, and when.
admin_actions = Table(
    "admin_actions",
    metadata,
    _guid("id", primary_key=True),
    Column("actor_tenant_id", String(36), nullable=False),
    _guid("actor_object_id", nullable=False),
    _guid("actor_client_app_id", nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(255), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("details", Text(), nullable=True),
    Index(None, "at"),
    Index(None, "target", "at"),
)

# One row per relayed LiveKit Agents worker connection, written at registration and closed at disconnect.
worker_connections = Table(
    "worker_connections",
    metadata,
    _guid("id", primary_key=True),
    _guid("agent_app_id", nullable=False),
    Column("worker_key_id", String(40), nullable=False),
    Column("client_address", String(64), nullable=True),
    Column("worker_id", String(64), nullable=True),  # LiveKit's, from its register answer
    Column("replica", String(64), nullable=False),
    Column("connected_at", UtcDateTime(), nullable=False),
    Column("disconnected_at", UtcDateTime(), nullable=True),
    Column("close_reason", String(32), nullable=True),
    Index(None, "agent_app_id", "connected_at"),
    Index(None, "connected_at"),  # pruning
)

# One row per job LiveKit assigned through the relay.
worker_jobs = Table(
    "worker_jobs",
    metadata,
    Column("id", String(64), primary_key=True),  # LiveKit's job id
    _guid("connection_id", nullable=False),
    _guid("agent_app_id", nullable=False),
    Column("room_name", String(255), nullable=False),
    Column("assigned_at", UtcDateTime(), nullable=False),
    Index(None, "room_name"),
    Index(None, "assigned_at"),  # pruning
)

# One row per security event of the worker relay: a frame outside its allow-list, a job for a room that is
# not a session of the worker's agent, an availability answer over the bounds, another agent's name.
worker_security_events = Table(
    "worker_security_events",
    metadata,
    _guid("id", primary_key=True),
    Column("occurred_at", UtcDateTime(), nullable=False),
    _guid("agent_app_id", nullable=False),
    Column("worker_key_id", String(40), nullable=False),
    _guid("connection_id", nullable=True),
    Column("kind", String(32), nullable=False),
    Column("detail", String(128), nullable=True),
    Index(None, "agent_app_id", "occurred_at"),
    Index(None, "occurred_at"),  # pruning
)
