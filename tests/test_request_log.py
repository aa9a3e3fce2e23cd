"""RequestLog pruning on a real store (SQLite and PostgreSQL), without a server: finished Signal
requests older than the retention go (a replay then runs afresh), recent and in-flight ones stay
(a replay returns the stored result), and the Tinker face's futures in the same table are not
touched."""

from __future__ import annotations

import asyncio

import pytest

from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.requests import RequestLog
from frontier_signal.service.store import Store
from frontier_signal.service.tables import Request


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    store.ensure_tenant("alice", "alice")
    yield store
    store.close()


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_old_finished_requests_are_pruned_recent_and_in_flight_ones_stay(store):
    clock = Clock()
    log = RequestLog(store, 8, keep_seconds=100, clock=clock)
    calls: list[str] = []

    def counting(name: str, result: dict):
        async def operation():
            calls.append(name)
            return result

        return operation

    async def flow():
        start = clock.now
        assert await log.run(
            "r-old", "alice", None, "create_run", {"a": 1}, "k-old", counting("old", {"v": "old"})
        ) == {"v": "old"}

        async def refused():
            raise InvalidRequest("bad")

        with pytest.raises(InvalidRequest):
            await log.run("r-failed", "alice", None, "create_run", {"a": 2}, "k-failed", refused)

        release = asyncio.Event()

        async def slow():
            await release.wait()
            return {"v": "slow"}

        in_flight = asyncio.ensure_future(
            log.run("r-slow", "alice", "run_1", "optim_step", {}, "k-slow", slow)
        )
        await asyncio.sleep(0)
        assert store.get_request("r-slow").status == "pending"

        # A Tinker future, finished as long ago: FutureService prunes those, not the log.
        store.begin_request(
            Request(
                id="fut-old",
                tenant_id="alice",
                kind="tinker.sample",
                status="pending",
                fingerprint="x",
                created_at=start,
            )
        )
        store.finish_request("fut-old", result={}, finished_at=start)

        clock.now = start + 90
        await log.run(
            "r-recent",
            "alice",
            None,
            "create_run",
            {"a": 3},
            "k-recent",
            counting("recent", {"v": "recent"}),
        )
        await log.pruning
        assert store.get_request("r-old") is not None  # 90 s old: within the retention

        clock.now = start + 150  # r-old, r-failed: 150 s old; r-recent: 60 s
        await log.run(
            "r-new", "alice", None, "create_run", {"a": 4}, "k-new", counting("new", {"v": "new"})
        )
        await log.pruning
        assert store.get_request("r-old") is None
        assert store.get_request("r-failed") is None
        assert store.get_request("r-recent").status == "done"
        assert store.get_request("r-slow").status == "pending"
        assert store.get_request("r-new").status == "done"
        assert store.get_request("fut-old") is not None

        # A replay within the retention returns the stored result without running again ...
        again = await log.run(
            "r-recent-2",
            "alice",
            None,
            "create_run",
            {"a": 3},
            "k-recent",
            counting("recent again", {"v": "other"}),
        )
        assert again == {"v": "recent"}
        # ... one after it runs afresh.
        afresh = await log.run(
            "r-old-2",
            "alice",
            None,
            "create_run",
            {"a": 1},
            "k-old",
            counting("old again", {"v": "old, afresh"}),
        )
        assert afresh == {"v": "old, afresh"}
        assert calls == ["old", "recent", "new", "old again"]

        # The in-flight request was kept: it finishes, is recorded, and its replay returns it.
        release.set()
        assert await in_flight == {"v": "slow"}
        replay = await log.run("r-slow-2", "alice", "run_1", "optim_step", {}, "k-slow", slow)
        assert replay == {"v": "slow"}
        await log.close()

    asyncio.run(flow())


def test_a_prune_runs_at_most_every_tenth_of_the_retention_and_the_first_request_prunes(store):
    clock = Clock()
    start = clock.now
    store.begin_request(
        Request(
            id="left-over",
            tenant_id="alice",
            kind="create_run",
            status="pending",
            fingerprint="x",
            created_at=start - 500,
        )
    )
    store.finish_request("left-over", result={}, finished_at=start - 500)
    log = RequestLog(store, 8, keep_seconds=100, clock=clock)

    async def answer():
        return {}

    async def flow():
        # A restarted server: its first request prunes what the last process left.
        await log.run("r-1", "alice", None, "create_run", {"i": 1}, None, answer)
        first = log.pruning
        assert await first == 1
        assert store.get_request("left-over") is None

        clock.now = start + 9  # less than a tenth of 100 s later: no new prune
        await log.run("r-2", "alice", None, "create_run", {"i": 2}, None, answer)
        assert log.pruning is first

        clock.now = start + 200  # r-1 and r-2 are now 200 s and 191 s old
        await log.run("r-3", "alice", None, "create_run", {"i": 3}, None, answer)
        assert log.pruning is not first
        assert await log.pruning == 2
        assert store.get_request("r-3") is not None

    asyncio.run(flow())


def test_the_retention_is_a_setting_of_24_hours_by_default(tmp_path):
    from frontier_signal.service.settings import ServiceSettings

    assert ServiceSettings(data_dir=tmp_path).request_retention_hours == 24
    assert (
        ServiceSettings(data_dir=tmp_path, request_retention_hours=2).request_retention_hours == 2
    )
    with pytest.raises(ValueError):
        ServiceSettings(data_dir=tmp_path, request_retention_hours=0)
