"""Per-tenant limits answer 429 with Retry-After, never a 500; other tenants are unaffected."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import TINY
from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer

TEXT = {"text": "The capital of Zorbia is Quellmar."}


def test_a_tenant_over_its_in_flight_limit_gets_429_with_retry_after(tmp_path):
    alice, bob = make_key(tmp_path, "alice"), make_key(tmp_path, "bob")
    live = LiveServer(server_settings(tmp_path, max_queued_per_tenant=1)).start()
    try:
        clients = {
            name: httpx.Client(
                base_url=live.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            for name, key in (("alice", alice), ("bob", bob))
        }
        runs = {
            name: http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4}).json()["run_id"]
            for name, http in clients.items()
        }
        gate = threading.Event()
        busy = live.state.worker.scheduler.call("", lambda engine: gate.wait(30))  # hold the engine

        def train(name: str) -> httpx.Response:
            url = f"/v1/runs/{runs[name]}/forward_backward"
            return clients[name].post(url, json={"batch": [TEXT]})

        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(train, "alice")
            tenant = live.state.store.find_key(alice).tenant_id
            for _ in range(3000):  # bounded: until alice's first call is in flight
                if live.state.requests.in_flight(tenant) == 1:
                    break
                time.sleep(0.01)
            second = train("alice")
            bob_call = pool.submit(train, "bob")
            assert second.status_code == 429, second.text
            assert int(second.headers["Retry-After"]) >= 1
            assert "limit" in second.json()["error"]["message"]
            gate.set()
            assert first.result(60).status_code == 200
            assert bob_call.result(60).status_code == 200
        busy.result(60)
        assert train("alice").status_code == 200
    finally:
        live.stop()
