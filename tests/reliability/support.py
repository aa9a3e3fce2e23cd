"""Shared pieces of the hardening tests (fixtures in conftest.py): raw HTTP helpers.

The tests talk raw HTTP (httpx) on purpose: they send what a careless or hostile client sends,
which the SDKs would refuse before it left the machine.
"""

from __future__ import annotations

import time

import httpx

from tests.conftest import TINY


def connect(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}", "X-API-Key": key}, timeout=60
    )


def new_run(http: httpx.Client, **config) -> str:
    answer = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4, **config})
    assert answer.status_code == 200, answer.text
    return answer.json()["run_id"]


def settle(http: httpx.Client, answer: httpx.Response) -> dict:
    """Poll a Tinker future to its result (bounded: 60 s)."""
    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    for _ in range(600):
        result = http.post("/api/v1/retrieve_future", json={"request_id": request_id})
        body = result.json()
        if result.status_code != 200 or body.get("type") != "try_again":
            return body
        time.sleep(0.1)
    raise TimeoutError(request_id)


def new_model(http: httpx.Client) -> str:
    created = settle(http, http.post("/api/v1/create_model", json={"base_model": TINY}))
    return created["model_id"]


def assert_refused(answer: httpx.Response, *words: str) -> dict:
    """A 4xx with the error envelope whose message holds every word."""
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    body = answer.json()
    message = body["error"]["message"] if "error" in body else body["detail"]
    for word in words:
        assert word in message, (word, message)
    return body
