"""Alembic's entry: migrations run on the connection `service.store.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from service.store import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters a table by copying it
)
with context.begin_transaction():
    context.run_migrations()
