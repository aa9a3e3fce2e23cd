"""Alembic environment: migrations run in-process at server start on the store's connection."""

from __future__ import annotations

from alembic import context

from frontier_signal.service.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
