"""A client that leaves mid-stream stops its generation, on every streaming face (OpenAI chat
and completions, Signal `sample/stream`): the scheduler counts it cancelled and frees the engine
for the next caller."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TINY
from tests.reliability.admission_support import make_key, scheduler_counts, start, wait_until

LONG = 6000  # tokens: many seconds of decoding if nobody stopped it


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cancel-data")
    server = start(data_dir)
    keys = {name: make_key(data_dir, name) for name in ("alice", "bob")}
    headers = {"Authorization": f"Bearer {keys['alice']}"}
    created = httpx.post(
        f"{server.base_url}/v1/runs", json={"base_model": TINY, "lora_r": 4}, headers=headers
    )
    assert created.status_code == 200, created.text
    yield server, keys, created.json()["run_id"]
    server.stop()


def _streams(run_id: str) -> dict[str, tuple[str, dict]]:
    long = {"max_tokens": LONG, "temperature": 0}
    openai = long | {"stream": True, "ignore_eos": True}
    return {
        "openai-chat": (
            "/v1/chat/completions",
            {"model": TINY, "messages": [{"role": "user", "content": "Hi"}]} | openai,
        ),
        "openai-completions": (
            "/v1/completions",
            {"model": TINY, "prompt": "Once"} | openai,
        ),
        "signal": (f"/v1/runs/{run_id}/sample/stream", {"prompts": ["Once"], "seed": 1} | long),
    }


def _wait_for_one_cancel(base_url: str, before: int) -> None:
    """Until nothing generates and exactly one more generation counts as cancelled."""
    counts = wait_until(
        lambda: (
            (c := scheduler_counts(base_url))["generating"] == 0
            and c["cancelled_generations"] > before
            and c
        ),
        "the generation to stop",
    )
    assert counts["cancelled_generations"] == before + 1


@pytest.mark.parametrize("face", ["openai-chat", "openai-completions", "signal"])
def test_a_dropped_stream_stops_its_generation(live, face):
    server, keys, run_id = live
    path, body = _streams(run_id)[face]
    before = scheduler_counts(server.base_url)["cancelled_generations"]
    headers = {"Authorization": f"Bearer {keys['alice']}"}
    with (
        httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http,
        http.stream("POST", path, json=body) as answer,
    ):
        assert answer.status_code == 200
        events = 0
        for line in answer.iter_lines():
            events += line.startswith("data:")
            if events >= 4:
                break  # leave mid-stream: the connection closes here
    _wait_for_one_cancel(server.base_url, before)
    # The engine is free: another tenant's request is answered.
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {keys['bob']}"}, timeout=60
    ) as bob:
        short = bob.post("/v1/completions", json={"model": TINY, "prompt": "Hi", "max_tokens": 2})
    assert short.status_code == 200, short.text


@pytest.mark.parametrize("face", ["openai-chat", "openai-completions", "signal"])
def test_a_client_that_gives_up_on_a_plain_request_stops_its_generation(live, face):
    """The same without `stream`: a client that times out and closes the connection cancels
    the generation (server/disconnect.py). A fuzzed request nobody waited for any more used to
    keep the engine busy for minutes, and the requests behind it timed out."""
    server, keys, run_id = live
    path, body = _streams(run_id)[face]
    body = {k: v for k, v in body.items() if k != "stream"}
    path = path.removesuffix("/stream")
    before = scheduler_counts(server.base_url)["cancelled_generations"]
    headers = {"Authorization": f"Bearer {keys['alice']}"}
    with (
        httpx.Client(base_url=server.base_url, headers=headers, timeout=1.5) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post(path, json=body)  # gives up after 1.5 s: the connection closes
    _wait_for_one_cancel(server.base_url, before)
