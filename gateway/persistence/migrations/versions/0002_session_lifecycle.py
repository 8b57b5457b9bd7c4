"""session lifecycle: status columns on sessions, webhook events, agent revocations, admin audit

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:18:33.892350
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.persistence.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("actor_tenant_id", sa.String(length=36), nullable=False),
        sa.Column("actor_object_id", sa.String(length=36), nullable=False),
        sa.Column("actor_client_app_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_actions")),
    )
    with op.batch_alter_table("admin_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_actions_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_admin_actions_target_at"), ["target", "at"], unique=False)

    op.create_table(
        "agent_revocations",
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("revoked_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked_by_object_id", sa.String(length=36), nullable=False),
        sa.Column("revoked_by_client_app_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("agent_app_id", name=op.f("pk_agent_revocations")),
    )
    op.create_table(
        "session_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("room_name", sa.String(length=255), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("participant_identity", sa.String(length=255), nullable=True),
        sa.Column("participant_kind", sa.String(length=16), nullable=True),
        sa.Column("occurred_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("received_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_events")),
    )
    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_session_events_received_at"), ["received_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_session_events_room_name_occurred_at"), ["room_name", "occurred_at"], unique=False
        )

    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_registrations_expires_at"), ["expires_at"], unique=False)

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=8), server_default="issued", nullable=False))
        batch_op.add_column(
            sa.Column("started_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("ended_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("agent_joined_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("ended_by", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_sessions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sessions_status_created_at"), ["status", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sessions_user_id_created_at"), ["user_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_user_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_created_at"))
        batch_op.drop_column("ended_by")
        batch_op.drop_column("agent_joined_at")
        batch_op.drop_column("ended_at")
        batch_op.drop_column("started_at")
        batch_op.drop_column("status")

    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_registrations_expires_at"))

    with op.batch_alter_table("session_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_events_room_name_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_session_events_received_at"))

    op.drop_table("session_events")
    op.drop_table("agent_revocations")
    with op.batch_alter_table("admin_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_actions_target_at"))
        batch_op.drop_index(batch_op.f("ix_admin_actions_at"))

    op.drop_table("admin_actions")
