"""worker relay: worker credential key ids on registrations, worker connections and relayed jobs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.persistence.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_key_id", sa.String(length=40), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_agent_registrations_worker_key_id"), ["worker_key_id"], unique=False
        )
    op.create_table(
        "worker_connections",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("worker_key_id", sa.String(length=40), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("connected_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("disconnected_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_connections")),
    )
    with op.batch_alter_table("worker_connections", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_connections_agent_app_id_connected_at"),
            ["agent_app_id", "connected_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_worker_connections_connected_at"), ["connected_at"], unique=False
        )
    op.create_table(
        "worker_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("room_name", sa.String(length=255), nullable=False),
        sa.Column("assigned_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_jobs")),
    )
    with op.batch_alter_table("worker_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_worker_jobs_assigned_at"), ["assigned_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_worker_jobs_room_name"), ["room_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("worker_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_jobs_room_name"))
        batch_op.drop_index(batch_op.f("ix_worker_jobs_assigned_at"))
    op.drop_table("worker_jobs")
    with op.batch_alter_table("worker_connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_connections_connected_at"))
        batch_op.drop_index(batch_op.f("ix_worker_connections_agent_app_id_connected_at"))
    op.drop_table("worker_connections")
    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_registrations_worker_key_id"))
        batch_op.drop_column("worker_key_id")
