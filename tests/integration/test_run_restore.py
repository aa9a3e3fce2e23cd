"""A run that is not loaded (after a restart) is restored by its first requests: concurrent
callers share the restore, a caller that leaves mid-way does not cancel it for the others, and a
restore that fails (its checkpoint storage is not there) keeps the run's history, answers a
retryable 503 and is tried again by the next request. A real server, real checkpoints."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest

from frontier_signal.engine.engine import Engine
from tests.conftest import TINY
from tests.integration.conftest import make_key, server_settings
from tests.integration.test_durability import connect, train
from tests.live_server import LiveServer

SAMPLE = {"prompts": ["The capital of Zorbia is"], "max_tokens": 4, "temperature": 0}


def _trained_run(tmp_path, key: str) -> tuple[str, dict]:
    """A run trained 2 steps, then a clean stop (which writes its training checkpoint); the
    greedy sample it gave before the stop."""
    live = LiveServer(server_settings(tmp_path, checkpoint_every=0)).start()
    try:
        with connect(live.base_url, key) as http:
            config = {"base_model": TINY, "lora_r": 4, "seed": 3, "learning_rate": 0.05}
            run_id = http.post("/v1/runs", json=config).json()["run_id"]
            train(http, run_id, 2)
            sample = http.post(f"/v1/runs/{run_id}/sample", json=SAMPLE).json()
    finally:
        live.stop()
    return run_id, sample


@pytest.fixture
def restores(monkeypatch):
    """The engine's restores from a checkpoint, by run id (a spy: the real method runs)."""
    seen: list[str] = []
    real = Engine.create_run_from_checkpoint

    def spy(self, folder, run_id=None, *args, **kwargs):
        seen.append(run_id)
        return real(self, folder, run_id, *args, **kwargs)

    monkeypatch.setattr(Engine, "create_run_from_checkpoint", spy)
    return seen


def test_concurrent_callers_share_one_restore_and_one_leaving_cancels_nothing(tmp_path, restores):
    key = make_key(tmp_path, "alice")
    run_id, before = _trained_run(tmp_path, key)
    restores.clear()
    live = LiveServer(server_settings(tmp_path)).start()

    async def scenario() -> list[dict]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=live.base_url, headers=headers, timeout=60) as http:
            url = f"/v1/runs/{run_id}/sample"
            leaving = asyncio.ensure_future(http.post(url, json=SAMPLE))
            staying = [asyncio.ensure_future(http.post(url, json=SAMPLE)) for _ in range(3)]
            await asyncio.sleep(0.005)
            leaving.cancel()  # the client disconnects while the run is being restored
            responses = await asyncio.gather(*staying)
            assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
            return [r.json() for r in responses]

    try:
        results = asyncio.run(scenario())
        assert all(r["outputs"] == before["outputs"] for r in results)  # the trained weights
        assert restores == [run_id]  # one restore, shared by every caller
        with connect(live.base_url, key) as http:
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 2
    finally:
        live.stop()


def test_a_restore_that_fails_is_tried_again_by_the_next_request(tmp_path, restores):
    key = make_key(tmp_path, "bob")
    run_id, before = _trained_run(tmp_path, key)
    runs_folder = tmp_path / "runs" / run_id
    hidden = tmp_path / "hidden"
    shutil.move(runs_folder, hidden)  # the checkpoint cannot be read for now
    restores.clear()
    live = LiveServer(server_settings(tmp_path)).start()
    try:
        with connect(live.base_url, key) as http:
            failed = http.post(f"/v1/runs/{run_id}/sample", json=SAMPLE)
            # Not a fresh start: the storage is not there, the run waits for it (retryable).
            assert failed.status_code == 503 and failed.headers["x-should-retry"] == "true"
            assert "training checkpoints can be read" in failed.json()["error"]["message"]
            assert http.get(f"/v1/runs/{run_id}").json()["step"] == 2  # history kept
            shutil.move(hidden, runs_folder)
            again = http.post(f"/v1/runs/{run_id}/sample", json=SAMPLE)
            assert again.status_code == 200, again.text
            assert again.json()["outputs"] == before["outputs"]
            assert restores[-1] == run_id
            (loss,) = train(http, run_id, 1)  # and it trains on from step 2
            assert loss > 0 and http.get(f"/v1/runs/{run_id}").json()["step"] == 3
    finally:
        live.stop()
