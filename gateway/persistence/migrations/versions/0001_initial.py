"""initial schema: agent registrations and sessions

Revision ID: 0001
Revises:
Create Date: 2026-11-22 23:24:26.241113
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.persistence.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_registrations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("requester_object_id", sa.String(length=36), nullable=False),
        sa.Column("issued_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("revoked_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("enforce_client_authz", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=True),
        sa.Column("description", sa.String(length=1024), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_registrations")),
    )
    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_registrations_agent_app_id_expires_at"),
            ["agent_app_id", "expires_at"],
            unique=False,
        )

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("room_name", sa.String(length=255), nullable=False),
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("caller_object_id", sa.String(length=36), nullable=False),
        sa.Column("client_app_id", sa.String(length=36), nullable=False),
        sa.Column("caller_kind", sa.String(length=8), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("participant_identity", sa.String(length=128), nullable=False),
        sa.Column("created_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("token_expires_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("room_name", name=op.f("uq_sessions_room_name")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sessions_agent_app_id_created_at"), ["agent_app_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sessions_caller_object_id_created_at"),
            ["caller_object_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_sessions_client_app_id_created_at"), ["client_app_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_client_app_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_caller_object_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_agent_app_id_created_at"))

    op.drop_table("sessions")
    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_registrations_agent_app_id_expires_at"))

    op.drop_table("agent_registrations")
