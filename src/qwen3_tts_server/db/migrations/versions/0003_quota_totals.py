"""Per-user running totals and reservations (quotas that hold under concurrency).

- users.tokens_used, tokens_reserved, storage_bytes, voice_count: the totals every quota and
  storage check compares against with one conditional UPDATE, instead of re-aggregating the
  user's history (which also let concurrent calls all pass the check).
- reservations: what each call in progress holds, so a crash can be undone at start-up.

Existing users get their totals from the rows that record them: tokens of OK single
generations, OK batches and every voice created (as /usage counts them), and the reference
audio and count of their live voices. Plain ADD COLUMN (no table rebuild, see 0002).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOTALS = ("tokens_used", "tokens_reserved", "storage_bytes")

_BACKFILL = """
UPDATE users SET
  tokens_used =
    (SELECT COALESCE(SUM(g.tokens_used), 0) FROM generations g
      WHERE g.user_id = users.id AND g.batch_id IS NULL AND g.status = 'ok')
    + (SELECT COALESCE(SUM(b.tokens_used), 0) FROM batches b
      WHERE b.user_id = users.id AND b.status = 'ok')
    + (SELECT COALESCE(SUM(v.tokens_used), 0) FROM voices v WHERE v.user_id = users.id),
  storage_bytes =
    (SELECT COALESCE(SUM(a.size_bytes), 0) FROM voices v
      JOIN audio_blobs a ON a.sha256 = v.ref_audio_sha256
      WHERE v.user_id = users.id AND v.deleted_at IS NULL),
  voice_count =
    (SELECT COUNT(*) FROM voices v WHERE v.user_id = users.id AND v.deleted_at IS NULL)
"""


def upgrade() -> None:
    for name in _TOTALS:
        op.add_column("users", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column(
        "users", sa.Column("voice_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("storage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("voices", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reservations_user_id", "reservations", ["user_id"])
    op.create_index("ix_reservations_created_at", "reservations", ["created_at"])
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.drop_index("ix_reservations_created_at", table_name="reservations")
    op.drop_index("ix_reservations_user_id", table_name="reservations")
    op.drop_table("reservations")
    for name in ("voice_count", *reversed(_TOTALS)):
        op.drop_column("users", name)
