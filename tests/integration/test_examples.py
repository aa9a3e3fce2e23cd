"""Every script in `examples/` runs to completion against a live server and prints its result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration import sdk_fixtures

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# script -> text its output must contain
EXPECTED = {
    "basic_sync.py": "Step 9: Loss = ",
    "basic_async.py": "Step 9: Loss = ",
    "context_manager.py": "Created run: run_",
    "run_information.py": "Status: active at step 1",
    "simple_api.py": "Sample: ",
    "advanced_training.py": "Average loss: ",
    "advanced_inference.py": "Late: ",
    "chat_templates.py": "Chat loss: ",
    "gradient_accumulation.py": "Applied accumulated gradients: step 1",
    "custom_lora.py": "'lora_r': 64",
    "export_to_hub.py": "the local save is kept: ",
    "exceptions.py": "Resource not found",
    "type_hints.py": "Typed batch loss: ",
    "basic_training.py": "Loss: ",
    "signal_run_wrapper.py": "Saved step 3 to: ",
    "fine_grained_training.py": "Current step: 3",
    "convenience_methods.py": "Epoch complete: avg_loss=",
    "training_context_manager.py": "Saved step 3; the client still answers",
    "batched_inference.py": "Generated 10 responses",
    "inference_caching.py": "Cache size: 1",
    "compare_checkpoints.py": "Late checkpoint: ",
    "async_training.py": "Loss: ",
    "async_batched_inference.py": "Processed 6 prompts concurrently",
    "migration_training.py": "Final avg loss: ",
    "migration_inference.py": "Generated 5 outputs",
    "monitor_metrics.py": "'step': 6",
}


def test_every_example_script_is_run_by_this_file():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_the_example_runs_against_a_live_server(script, base_url, alice):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRONTIER_SIGNAL_")}
    env |= {"FRONTIER_SIGNAL_BASE_URL": base_url, "FRONTIER_SIGNAL_API_KEY": alice}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert EXPECTED[script] in done.stdout, done.stdout[-2000:]
