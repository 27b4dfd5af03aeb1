"""Alembic's environment: migrations run on the connection migrate.py hands over."""

from __future__ import annotations

from alembic import context

from personal_assistant.workers.store import ai_models, calendar_models, email_models  # noqa: F401
from personal_assistant.workers.store.base import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters tables by copying them ("batch" mode); PostgreSQL alters in place.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
