"""Tinker SDK sessions and sampling sessions; public and expiring checkpoints.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
    op.create_table(
        "tinker_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("user_metadata", sa.JSON, nullable=False),
        sa.Column("sdk_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_heartbeat_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tinker_sessions_tenant_id", "tinker_sessions", ["tenant_id"])
    op.create_table(
        "tinker_samplers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("base_model", sa.String(300), nullable=False),
        sa.Column("model_path", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tinker_samplers_tenant_id", "tinker_samplers", ["tenant_id"])
    op.create_index("ix_tinker_samplers_session_id", "tinker_samplers", ["session_id"])


def downgrade() -> None:
    op.drop_table("tinker_samplers")
    op.drop_table("tinker_sessions")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("public")
