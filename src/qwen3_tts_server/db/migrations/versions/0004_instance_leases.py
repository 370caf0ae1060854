"""Instance leases: open streams and reservations name the server process that owns them.

- instances: one row per running server process, its heartbeat renewed every few seconds.
- generations.instance_id, reservations.instance_id: the owner. Any live process settles the
  open rows and releases the holds of a process whose heartbeat is older than LEASE_S, instead
  of waiting a blind grace period (RECOVERY_GRACE_S) that could not tell a dead process's work
  from a live replica's.

Existing rows keep no owner (NULL); they are settled by the grace period as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWNED = ("generations", "reservations")


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_instances_heartbeat_at", "instances", ["heartbeat_at"])
    for table in _OWNED:
        op.add_column(table, sa.Column("instance_id", sa.String(length=32), nullable=True))
        op.create_index(f"ix_{table}_instance_id", table, ["instance_id"])


def downgrade() -> None:
    for table in reversed(_OWNED):
        op.drop_index(f"ix_{table}_instance_id", table_name=table)
        op.drop_column(table, "instance_id")
    op.drop_index("ix_instances_heartbeat_at", table_name="instances")
    op.drop_table("instances")
