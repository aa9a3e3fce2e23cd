"""The `requests` table's SQL: the ledger of Signal requests and Tinker futures (what the
store's users see through service/ledger.py). A mixin of `Store`, which gives it `_session` and
`engine`; one short transaction per method, as in store.py. Idempotency is the
`(tenant_id, idempotency_key)` unique constraint: of concurrent inserts of one key, in any
process, exactly one wins."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from frontier_signal.service.owners import owner_alive, process_owner, same_host
from frontier_signal.service.tables import Request


class RequestRows:
    """`requests` rows: begin (once per key), finish, find, prune, forget."""

    engine: Engine

    def _session(self) -> Session:  # pragma: no cover - provided by Store
        raise NotImplementedError

    def begin_request(self, request: Request) -> tuple[Request, bool]:
        """Record a request; with an idempotency key already used, return that one instead.

        The (tenant, key) unique constraint decides between concurrent writers, in this process
        or another: one insert wins, the others read the winner's row. Should that row vanish
        in between (its request was refused and forgotten), the insert is tried again.

        Returns:
            (the row, True when it is new).
        """
        if request.owner is None:
            request.owner = process_owner()
        for _ in range(5):
            try:
                with self._session() as session, session.begin():
                    session.add(request)
                return request, True
            except IntegrityError:
                if request.idempotency_key is None:
                    raise  # a constraint other than the key
                with self._session() as session:
                    existing = session.scalar(
                        select(Request).where(
                            Request.tenant_id == request.tenant_id,
                            Request.idempotency_key == request.idempotency_key,
                        )
                    )
                if existing is not None:
                    return existing, False
                request = _fresh_copy(request)
        raise RuntimeError("the idempotency key kept changing hands; retry the request")

    def find_request_by_key(self, idempotency_key: str) -> Request | None:
        with self._session() as session:
            query = select(Request).where(Request.idempotency_key == idempotency_key)
            return session.scalar(query.limit(1))

    def finish_request(
        self,
        request_id: str,
        result: dict | None = None,
        error: dict | None = None,
        finished_at: float | None = None,
    ) -> None:
        with self._session() as session, session.begin():
            session.execute(
                update(Request)
                .where(Request.id == request_id)
                .values(
                    status="failed" if error is not None else "done",
                    result=result,
                    error=error,
                    finished_at=time.time() if finished_at is None else finished_at,
                )
            )

    def delete_request(self, request_id: str) -> None:
        with self._session() as session, session.begin():
            session.execute(delete(Request).where(Request.id == request_id))

    def get_request(self, request_id: str) -> Request | None:
        with self._session() as session:
            return session.get(Request, request_id)

    def prune_requests(
        self, kind_prefix: str, finished_before: float, *, except_prefix: str | None = None
    ) -> int:
        """Delete finished requests of kinds starting with `kind_prefix` (with their results),
        but not those of kinds starting with `except_prefix`; pending ones always stay."""
        conditions = [
            Request.kind.startswith(kind_prefix),
            Request.status != "pending",
            Request.finished_at < finished_before,
        ]
        if except_prefix is not None:
            conditions.append(~Request.kind.startswith(except_prefix))
        with self._session() as session, session.begin():
            return rowcount(session.execute(delete(Request).where(*conditions)))

    def forget_results_since(self, run_id: str, since: float) -> int:
        """Drop the stored results of a run's operations begun after `since` (the state the
        run resumed from after a crash): a retry with their key runs afresh instead of
        replaying an effect that the rollback undid."""
        with self._session() as session, session.begin():
            return rowcount(
                session.execute(
                    delete(Request).where(Request.run_id == run_id, Request.created_at > since)
                )
            )

    def forget_unfinished_requests(self) -> int:
        """At start: requests left pending by a process that died never finish; drop them so a
        retry with the same idempotency key runs afresh. Those of live processes (another
        server on the same database) stay; on a SQLite file, which only one host can share,
        so do those of other host names (a container's name changes at each start)."""
        sqlite = self.engine.dialect.name == "sqlite"
        with self._session() as session, session.begin():
            pending = session.execute(
                select(Request.id, Request.owner).where(Request.status == "pending")
            ).all()
            dead = [
                request_id
                for request_id, owner in pending
                if not owner_alive(owner) or (sqlite and not same_host(owner))
            ]
            if not dead:
                return 0
            return rowcount(session.execute(delete(Request).where(Request.id.in_(dead))))


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE matched. `Session.execute` is typed to return a plain
    `Result`; for DML statements it is a `CursorResult`, the one that has `rowcount`."""
    return cast("CursorResult[Any]", result).rowcount


def _fresh_copy(row: Request) -> Request:
    """A transient copy of a row whose insert failed (the failed one stays bound to its
    session's identity map)."""
    columns = Request.__table__.columns.keys()
    return Request(**{name: getattr(row, name) for name in columns})
