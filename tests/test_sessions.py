"""Session expiry rules (service/sessions.py) on a real SQLite store with a moved clock: a late
heartbeat is refused on its own and handed to the next sweep, which unloads the session's
models."""

from __future__ import annotations

import pytest

from frontier_signal.service.errors import Gone
from frontier_signal.service.sessions import SessionService
from frontier_signal.service.store import Store


@pytest.fixture
def sessions(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.ensure_tenant("alice", "alice")
    now = [1000.0]
    service = SessionService(store, heartbeat_timeout=60, clock=lambda: now[0])
    yield service, now
    store.close()


def test_a_late_heartbeat_is_gone_and_handed_to_the_next_sweep(sessions):
    service, now = sessions
    row = service.create("alice", [], {}, "t")
    now[0] += 30
    service.heartbeat("alice", row.id)  # in time: alive
    now[0] += 61
    with pytest.raises(Gone):
        service.heartbeat("alice", row.id)
    assert service.get("alice", row.id).status == "expired"
    assert service.expire() == [row.id]  # the sweep unloads its models once
    assert service.expire() == []


def test_the_sweep_expires_silent_sessions_only(sessions):
    service, now = sessions
    silent = service.create("alice", [], {}, "t")
    now[0] += 40
    talking = service.create("alice", [], {}, "t")
    now[0] += 30  # silent: 70 s; talking: 30 s
    assert service.expire() == [silent.id]
    assert service.get("alice", talking.id).status == "active"
