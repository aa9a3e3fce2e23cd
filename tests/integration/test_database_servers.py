"""Real `frontier-signal serve` processes on each database (SQLite and a real PostgreSQL,
tests/pg.py), driven by our SDK: a run's whole life across a restart; and, on PostgreSQL, two
server processes on one database creating runs, futures and checkpoints at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from frontier_signal import SignalClient
from frontier_signal.service.store import Store
from tests.conftest import TINY
from tests.live_server import ServerProcess

TEXT = {"text": "The capital of Zorbia is Quellmar, a city of bridges."}
GREEDY = {"max_tokens": 6, "temperature": 0.0}
RUN = {"base_model": TINY, "lora_r": 4, "seed": 3, "learning_rate": 0.02}


def new_key(database_url: str) -> str:
    store = Store(database_url)
    try:
        return store.create_key("alice")[0]
    finally:
        store.close()


def test_a_run_lives_across_a_restart_on_each_database(tmp_path, database_url):
    key = new_key(database_url)
    serve = ("--database-url", database_url)
    with ServerProcess(tmp_path, *serve) as server, SignalClient(key, server.base_url) as client:
        run = client.create_run(TINY, lora_r=4, seed=3, learning_rate=0.02, bf16=False)
        losses = []
        for _ in range(3):
            losses.append(run.forward_backward([TEXT])["loss"])
            run.optim_step()
        assert losses[-1] < losses[0]
        before = run.sample(["The capital of Zorbia is"], **GREEDY)["outputs"]
        saved = run.save_state()
        assert saved["checkpoint_id"]
    with ServerProcess(tmp_path, *serve) as server, SignalClient(key, server.base_url) as client:
        run = client.get_run(run.run_id)
        assert run.get_status()["step"] == 3  # loaded from its checkpoint
        ids = [c["checkpoint_id"] for c in client.list_checkpoints(run.run_id)]
        assert saved["checkpoint_id"] in ids
        assert [m["step"] for m in run.get_metrics()] == [1, 2, 3]
        assert run.sample(["The capital of Zorbia is"], **GREEDY)["outputs"] == before
        run.forward_backward([TEXT])
        assert run.optim_step()["step"] == 4


@pytest.fixture
def two_servers(tmp_path, postgres):
    """Two server processes (own data folders) on one PostgreSQL database, and a key."""
    url = postgres.database()
    key = new_key(url)
    first = ServerProcess(tmp_path / "a", "--database-url", url).start()
    try:
        second = ServerProcess(tmp_path / "b", "--database-url", url).start()
    except BaseException:
        first.stop()
        raise
    yield first, second, key
    second.stop()
    first.stop()


def post_at_once(targets: list[tuple[str, str, dict, dict]], key: str) -> list[httpx.Response]:
    """POST every (base_url, path, json, headers) at the same moment, one thread each."""
    barrier = threading.Barrier(len(targets))

    def post(target: tuple[str, str, dict, dict]) -> httpx.Response:
        base_url, path, body, headers = target
        with httpx.Client(base_url=base_url, timeout=120) as http:
            barrier.wait(30)
            auth = {"Authorization": f"Bearer {key}", "X-API-Key": key}
            return http.post(path, json=body, headers=auth | headers)

    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(post, targets))


def poll_future(base_url: str, key: str, request_id: str) -> str:
    """The model id a create_model future answers, polled through `base_url` (bounded)."""
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=60) as http:
        for _ in range(100):
            result = http.post("/api/v1/retrieve_future", json={"request_id": request_id}).json()
            if result.get("type") != "try_again":
                return result["model_id"]
    raise AssertionError(f"the future {request_id} never finished")


def test_two_processes_on_one_postgres_create_runs_futures_and_checkpoints_at_once(two_servers):
    first, second, key = two_servers
    servers = [first.base_url, second.base_url]

    # Runs, created on both at once: all land, all ids differ, both processes list them all.
    answers = post_at_once([(servers[i % 2], "/v1/runs", RUN, {}) for i in range(6)], key)
    assert [a.status_code for a in answers] == [200] * 6
    created = [a.json()["run_id"] for a in answers]
    assert len(set(created)) == 6

    # One Idempotency-Key sent to both processes at once: one run, both get its id.
    for attempt in range(3):
        headers = {"Idempotency-Key": f"create-{attempt}"}
        pair = post_at_once([(url, "/v1/runs", RUN, headers) for url in servers], key)
        assert [a.status_code for a in pair] == [200, 200], [a.text for a in pair]
        assert pair[0].json()["run_id"] == pair[1].json()["run_id"]
        created.append(pair[0].json()["run_id"])
    for url in servers:
        with SignalClient(key, url) as client:
            assert sorted(r["run_id"] for r in client.list_runs()) == sorted(set(created))

    # A Tinker future with one X-Idempotency-Key on both: one future, one model.
    body = {"base_model": TINY, "lora_config": {"rank": 4}}
    headers = {"X-Idempotency-Key": "model-1"}
    pair = post_at_once([(url, "/api/v1/create_model", body, headers) for url in servers], key)
    assert [a.status_code for a in pair] == [200, 200], [a.text for a in pair]
    request_ids = {a.json()["request_id"] for a in pair}
    assert len(request_ids) == 1
    model_ids = {poll_future(url, key, request_ids.copy().pop()) for url in servers}
    assert len(model_ids) == 1
    with SignalClient(key, first.base_url) as client:
        assert len(client.list_runs()) == len(set(created)) + 1

    # Checkpoints saved at once through both processes, each of a run it holds.
    holders = {url: created[i] for i, url in enumerate(servers)}  # run i was created on i % 2
    for url, run_id in holders.items():
        with SignalClient(key, url) as client:
            client.forward_backward(run_id, [TEXT])
            client.optim_step(run_id)
    saves = post_at_once(
        [(url, f"/v1/runs/{run_id}/save_state", {}, {}) for url, run_id in holders.items()] * 2,
        key,
    )
    assert [s.status_code for s in saves] == [200] * 4, [s.text for s in saves]
    assert len({s.json()["checkpoint_id"] for s in saves}) == 4
    with SignalClient(key, second.base_url) as client:  # the other process sees them all
        for run_id in holders.values():
            assert len(client.list_checkpoints(run_id)) >= 2
