"""Tinker sessions on a server of their own (expiry moves the server's clock for every
session): heartbeats keep a session alive; a silent one expires, its heartbeat answers 410 and
it can no longer make models. No real-time waits: the session service's clock is moved."""

from __future__ import annotations

import httpx

from tests.conftest import TINY


def test_silent_sessions_expire_and_their_heartbeat_is_gone(server, alice):
    sessions = server.state.sessions
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": alice}) as http:
        session_id = http.post("/api/v1/create_session", json={"sdk_version": "t"}).json()[
            "session_id"
        ]
        assert http.post("/api/v1/session_heartbeat", json={"session_id": session_id}).is_success
        real_clock = sessions.clock
        sessions.clock = lambda: real_clock() + sessions.heartbeat_timeout + 1
        try:
            gone = http.post("/api/v1/session_heartbeat", json={"session_id": session_id})
        finally:
            sessions.clock = real_clock
        assert gone.status_code == 410
        assert http.get(f"/api/v1/sessions/{session_id}").json()["status"] == "expired"
        refused = http.post(
            "/api/v1/create_model",
            json={"base_model": TINY, "session_id": session_id, "model_seq_id": 0},
        )
        assert refused.status_code == 400 and "expired" in refused.json()["error"]["message"]
