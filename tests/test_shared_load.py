"""RunService.ensure_loaded: one load per run, shared by its callers; a caller that leaves does
not cancel it for the others, and a failed load is tried again by the next request."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from frontier_signal.service.runs import RunService


def lifecycle(restored):
    service = object.__new__(RunService)  # only the loading bookkeeping is exercised
    service._loading = {}
    service._restored = restored
    return service


def test_a_caller_that_leaves_does_not_cancel_the_load_for_the_others():
    loads = []

    async def restored(row):
        loads.append(row.id)
        await asyncio.sleep(0.05)

    async def scenario():
        service = lifecycle(restored)
        row = SimpleNamespace(id="run_a")
        leaving = asyncio.ensure_future(service.ensure_loaded(row))
        staying = asyncio.ensure_future(service.ensure_loaded(row))
        await asyncio.sleep(0.01)
        leaving.cancel()
        await staying  # finishes although the first caller left
        await service.ensure_loaded(row)  # loaded: no second load
        return loads

    assert asyncio.run(scenario()) == ["run_a"]


def test_a_failed_load_is_tried_again():
    attempts = []

    async def restored(row):
        attempts.append(row.id)
        if len(attempts) == 1:
            raise OSError("checkpoint unreadable")

    async def scenario():
        service = lifecycle(restored)
        row = SimpleNamespace(id="run_b")
        with pytest.raises(OSError, match="unreadable"):
            await service.ensure_loaded(row)
        await service.ensure_loaded(row)
        return attempts

    assert asyncio.run(scenario()) == ["run_b", "run_b"]
