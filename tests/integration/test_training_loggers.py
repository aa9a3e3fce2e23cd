"""`train_epoch(..., loggers=[...], on_step=...)` of the sync and async SDK on a live server:
every step reaches each logger and the hook, with the server's own step numbers and losses."""

from __future__ import annotations

import json

import pytest

from frontier_signal import AsyncSignalClient, SignalClient
from frontier_signal.client.loggers import JsonlLogger, TensorBoardLogger
from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.test_loggers import read_events

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

BATCHES = [[{"text": "The capital of Zorbia is Quellmar."}]] * 3
KEYS = {"loss", "grad_norm", "learning_rate", "tokens", "seconds", "tokens_per_s"}


def test_sync_train_epoch_feeds_jsonl_tensorboard_and_the_step_hook(base_url, alice, tmp_path):
    pytest.importorskip("tensorboardX")
    seen = []
    jsonl, board = JsonlLogger(tmp_path), TensorBoardLogger(tmp_path / "tb")
    with SignalClient(alice, base_url) as client:
        run = client.create_run(base_model=TINY, lora_r=4, seed=2)
        with client.training(run.run_id) as training:
            epoch = training.train_epoch(
                BATCHES,
                progress=False,
                loggers=[jsonl, board],
                on_step=lambda step, metrics: seen.append((step, metrics)),
            )
        server_rows = client.get_metrics(run.run_id)
    jsonl.close()
    board.close()
    assert [step for step, _ in seen] == [1, 2, 3] and epoch["steps"] == 3
    assert all(set(metrics) == KEYS for _, metrics in seen)
    assert [m["loss"] for _, m in seen] == pytest.approx([r["loss"] for r in server_rows])
    assert sum(m["tokens"] for _, m in seen) == epoch["tokens"]
    assert all(m["tokens_per_s"] > 0 for _, m in seen)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert [row["loss"] for row in rows] == [m["loss"] for _, m in seen]
    losses = sorted(
        (step, value) for tag, step, value in read_events(tmp_path / "tb") if tag == "train/loss"
    )
    assert [step for step, _ in losses] == [1, 2, 3]
    assert [v for _, v in losses] == pytest.approx([m["loss"] for _, m in seen], rel=1e-6)


async def _async_epoch(base_url, alice, tmp_path):
    seen = []

    async def hook(step, metrics):
        seen.append(step)

    jsonl = JsonlLogger(tmp_path)
    async with AsyncSignalClient(alice, base_url) as client:
        run = await client.create_run(base_model=TINY, lora_r=4, seed=3)
        async with client.training(run.run_id) as training:
            await training.train_epoch(BATCHES, progress=False, loggers=[jsonl], on_step=hook)
    jsonl.close()
    return seen


def test_async_train_epoch_feeds_the_loggers_and_awaits_the_hook(base_url, alice, tmp_path):
    import asyncio

    seen = asyncio.run(_async_epoch(base_url, alice, tmp_path))
    assert seen == [1, 2, 3]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(row["loss"] > 0 for row in rows)
