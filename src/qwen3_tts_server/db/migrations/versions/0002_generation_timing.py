"""Generation timing and finish reason; drop the never-read voice prompt model id.

- generations.queue_ms: time a call waited for the model (nullable: unknown for older rows).
  From this revision on, generations.latency_ms is model time only.
- generations.finish_reason: eos | length | silence | cancelled (nullable: unknown before).
- voices.prompt_model_id: written at creation but never read (the prompt bytes carry the id of
  the model that made them, and that is what the engine checks).

Plain ADD/DROP COLUMN, no batch table rebuild: SQLite (3.35+) does both in place. A rebuild
would drop and recreate `voices`, and with foreign keys on, dropping it would run the
ON DELETE SET NULL of every generation and batch that names a voice.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("queue_ms", sa.Integer(), nullable=True))
    op.add_column("generations", sa.Column("finish_reason", sa.String(length=16), nullable=True))
    op.drop_column("voices", "prompt_model_id")


def downgrade() -> None:
    op.add_column(
        "voices",
        sa.Column("prompt_model_id", sa.String(length=256), nullable=False, server_default=""),
    )
    op.drop_column("generations", "finish_reason")
    op.drop_column("generations", "queue_ms")
