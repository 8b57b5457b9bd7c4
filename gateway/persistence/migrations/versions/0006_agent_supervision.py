"""agent supervision: worker presence, session supervision columns

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 09:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.persistence.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_MOMENTS = (
    "last_dispatch_at",
    "dispatch_exhausted_at",
    "next_check_at",
    "user_last_joined_at",
    "user_last_left_at",
    "agent_last_joined_at",
    "agent_last_left_at",
)


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_metadata", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("dispatch_attempts", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        for name in _MOMENTS:
            batch_op.add_column(
                sa.Column(name, gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True)
            )
        batch_op.add_column(sa.Column("end_requested", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_sessions_next_check_at"), ["next_check_at"], unique=False)
    op.create_table(
        "worker_presence",
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("deployment", sa.String(length=128), server_default="", nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("registered_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("seen_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("disconnected_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_worker_presence")),
    )
    with op.batch_alter_table("worker_presence", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_worker_presence_replica"), ["replica"], unique=False)
        batch_op.create_index(batch_op.f("ix_worker_presence_seen_at"), ["seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("worker_presence", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_presence_seen_at"))
        batch_op.drop_index(batch_op.f("ix_worker_presence_replica"))
    op.drop_table("worker_presence")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_next_check_at"))
        batch_op.drop_column("end_requested")
        for name in reversed(_MOMENTS):
            batch_op.drop_column(name)
        batch_op.drop_column("dispatch_attempts")
        batch_op.drop_column("agent_metadata")
