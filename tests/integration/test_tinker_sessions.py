"""Tinker sessions on a server of their own (expiry moves the server's clock for every
session): heartbeats keep a session alive; a silent one expires, its heartbeat answers 410 and
it can no longer make models. No real-time waits: the session service's clock is moved."""

from __future__ import annotations

import asyncio

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


def test_the_background_sweep_expires_a_silent_session_and_unloads_its_models(server, alice):
    sessions, expiry = server.state.sessions, server.state.session_expiry
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": alice}) as http:
        session_id = http.post("/api/v1/create_session", json={"sdk_version": "t"}).json()[
            "session_id"
        ]
        created = http.post(
            "/api/v1/create_model",
            json={"base_model": TINY, "session_id": session_id, "model_seq_id": 0},
        ).json()
        model_id = created["model_id"]
        for _ in range(600):  # bounded: the model is made in the background
            polled = http.post(
                "/api/v1/retrieve_future", json={"request_id": created["request_id"]}
            )
            if polled.json().get("type") != "try_again":
                break
        assert polled.json()["model_id"] == model_id
        assert model_id in server.state.worker.info().runs
        real_clock = sessions.clock
        sessions.clock = lambda: real_clock() + sessions.heartbeat_timeout + 1
        try:  # no traffic at all: the sweep alone finds the session silent
            swept = asyncio.run_coroutine_threadsafe(expiry.sweep(), expiry.loop).result(120)
        finally:
            sessions.clock = real_clock
        assert session_id in swept
        assert http.get(f"/api/v1/sessions/{session_id}").json()["status"] == "expired"
        assert model_id not in server.state.worker.info().runs
