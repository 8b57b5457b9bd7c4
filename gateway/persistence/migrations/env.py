"""Alembic environment: runs on the connection `gateway.persistence.migrate` hands over."""

from __future__ import annotations

from alembic import context

from gateway.persistence.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `lkps migrate` (gateway.persistence.migrate), not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite can only ALTER through table copies
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
