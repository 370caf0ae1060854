"""A stream's playback on its row: first audio sent, longest underrun, safe play start (ms).

Nullable: not a stream, or a stream from before this revision. Plain ADD COLUMN.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("first_audio_ms", "underrun_ms", "safe_start_ms")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("generations", sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    for name in reversed(_COLUMNS):
        op.drop_column("generations", name)
