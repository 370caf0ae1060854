"""Word timestamps of stored generations (GET /getstored/{id}/captions).

generations.words: JSON [[text, start, end], ...] of a stored generation made with
timestamps; NULL otherwise. Plain ADD COLUMN (no table rebuild, see 0002).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("words", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "words")
