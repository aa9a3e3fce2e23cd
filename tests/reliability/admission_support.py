"""Shared pieces of the admission, fairness and cancellation tests: a live server with its own
settings, keys, and the server's own view (RSS, scheduler counts)."""

from __future__ import annotations

import time

import httpx

from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer

__all__ = ["LiveServer", "make_key", "server_settings", "start", "wait_until", "scheduler_counts"]


def start(data_dir, **overrides) -> LiveServer:
    live = LiveServer(server_settings(data_dir, **overrides)).start()
    live.wait_ready()
    return live


def wait_until(check, what: str, timeout: float = 60.0, every: float = 0.02):
    """Poll `check()` until it is truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def scheduler_counts(base_url: str) -> dict:
    return httpx.get(f"{base_url}/ready", timeout=10).json()["scheduler"]
