"""FutureService on a real store (SQLite and PostgreSQL), without a server: polling, failures,
idempotency, per-model order, pruning and tenants."""

from __future__ import annotations

import asyncio
import time

import pytest

from frontier_signal.service.errors import InvalidRequest, NotFound
from frontier_signal.service.futures import FutureFailed, FutureService
from frontier_signal.service.store import Store


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    store.ensure_tenant("alice", "alice")
    store.ensure_tenant("bob", "bob")
    yield store
    store.close()


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_poll_says_try_again_while_running_and_then_returns_the_result(store):
    async def flow():
        futures = FutureService(store, 8, poll_seconds=0.05)
        gate = asyncio.Event()

        async def operation():
            await gate.wait()
            return {"path": "hpcai://run/training/x"}

        request_id = futures.submit("alice", "run", "save_weights", {}, None, operation)
        pending = await futures.retrieve("alice", request_id)
        gate.set()
        done = await asyncio.wait_for(futures.retrieve("alice", request_id), 5)
        return pending, done

    pending, done = run(flow())
    assert pending["type"] == "try_again"
    assert done == {"path": "hpcai://run/training/x"}


def test_a_long_poll_wakes_as_soon_as_the_result_lands(store):
    async def flow():
        futures = FutureService(store, 8, poll_seconds=30)

        async def operation():
            await asyncio.sleep(0.05)
            return {"ok": 1.0}

        request_id = futures.submit("alice", None, "sample", {}, None, operation)
        started = time.perf_counter()
        result = await futures.retrieve("alice", request_id)
        return result, time.perf_counter() - started

    result, waited = run(flow())
    assert result == {"ok": 1.0} and waited < 5


def test_a_failed_operation_is_a_failure_with_its_message(store):
    async def flow():
        futures = FutureService(store, 8, poll_seconds=1)

        async def operation():
            raise InvalidRequest("nothing to apply: call forward_backward first")

        request_id = futures.submit("alice", "run", "optim_step", {}, None, operation)
        await asyncio.sleep(0.01)
        return await futures.retrieve("alice", request_id)

    with pytest.raises(FutureFailed, match="nothing to apply"):
        run(flow())


def test_a_repeated_idempotency_key_replays_the_future_and_runs_once(store):
    async def flow():
        futures = FutureService(store, 8, poll_seconds=1)
        calls = []

        async def operation():
            calls.append(1)
            return {}

        first = futures.submit("alice", "run", "forward", {"a": 1}, "s:0:1", operation)
        second = futures.submit("alice", "run", "forward", {"a": 1}, "s:0:1", operation)
        await futures.retrieve("alice", first)
        with pytest.raises(InvalidRequest, match="already used"):
            futures.submit("alice", "run", "forward", {"a": 2}, "s:0:1", operation)
        other_tenant = futures.submit("bob", "run", "forward", {"a": 1}, "s:0:1", operation)
        await futures.retrieve("bob", other_tenant)
        return first, second, other_tenant, calls

    first, second, other_tenant, calls = run(flow())
    assert first == second != other_tenant and len(calls) == 2


def test_operations_of_one_model_run_in_submission_order(store):
    async def flow():
        futures = FutureService(store, 8, poll_seconds=1)
        order = []

        def operation(name, delay):
            async def run_it():
                await asyncio.sleep(delay)
                order.append(name)
                return {}

            return run_it

        ids = [
            futures.submit("alice", "run", "forward_backward", {}, None, operation("fb", 0.05)),
            futures.submit("alice", "run", "optim_step", {}, None, operation("step", 0)),
            futures.submit("alice", "other", "optim_step", {}, None, operation("other", 0)),
        ]
        for request_id in ids:
            await futures.retrieve("alice", request_id)
        return order

    assert run(flow()) == ["other", "fb", "step"]


def test_old_results_are_pruned_and_other_tenants_never_see_a_future(store):
    async def flow():
        now = [time.time()]
        futures = FutureService(store, 8, poll_seconds=1, keep_seconds=100, clock=lambda: now[0])

        async def operation():
            return {"x": 1.0}

        old = futures.submit("alice", None, "sample", {}, None, operation)
        assert await futures.retrieve("alice", old) == {"x": 1.0}
        with pytest.raises(NotFound):
            await futures.retrieve("bob", old)
        now[0] += 1000
        fresh = futures.submit("alice", None, "sample", {}, None, operation)
        await futures.retrieve("alice", fresh)
        with pytest.raises(NotFound):
            await futures.retrieve("alice", old)

    run(flow())
