"""What several server processes on one PostgreSQL need: checkpoint sizes as 64-bit integers (a
merged checkpoint over 2 GiB overflowed PostgreSQL's INTEGER; SQLite's is 64-bit already), and
the owner of each request (`host:pid:token` of the process running it), so a starting process
forgets only the unfinished requests of processes that died, never those of a live neighbour.

Revision ID: 0005_pg_fixes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_pg_fixes"
# Follows 0003 on the pgstore branch; merged after 0004_run_spec it must follow that one.
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("size", type_=sa.BigInteger, existing_type=sa.Integer, nullable=False)
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("checkpoints") as batch:
        batch.alter_column("size", type_=sa.Integer, existing_type=sa.BigInteger, nullable=False)
