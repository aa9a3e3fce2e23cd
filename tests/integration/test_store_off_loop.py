"""The store runs off the event loop: while a request waits on a locked database, requests that
need no store (and their handlers) still answer at once.

A second SQLite connection takes the database's exclusive lock (`locking_mode=EXCLUSIVE` + a
write: in WAL mode that blocks readers too) and holds it for HOLD seconds; the server's own
connections wait on it (busy timeout 5 s). On PostgreSQL (tests/pg.py), a second connection holds
`runs` in ACCESS EXCLUSIVE mode: every store call is a network round trip that can wait the same
way (a lock, a slow server), and none of them may stall the loop. Both fail on the code before
docs/server.md's Store rule (`/health` waited the whole lock).
"""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine

from frontier_signal.service.store import Store
from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer

HOLD = 2.5  # seconds the database stays locked
PROMPT = 1.0  # a request that needs no store answers within this, locked database or not


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("off-loop")
    key = make_key(data_dir, "alice")
    settings = server_settings(data_dir, models=[])  # no model: only the store matters here
    with LiveServer(settings) as server:
        yield server, key, settings.resolved_database_url().removeprefix("sqlite:///")


def _lock_database(server, path: str, release: threading.Event) -> threading.Thread:
    """Hold the database's exclusive lock until `release` is set (or HOLD * 3 s pass). Exclusive
    locking mode needs no other connection open: the server's idle pooled ones are closed first
    (it opens new ones on its next call, which then wait on the lock)."""
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    for _ in range(20):  # bounded: a background task of the server may hold a connection
        server.state.store.engine.dispose()
        try:
            locker.execute("BEGIN EXCLUSIVE")
            locker.execute("UPDATE tenants SET name = name")  # a write: the lock is taken now
            break
        except sqlite3.OperationalError:
            locker.execute("ROLLBACK") if locker.in_transaction else None
            time.sleep(0.05)
    else:
        raise RuntimeError("could not lock the database")

    def hold() -> None:
        release.wait(HOLD * 3)
        locker.execute("COMMIT")
        locker.execute("PRAGMA locking_mode=NORMAL")
        locker.execute("SELECT 1 FROM tenants")  # NORMAL mode drops the lock on the next read
        locker.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def _get_later(url: str, key: str, out: dict, name: str) -> threading.Thread:
    def call() -> None:
        started = time.monotonic()
        response = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        out[name] = (response.status_code, time.monotonic() - started, time.monotonic())

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_requests_without_store_answer_while_the_database_is_locked(live):
    server, key, path = live
    _check_loop_stays_free(server, key, lambda release: _lock_database(server, path, release))


@pytest.fixture(scope="module")
def live_postgres(tmp_path_factory, postgres):
    url = postgres.database()
    store = Store(url)
    try:
        key = store.create_key("alice")[0]
    finally:
        store.close()
    settings = server_settings(tmp_path_factory.mktemp("off-loop-pg"), models=[], database_url=url)
    with LiveServer(settings) as server:
        yield server, key, url


def _lock_runs_table(url: str, release: threading.Event) -> threading.Thread:
    """PostgreSQL: hold `runs` in ACCESS EXCLUSIVE mode (even readers wait) until `release`."""
    engine = create_engine(url)
    connection = engine.connect()
    transaction = connection.begin()
    connection.exec_driver_sql("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")

    def hold() -> None:
        release.wait(HOLD * 3)
        transaction.rollback()
        connection.close()
        engine.dispose()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_requests_without_store_answer_while_postgres_locks_the_runs(live_postgres):
    server, key, url = live_postgres
    _check_loop_stays_free(server, key, lambda release: _lock_runs_table(url, release))


def _check_loop_stays_free(server, key: str, lock) -> None:
    """While `lock(release)` holds the database, two store-bound requests wait on it and the
    requests that need no store answer within PROMPT; then the waiting ones answer normally."""
    base = server.base_url
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base}/v1/runs", headers=auth).status_code == 200
    assert httpx.get(f"{base}/openapi.json").status_code == 200  # built once, then cached
    release = threading.Event()
    locker = lock(release)
    timer = threading.Timer(HOLD, release.set)
    timer.start()
    waiting: dict = {}
    calls = [
        _get_later(f"{base}/v1/runs", key, waiting, "list_runs"),
        _get_later(f"{base}/v1/runs/run_missing", key, waiting, "get_run"),
    ]
    try:
        time.sleep(0.3)  # both store-bound requests are now waiting on the lock
        with httpx.Client(base_url=base, timeout=30) as http:
            for path_ in ("/health", "/openapi.json", "/health"):
                started = time.monotonic()
                assert http.get(path_).status_code == 200
                elapsed = time.monotonic() - started
                assert elapsed < PROMPT, f"{path_} took {elapsed:.2f} s behind a locked store"
        assert not release.is_set() and not waiting, "the store was released too early to tell"
    finally:
        for thread in calls:
            thread.join(30)
        release.set()
        timer.cancel()
        locker.join(10)
    # The store-bound requests waited for the lock and then answered normally.
    assert waiting["list_runs"][0] == 200 and waiting["get_run"][0] == 404
    assert min(took for _, took, _ in waiting.values()) > HOLD - 0.5
