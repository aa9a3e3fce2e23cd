"""Integration fixtures: a real uvicorn server on 127.0.0.1 with a real SQLite store, and keys."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from frontier_signal.service.settings import ServiceSettings
from frontier_signal.service.store import Store
from tests.conftest import TINY
from tests.integration.sdk_fixtures import wait_ready
from tests.live_server import LiveServer

# anyio imports its file module lazily (FileResponse's first use), in the server's thread. pytest
# rewrites anyio's modules (it is a plugin) and CPython 3.11's parser is not thread-safe: import
# it here, in the main thread, before any server starts.
anyio.open_file  # noqa: B018


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


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from frontier_signal.backend import models

    return models.load_tokenizer(TINY)


@pytest.fixture(scope="module")
def hpcai_client(server, alice):
    """The real hpcai SDK's ServiceClient on the live server, as alice."""
    hpcai = pytest.importorskip("hpcai")
    with pytest.MonkeyPatch.context() as patch:
        # HPCAI_API_KEY would override api_key= (a quirk of hpcai 0.2.0).
        patch.delenv("HPCAI_API_KEY", raising=False)
        patch.delenv("HPCAI_BASE_URL", raising=False)
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for _ in range(600):  # bounded: 60 s
                if http.get("/ready").status_code == 200:
                    break
                time.sleep(0.1)
        yield hpcai.ServiceClient(base_url=server.base_url, api_key=alice)


@pytest.fixture(scope="module")
def oai(server, alice):
    """The official `openai` SDK on the live server's OpenAI-compatible face, as alice."""
    openai = pytest.importorskip("openai")
    wait_ready(server.base_url)
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=alice, max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oai_http(server, alice):
    """Raw HTTP as alice, for what the openai SDK hides (the SSE bytes, the Signal routes)."""
    wait_ready(server.base_url)
    headers = {"Authorization": f"Bearer {alice}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=300) as http:
        yield http
