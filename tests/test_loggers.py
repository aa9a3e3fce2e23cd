"""The SDK's training loggers (client/loggers.py) on their own: what each writes, read back."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import pytest

from frontier_signal.client.loggers import (
    JsonlLogger,
    TensorBoardLogger,
    WandbLogger,
    setup_loggers,
)

METRICS = [
    {"loss": 2.5, "grad_norm": 1.25, "learning_rate": 1e-3, "tokens": 10, "tokens_per_s": 100.0},
    {"loss": 2.0, "grad_norm": 0.5, "learning_rate": 1e-3, "tokens": 12, "tokens_per_s": None},
]


def read_events(folder) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the TensorBoard event files (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    scalars = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.append((value.tag, event.step, value.simple_value))
    return scalars


def test_jsonl_appends_one_object_per_step(tmp_path):
    logger = JsonlLogger(tmp_path / "logs")
    for step, metrics in enumerate(METRICS, start=1):
        logger.log(step, metrics)
    logger.close()
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["loss"] == 2.5 and rows[1]["tokens_per_s"] is None
    assert all(row["time"] > 0 for row in rows)
    again = JsonlLogger(tmp_path / "logs" / "metrics.jsonl")  # appends, never truncates
    again.log(3, {"loss": 1.0})
    again.close()
    assert len((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()) == 3


def test_tensorboard_writes_the_finite_numbers_as_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    logger = TensorBoardLogger(tmp_path / "tb")
    for step, metrics in enumerate(METRICS, start=1):
        logger.log(step, metrics | {"note": "text", "bad": math.nan})
    logger.close()
    scalars = read_events(tmp_path / "tb")
    assert ("train/loss", 1, 2.5) in scalars and ("train/loss", 2, 2.0) in scalars
    assert ("train/tokens_per_s", 1, 100.0) in scalars
    tags = {tag for tag, _, _ in scalars}
    assert "train/note" not in tags and "train/bad" not in tags
    assert not any(tag == "train/tokens_per_s" and step == 2 for tag, step, _ in scalars)


def test_setup_loggers_gives_jsonl_and_tensorboard_when_installed(tmp_path):
    pytest.importorskip("tensorboardX")
    loggers = setup_loggers(tmp_path)
    assert [type(logger) for logger in loggers] == [JsonlLogger, TensorBoardLogger]
    for logger in loggers:
        logger.log(1, METRICS[0])
        logger.close()
    assert (tmp_path / "metrics.jsonl").exists()
    assert read_events(tmp_path / "tensorboard")
    assert setup_loggers(tmp_path / "plain", tensorboard=False)[0].path.name == "metrics.jsonl"


def test_wandb_logs_offline_when_installed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger("frontier-signal-test", tmp_path, {"lora_r": 4})
    logger.log(1, METRICS[0])
    logger.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_the_loggers_module_imports_no_torch():
    code = "import frontier_signal.client.loggers, sys; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
