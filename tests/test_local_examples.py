"""The seed's examples in examples/local run, in order, on the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "local"
ORDER = [
    "basic_workflow.py",
    "customer_support_bot.py",
    "domain_assistant.py",
    "batch_processing.py",
    "retrain_from_logs.py",
    "custom_parameters.py",
    "custom_csv_handler.py",
    "continuous_learning.py",
    "error_handling.py",
]

# One interpreter for all of them (torch imports once); each prints a marker when it is done.
DRIVER = """
import runpy, sys
sys.path.insert(0, sys.argv[1])
for name in sys.argv[2:]:
    runpy.run_path(f"{sys.argv[1]}/{name}", run_name="__main__")
    print(f"=== {name} done", flush=True)
"""


def test_every_example_is_listed_in_the_readme_and_run_here():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(ORDER)
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in ORDER)


def test_the_seed_examples_run_in_order_on_the_tiny_model(tmp_path):
    env = {**os.environ, "FRONTIER_SIGNAL_EXAMPLE_MODEL": TINY}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(EXAMPLES), *ORDER],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    done = [line for line in result.stdout.splitlines() if line.startswith("=== ")]
    assert result.returncode == 0, result.stderr[-3000:]
    assert done == [f"=== {name} done" for name in ORDER]
    assert "Q: What is ONNX?" in result.stdout
    assert "2 conversations" in result.stdout and "rounds: 2" in result.stdout
    assert "Model not found" not in result.stdout
    for folder in ("trained_model", "onnx_model", "support_bot", "domain_model"):
        assert (tmp_path / folder / "config.json").exists()
    assert (tmp_path / "my_chats.json").exists() and (tmp_path / "conversation_log.json").exists()
