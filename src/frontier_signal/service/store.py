"""The SQL store: tenants, API keys, runs, checkpoints, metrics and requests.

SQLite in the data folder by default (WAL, so readers never block the writer), PostgreSQL or any
SQLAlchemy URL otherwise. The schema comes from the Alembic migrations, applied at open. Every
method is one short transaction; rows come back detached (`expire_on_commit=False`), so callers
read them freely. Rules (who may see what) live in the services, not here.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, delete, event, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from frontier_signal.service.store_requests import RequestRows, rowcount
from frontier_signal.service.tables import (
    ApiKey,
    Checkpoint,
    Metric,
    Request,
    Run,
    Sampler,
    Tenant,
    TinkerSession,
)

MIGRATIONS = Path(__file__).parent / "migrations"
KEY_PREFIX = "sk-fs-"
# The PostgreSQL advisory lock that serializes migrations of processes starting at once.
MIGRATION_LOCK = 0x46534D47
TINKER_KEY_PREFIX = "tml-"


def hash_key(key: str) -> str:
    # Keys are 32 random bytes, so a plain SHA-256 is enough (no password-style stretching).
    return hashlib.sha256(key.encode()).hexdigest()


def tinker_key_form(key: str) -> str:
    """The `tml-` spelling of an `sk-fs-` key: the official tinker SDK refuses keys that do not
    start with `tml-`, so the server takes `tml-REST` as the same key as `sk-fs-REST`."""
    return TINKER_KEY_PREFIX + key.removeprefix(KEY_PREFIX)


def canonical_key(key: str) -> str:
    """The stored (`sk-fs-`) spelling of a key given in either form."""
    if key.startswith(TINKER_KEY_PREFIX):
        return KEY_PREFIX + key[len(TINKER_KEY_PREFIX) :]
    return key


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class Store(RequestRows):
    """Open (and migrate) the database at `url`."""

    def __init__(self, url: str):
        self.url = url
        self.engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.migrate()

    def migrate(self) -> None:
        """Upgrade to the newest schema. Several processes may start at once on one database:
        on PostgreSQL an advisory lock makes them migrate one after the other (DDL is
        transactional there: the next one finds the schema at head); elsewhere a migration
        that collides with another one is retried."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        for attempt in range(5):
            try:
                with self.engine.begin() as connection:
                    if self.engine.dialect.name == "postgresql":
                        connection.exec_driver_sql(
                            f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"
                        )
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                return
            except DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        return True

    def close(self) -> None:
        self.engine.dispose()

    def _session(self) -> Session:
        return self.sessions()

    # ----- tenants and keys --------------------------------------------------------------
    def ensure_tenant(self, tenant_id: str, name: str) -> None:
        try:
            with self._session() as session, session.begin():
                if session.get(Tenant, tenant_id) is None:
                    session.add(Tenant(id=tenant_id, name=name, created_at=time.time()))
        except IntegrityError:  # another process added it in between: it exists
            with self._session() as session:
                if session.get(Tenant, tenant_id) is None:
                    raise

    def create_key(self, name: str, tenant_id: str | None = None) -> tuple[str, ApiKey]:
        """A new key (returned once, stored hashed) for a new tenant or an existing one."""
        tenant_id = tenant_id or new_id("tenant")
        self.ensure_tenant(tenant_id, name)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id=new_id("key"),
            tenant_id=tenant_id,
            name=name,
            key_hash=hash_key(key),
            prefix=key[: len(KEY_PREFIX) + 6],
            created_at=time.time(),
        )
        with self._session() as session, session.begin():
            session.add(row)
        return key, row

    def list_keys(self) -> list[ApiKey]:
        with self._session() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def revoke_key(self, key_id_or_name: str) -> int:
        """Revoke keys by id, name or prefix; returns how many were revoked."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(ApiKey)
                .where(
                    (ApiKey.id == key_id_or_name)
                    | (ApiKey.name == key_id_or_name)
                    | (ApiKey.prefix == key_id_or_name)
                )
                .where(ApiKey.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            return rowcount(result)

    def find_key(self, key: str) -> ApiKey | None:
        with self._session() as session:
            query = select(ApiKey).where(ApiKey.key_hash == hash_key(canonical_key(key)))
            return session.scalar(query)

    # ----- runs --------------------------------------------------------------------------
    def add_run(self, run: Run) -> Run:
        with self._session() as session, session.begin():
            session.add(run)
        return run

    def get_run(self, run_id: str) -> Run | None:
        with self._session() as session:
            return session.get(Run, run_id)

    def existing_run(self, run_id: str) -> Run:
        """A run the caller knows is there (a recorded checkpoint's run: rows are never deleted,
        a run only changes status). LookupError when it is not: a broken invariant."""
        run = self.get_run(run_id)
        if run is None:
            raise LookupError(f"run {run_id} is not in the store, yet something refers to it")
        return run

    def list_runs(
        self, tenant_id: str | None = None, status: str = "active", session_id: str | None = None
    ) -> list[Run]:
        query = select(Run).where(Run.status == status).order_by(Run.created_at)
        for column, value in ((Run.tenant_id, tenant_id), (Run.session_id, session_id)):
            query = query if value is None else query.where(column == value)
        with self._session() as session:
            return list(session.scalars(query))

    def update_run(self, run_id: str, **values) -> None:
        values.setdefault("updated_at", time.time())
        with self._session() as session, session.begin():
            session.execute(update(Run).where(Run.id == run_id).values(**values))

    # ----- checkpoints -------------------------------------------------------------------
    def add_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        with self._session() as session, session.begin():
            session.add(checkpoint)
        return checkpoint

    def list_checkpoints(self, run_id: str, kind: str | None = None) -> list[Checkpoint]:
        query = select(Checkpoint).where(Checkpoint.run_id == run_id)
        if kind is not None:
            query = query.where(Checkpoint.kind == kind)
        with self._session() as session:
            return list(session.scalars(query.order_by(Checkpoint.step, Checkpoint.created_at)))

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint | None:
        with self._session() as session:
            return session.get(Checkpoint, checkpoint_id)

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        with self._session() as session, session.begin():
            session.execute(delete(Checkpoint).where(Checkpoint.id == checkpoint_id))

    def update_checkpoint(self, checkpoint_id: str, **values) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(Checkpoint).where(Checkpoint.id == checkpoint_id).values(**values)
            )

    def checkpoint_paths(self) -> set[str]:
        """The folder of every recorded checkpoint (all runs, all kinds)."""
        with self._session() as session:
            return set(session.scalars(select(Checkpoint.path)))

    def run_ids(self) -> set[str]:
        """Every run id, whatever its status."""
        with self._session() as session:
            return set(session.scalars(select(Run.id)))

    def clamp_expiry(self, latest_ttl: float) -> int:
        """Repair rows stored before TTLs were bounded: an expiry more than `latest_ttl`
        seconds after creation becomes exactly that (such dates broke every listing)."""
        with self._session() as session, session.begin():
            too_late = Checkpoint.expires_at > Checkpoint.created_at + latest_ttl
            return rowcount(
                session.execute(
                    update(Checkpoint)
                    .where(Checkpoint.expires_at.is_not(None), too_late)
                    .values(expires_at=Checkpoint.created_at + latest_ttl)
                )
            )

    def expired_checkpoints(self, now: float) -> list[Checkpoint]:
        query = select(Checkpoint).where(Checkpoint.expires_at.is_not(None))
        with self._session() as session:
            return list(session.scalars(query.where(Checkpoint.expires_at <= now)))

    # ----- tinker sessions and samplers --------------------------------------------------
    def add_tinker_session(self, row: TinkerSession) -> TinkerSession:
        with self._session() as session, session.begin():
            session.add(row)
        return row

    def get_tinker_session(self, session_id: str) -> TinkerSession | None:
        with self._session() as session:
            return session.get(TinkerSession, session_id)

    def list_tinker_sessions(self, tenant_id: str) -> list[TinkerSession]:
        query = select(TinkerSession).where(TinkerSession.tenant_id == tenant_id)
        with self._session() as session:
            return list(session.scalars(query.order_by(TinkerSession.created_at.desc())))

    def update_tinker_session(self, session_id: str, **values) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(TinkerSession).where(TinkerSession.id == session_id).values(**values)
            )

    def stale_tinker_sessions(self, heartbeat_before: float) -> list[str]:
        query = (
            select(TinkerSession.id)
            .where(TinkerSession.status == "active")
            .where(TinkerSession.last_heartbeat_at < heartbeat_before)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def expire_tinker_sessions(self, heartbeat_before: float) -> int:
        """Mark active sessions with no heartbeat since `heartbeat_before` expired."""
        with self._session() as session, session.begin():
            result = session.execute(
                update(TinkerSession)
                .where(TinkerSession.status == "active")
                .where(TinkerSession.last_heartbeat_at < heartbeat_before)
                .values(status="expired")
            )
            return rowcount(result)

    def add_sampler(self, row: Sampler) -> Sampler:
        with self._session() as session, session.begin():
            session.add(row)
        return row

    def get_sampler(self, sampler_id: str) -> Sampler | None:
        with self._session() as session:
            return session.get(Sampler, sampler_id)

    def list_samplers(self, session_id: str) -> list[Sampler]:
        query = select(Sampler).where(Sampler.session_id == session_id)
        with self._session() as session:
            return list(session.scalars(query.order_by(Sampler.created_at)))

    # ----- metrics -----------------------------------------------------------------------
    def add_metric(self, metric: Metric) -> None:
        with self._session() as session, session.begin():
            session.add(metric)

    def list_metrics(self, run_id: str) -> list[Metric]:
        query = select(Metric).where(Metric.run_id == run_id).order_by(Metric.step, Metric.id)
        with self._session() as session:
            return list(session.scalars(query))

    def metrics_after(self, run_id: str, after: int, limit: int = 5000) -> list[Metric]:
        """Metric rows of steps after `after` (the dashboard's polling cursor), oldest first."""
        query = (
            select(Metric)
            .where(Metric.run_id == run_id, Metric.step > after)
            .order_by(Metric.step, Metric.id)
            .limit(limit)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def latest_metric(self, run_id: str) -> Metric | None:
        query = select(Metric).where(Metric.run_id == run_id).order_by(Metric.id.desc()).limit(1)
        with self._session() as session:
            return session.scalar(query)

    def recent_requests(self, run_id: str, limit: int = 20) -> list[Request]:
        """A run's latest recorded requests, newest first."""
        query = (
            select(Request)
            .where(Request.run_id == run_id)
            .order_by(Request.created_at.desc())
            .limit(limit)
        )
        with self._session() as session:
            return list(session.scalars(query))

    def delete_metrics_after(self, run_id: str, step: int) -> None:
        with self._session() as session, session.begin():
            session.execute(delete(Metric).where(Metric.run_id == run_id, Metric.step > step))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
