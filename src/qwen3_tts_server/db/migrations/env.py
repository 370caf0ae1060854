"""Alembic environment: always driven from code (`db.session.upgrade`) with a live connection."""

from __future__ import annotations

from alembic import context

from qwen3_tts_server.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `qwen3-tts-server db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
