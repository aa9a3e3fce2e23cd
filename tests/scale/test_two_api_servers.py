"""A stateless API tier (docs/scale-out.md): two `frontier-signal serve` processes on one real
PostgreSQL (tests/pg.py), one data folder (the shared checkpoint storage) and one Ray instance
(`ray start --head`), sharing its two named engine workers: a run created through one is
trained and sampled through the other, exactly as in one process."""

from __future__ import annotations

import pytest

from frontier_signal import SignalClient
from frontier_signal.service.store import Store
from tests.live_server import ServerProcess
from tests.scale.conftest import START_S, server_env, wait_workers
from tests.scale.test_ray_workers import PROMPT, RUN, TEXT, OneProcess


def new_key(database_url: str) -> str:
    store = Store(database_url)
    try:
        return store.create_key("alice")[0]
    finally:
        store.close()


@pytest.fixture
def two_servers(tmp_path, ray_head, postgres):
    url = postgres.database()
    key = new_key(url)
    args = ("--ray", ray_head, "--workers", "2", "--database-url", url)
    first = ServerProcess(tmp_path, *args, env=server_env()).start(START_S)
    try:
        second = ServerProcess(tmp_path, *args, env=server_env()).start(START_S)
    except BaseException:
        first.stop()
        raise
    yield first, second, key
    second.stop(120)
    first.stop(120)


def test_a_run_created_through_one_api_process_trains_and_samples_through_another(two_servers):
    first, second, key = two_servers
    with SignalClient(key, first.base_url) as a, SignalClient(key, second.base_url) as b:
        run = a.create_run(seed=9, **RUN)
        same = OneProcess(run.get_status()["config"])
        losses = [run.forward_backward([TEXT])["loss"]]
        run.optim_step()
        there = b.get_run(run.run_id)
        losses.append(there.forward_backward([TEXT])["loss"])
        assert there.optim_step()["step"] == 2
        losses.append(run.forward_backward([TEXT])["loss"])
        run.optim_step()
        assert losses == pytest.approx([same.step() for _ in range(3)], rel=1e-4)
        assert run.get_status()["step"] == there.get_status()["step"] == 3
        greedy = {"max_tokens": 6, "temperature": 0.0}
        answers = [c.sample(run.run_id, [PROMPT], **greedy)["outputs"] for c in (a, b)]
        assert answers[0] == answers[1] == [same.sample(6)]
    seen = [wait_workers(server.base_url, 2) for server in (first, second)]
    pids = [sorted(w["pid"] for w in listed) for listed in seen]
    assert pids[0] == pids[1]  # the same two named actors
    holders = [[w["id"] for w in listed if run.run_id in w["runs"]] for listed in seen]
    assert holders[0] == holders[1] and len(holders[0]) == 1  # one worker holds it, for both
