"""Database rows (SQLAlchemy 2 declarative). Times are UNIX seconds (REAL), portable to any SQL.

These are the third type layer (wire schemas → engine dataclasses → rows); `store.py` converts.
The schema itself is created by the Alembic migrations in `migrations/`, not by `create_all`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell keys apart
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(300))
    config: Mapped[dict] = mapped_column(JSON)  # the wire RunConfig as created
    effective: Mapped[dict] = mapped_column(JSON)  # what really runs (dtype, optimizer, ...)
    status: Mapped[str] = mapped_column(String(32))  # active | deleted
    step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_run_step", "run_id", "step"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # training | sampler | merged
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1000))
    size: Mapped[int] = mapped_column(BigInteger)  # bytes; 64-bit since migration 0005
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    # Tinker face: readable by any key when public; removed by the sweeper after expires_at.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norm: Mapped[float] = mapped_column(Float)
    learning_rate: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int] = mapped_column(Integer)
    time: Mapped[float] = mapped_column(Float)
    # Seconds of the step's forward_backward calls and optimizer update (tokens/s); migration 0003.
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Request(Base):
    __tablename__ = "requests"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | done | failed
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"status", "message", "type"}
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of kind + path + body
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # `host:pid:token` of the process running it (migration 0005): a starting process forgets
    # only the unfinished requests of dead processes of its host.
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)


class TinkerSession(Base):
    """A tinker SDK session (`create_session`): it owns the models and samplers made in it
    and stays active while heartbeats come (hpcai has no sessions; its runs have none)."""

    __tablename__ = "tinker_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    tags: Mapped[list] = mapped_column(JSON)
    user_metadata: Mapped[dict] = mapped_column(JSON)
    sdk_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | expired | finished
    created_at: Mapped[float] = mapped_column(Float)
    last_heartbeat_at: Mapped[float] = mapped_column(Float)


class Sampler(Base):
    """A sampling session: the weights (`model_path`, or the bare base model) a tinker
    SamplingClient samples from by `sampling_session_id`."""

    __tablename__ = "tinker_samplers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    base_model: Mapped[str] = mapped_column(String(300))
    model_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
