"""Integration fixtures: a real uvicorn server on 127.0.0.1 with a real SQLite store, and keys."""

from __future__ import annotations

import pytest

from frontier_signal.service.settings import ServiceSettings
from frontier_signal.service.store import Store
from tests.conftest import TINY
from tests.live_server import LiveServer


def server_settings(data_dir, **overrides) -> ServiceSettings:
    values = {"data_dir": data_dir, "models": [TINY], "dtype": "float32", "device": "cpu"}
    return ServiceSettings(**(values | overrides))


def make_key(data_dir, name: str) -> str:
    store = Store(server_settings(data_dir).resolved_database_url())
    try:
        return store.create_key(name)[0]
    finally:
        store.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("server-data")


@pytest.fixture(scope="module")
def server(data_dir):
    live = LiveServer(server_settings(data_dir, checkpoint_every=2)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def alice(data_dir) -> str:
    return make_key(data_dir, "alice")


@pytest.fixture(scope="module")
def bob(data_dir) -> str:
    return make_key(data_dir, "bob")
