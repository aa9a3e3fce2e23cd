"""Checkpoint sizes as 64-bit integers: a merged checkpoint of a model over 2 GiB overflowed
PostgreSQL's INTEGER (SQLite's INTEGER is 64-bit already, so nothing changes there).

Revision ID: 0005_big_sizes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_big_sizes"
# Follows 0003 on the pgstore branch; when merged after 0004_run_spec it must follow that one.
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("size", type_=sa.BigInteger, existing_type=sa.Integer, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("size", type_=sa.Integer, existing_type=sa.BigInteger, nullable=False)
