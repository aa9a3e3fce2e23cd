"""Fixtures of the hardening tests: one live tiny-model server per module, two tenants' raw
HTTP clients (names prefixed so they never shadow other suites' fixtures)."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer
from tests.reliability.support import connect


@pytest.fixture(scope="module")
def hard_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hardening-data")


@pytest.fixture(scope="module")
def hard_server(hard_data_dir):
    live = LiveServer(server_settings(hard_data_dir, checkpoint_every=0)).start()
    live.wait_ready()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def alice_http(hard_data_dir, hard_server) -> httpx.Client:
    with connect(hard_server.base_url, make_key(hard_data_dir, "alice")) as http:
        yield http


@pytest.fixture(scope="module")
def bob_http(hard_data_dir, hard_server) -> httpx.Client:
    with connect(hard_server.base_url, make_key(hard_data_dir, "bob")) as http:
        yield http
