"""generations.speaker: the preset speaker of a generation no stored voice spoke.

Nullable (a stored voice spoke it, or it is older than this revision). Plain ADD COLUMN.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generations", sa.Column("speaker", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "speaker")
