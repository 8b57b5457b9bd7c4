"""worker relay allow-list: the relay's security events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.persistence.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_security_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("occurred_at", gateway.persistence.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("agent_app_id", sa.String(length=36), nullable=False),
        sa.Column("worker_key_id", sa.String(length=40), nullable=False),
        sa.Column("connection_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_security_events")),
    )
    with op.batch_alter_table("worker_security_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_security_events_agent_app_id_occurred_at"),
            ["agent_app_id", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_worker_security_events_occurred_at"), ["occurred_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("worker_security_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_security_events_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_worker_security_events_agent_app_id_occurred_at"))
    op.drop_table("worker_security_events")
