"""`frontier-signal local train | export | chat` on the tiny model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from frontier_signal.cli import app
from tests.conftest import LOCAL_FACTS, TINY

runner = CliRunner()


def test_train_export_and_chat_commands_run_the_pipeline_end_to_end(tmp_path):
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps(f) + "\n" for f in LOCAL_FACTS))
    trained, onnx = tmp_path / "trained_model", tmp_path / "onnx_model"
    result = runner.invoke(
        app,
        ["local", "train", "--data", str(data), "--model-name", TINY, "--method", "full"]
        + ["--output-dir", str(trained), "--num-epochs", "40", "--batch-size", "2"]
        + ["--learning-rate", "3e-3"],
    )
    assert result.exit_code == 0, result.output
    assert "epoch 40: loss" in result.output and (trained / "config.json").exists()

    result = runner.invoke(
        app, ["local", "export", "--model-path", str(trained), "--output-dir", str(onnx)]
    )
    assert result.exit_code == 0, result.output
    assert "opset 14" in result.output and "ok" in result.output

    log = tmp_path / "log.json"
    result = runner.invoke(
        app,
        ["local", "chat", "--model-path", str(onnx), "--temperature", "0", "--log-conversations"]
        + ["--log-file", str(log), "--prompt", LOCAL_FACTS[0]["input"]]
        + ["--prompt", LOCAL_FACTS[1]["input"]],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f["output"] for f in LOCAL_FACTS]
    assert len(json.loads(log.read_text())) == 2


def test_commands_report_a_missing_model_and_a_corrupt_data_file_clearly(tmp_path):
    result = runner.invoke(app, ["local", "export", "--model-path", str(tmp_path / "none")])
    assert result.exit_code == 2 and "error: no model folder" in result.output
    result = runner.invoke(app, ["local", "chat", "--model-path", str(tmp_path / "none")])
    assert result.exit_code == 2 and "error: no model.onnx" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    result = runner.invoke(app, ["local", "train", "--data", str(bad), "--model-name", TINY])
    assert result.exit_code == 2 and "is not valid JSON" in result.output
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    result = runner.invoke(app, ["local", "train", "--data", str(empty), "--model-name", TINY])
    assert result.exit_code == 2 and "error: no conversations" in result.output


def test_local_help_lists_the_three_commands():
    result = runner.invoke(app, ["local", "--help"])
    assert result.exit_code == 0
    assert all(command in result.output for command in ("train", "export", "chat"))
