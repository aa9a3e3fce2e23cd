"""Runs keep their RunSpec in typed columns instead of the Signal face's request JSON.

Until 0003 a run's `config` was the Signal face's create body (plus the seed picked), and the
Tinker face wrote Signal-shaped keys into it with its own extras (`api`, `session_id`,
`user_metadata`, `lora_config`). This revision moves every field to a column of its own
(owner, face and session indexed; the optimizer's hyperparameters in one JSON object of
floats), converting each row with the defaults each face applied when a key was missing, then
drops `config`. Sessions find their runs by the `session_id` index instead of scanning JSON.

The conversion is written out here, not imported: a migration must keep converting rows the
way the old code wrote them, whatever the service code becomes.

SQLite: columns are added and dropped with plain `ALTER TABLE` (SQLite ≥ 3.35), never by
copying the table, which the foreign keys of checkpoints and metrics would refuse.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
UNEMBED = ("lm_head",)
SHORT_NAMES = {name.removesuffix("_proj"): name for name in ATTENTION + MLP}
# What each face applied when its config had no such key (the Signal contract's defaults;
# the Tinker face's fixed alpha, optimizer and length).
DEFAULTS = {
    "signal": {
        "lora_r": 32,
        "lora_alpha": 64.0,
        "lora_dropout": 0.0,
        "optimizer": "adamw_8bit",
        "learning_rate": 3e-4,
        "weight_decay": 0.01,
        "max_seq_length": 2048,
        "bf16": True,
        "gradient_checkpointing": True,
    },
    "tinker": {
        "lora_r": 32,
        "lora_alpha": 32.0,
        "lora_dropout": 0.0,
        "optimizer": "adamw",
        "learning_rate": 1e-4,
        "weight_decay": 0.0,
        "max_seq_length": 4096,
        "bf16": False,
        "gradient_checkpointing": False,
    },
}
# Every run's optimizer ran with these (the old service set them for every face).
FIXED_OPTIMIZER = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "grad_clip_norm": 0.0}

NEW_COLUMNS = (
    sa.Column("face", sa.String(16), nullable=False, server_default="signal"),
    sa.Column("session_id", sa.String(64), nullable=True),
    sa.Column("lora_rank", sa.Integer, nullable=False, server_default="32"),
    sa.Column("lora_alpha", sa.Float, nullable=False, server_default="64.0"),
    sa.Column("lora_dropout", sa.Float, nullable=False, server_default="0.0"),
    sa.Column("target_modules", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("requested_target_modules", sa.JSON, nullable=True),
    sa.Column("optimizer", sa.String(32), nullable=False, server_default="adamw"),
    sa.Column("optimizer_params", sa.JSON, nullable=False, server_default="{}"),
    sa.Column("seed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("max_seq_length", sa.Integer, nullable=False, server_default="2048"),
    sa.Column("gradient_checkpointing", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("bf16", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("user_metadata", sa.JSON, nullable=False, server_default="{}"),
)
INDEXES = {"ix_runs_face": "face", "ix_runs_session_id": "session_id"}


def _runs(*names: str) -> sa.TableClause:
    typed = {column.name: column.type for column in NEW_COLUMNS} | {"config": sa.JSON()}
    return sa.table("runs", sa.column("id"), *(sa.column(n, typed.get(n)) for n in names))


def _targets(names: list[str]) -> list[str]:
    wanted = {SHORT_NAMES.get(name, name) for name in names}
    return [name for name in ATTENTION + MLP + UNEMBED if name in wanted]


def columns_from_config(config: dict) -> dict:
    """A 0003 `config` JSON → the 0004 columns (public for the migration test)."""
    face = "tinker" if config.get("api") == "tinker" else "signal"
    values = DEFAULTS[face] | {k: v for k, v in config.items() if v is not None}
    requested = config.get("lora_target_modules")
    if requested:
        targets = _targets(list(requested))
    elif face == "tinker":
        switches = config.get("lora_config") or {}
        targets = list(
            (ATTENTION if switches.get("train_attn", True) else ())
            + (MLP if switches.get("train_mlp", False) else ())
            + (UNEMBED if switches.get("train_unembed", False) else ())
        )
    else:
        targets = list(ATTENTION + MLP)
    return {
        "face": face,
        "session_id": config.get("session_id"),
        "lora_rank": int(values["lora_r"]),
        "lora_alpha": float(values["lora_alpha"]),
        "lora_dropout": float(values["lora_dropout"]),
        "target_modules": targets,
        "requested_target_modules": None if requested is None else list(requested),
        "optimizer": str(values["optimizer"]),
        "optimizer_params": {
            "learning_rate": float(values["learning_rate"]),
            "weight_decay": float(values["weight_decay"]),
            **FIXED_OPTIMIZER,
        },
        "seed": int(config.get("seed") or 0),
        "max_seq_length": int(values["max_seq_length"]),
        "gradient_checkpointing": bool(values["gradient_checkpointing"]),
        "bf16": bool(values["bf16"]),
        "user_metadata": {str(k): str(v) for k, v in (config.get("user_metadata") or {}).items()},
    }


def upgrade() -> None:
    for column in NEW_COLUMNS:
        op.add_column("runs", column)
    bind = op.get_bind()
    names = [column.name for column in NEW_COLUMNS]
    table = _runs("config", *names)
    for run_id, config in bind.execute(sa.select(table.c.id, table.c.config)).all():
        values = columns_from_config(config or {})
        bind.execute(table.update().where(table.c.id == run_id).values(**values))
    for index_name, column_name in INDEXES.items():
        op.create_index(index_name, "runs", [column_name])
    op.drop_column("runs", "config")


def config_from_columns(row) -> dict:
    """The 0003 `config` JSON of a 0004 row (the Signal face's keys, Tinker's extras)."""
    params = row.optimizer_params or {}
    config = {
        "base_model": row.base_model,
        "lora_r": row.lora_rank,
        "lora_alpha": row.lora_alpha,
        "lora_dropout": row.lora_dropout,
        "lora_target_modules": row.requested_target_modules,
        "optimizer": row.optimizer,
        "learning_rate": params.get("learning_rate"),
        "weight_decay": params.get("weight_decay"),
        "max_seq_length": row.max_seq_length,
        "bf16": bool(row.bf16),
        "gradient_checkpointing": bool(row.gradient_checkpointing),
        "seed": row.seed,
    }
    if row.face == "tinker":
        targets = set(row.target_modules or [])
        config |= {
            "api": "tinker",
            "lora_config": {
                "rank": row.lora_rank,
                "seed": row.seed,
                "train_attn": bool(targets & set(ATTENTION)),
                "train_mlp": bool(targets & set(MLP)),
                "train_unembed": bool(targets & set(UNEMBED)),
            },
            "session_id": row.session_id,
            "user_metadata": row.user_metadata or {},
        }
    return config


def downgrade() -> None:
    op.add_column("runs", sa.Column("config", sa.JSON, nullable=False, server_default="{}"))
    bind = op.get_bind()
    names = [column.name for column in NEW_COLUMNS]
    source = _runs("base_model", "config", *names)
    for row in bind.execute(sa.select(source)).all():
        update = source.update().where(source.c.id == row.id)
        bind.execute(update.values(config=config_from_columns(row)))
    for name in INDEXES:
        op.drop_index(name, "runs")
    for column in reversed(NEW_COLUMNS):
        op.drop_column("runs", column.name)
