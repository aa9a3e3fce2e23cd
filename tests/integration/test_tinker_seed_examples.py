"""Every example of seed 002 (the HPC-AI ServiceClient reference): the scripts in
`examples/hpcai/`, run with the real hpcai SDK against a live server. Their edits from the seed
(base URL, key, tiny model, `training_data` defined, `hpcai://…/training/…` for the seed's
`…/weights/…`) are listed in `examples/hpcai/README.md`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.integration import sdk_fixtures

pytest.importorskip("hpcai")

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hpcai"
SCRIPTS = [
    "get_server_capabilities.py",
    "create_lora_training_client.py",
    "custom_lora_configuration.py",
    "resume_from_checkpoint.py",
    "restore_latest_checkpoint.py",
    "create_training_client.py",
    "create_training_client_then_load_state.py",
    "create_rest_client.py",
]


def run_example(script: str, base_url: str, key: str) -> str:
    """Run one script as a user would, with only our two variables set; return its stdout."""
    # HPCAI_API_KEY would override api_key= (a quirk of hpcai 0.2.0): never inherit it.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRONTIER_SIGNAL_", "HPCAI_", "TINKER_"))
    }
    env |= {"FRONTIER_SIGNAL_BASE_URL": base_url, "FRONTIER_SIGNAL_API_KEY": key}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in:\n{text[-2000:]}"
    return match.group(1)


def test_every_hpcai_example_is_run_by_this_file():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "_model.py")
    assert scripts == sorted(SCRIPTS)


def test_get_server_capabilities_example(base_url, alice):
    out = run_example("get_server_capabilities.py", base_url, alice)
    count = int(found(r"^Server supports (\d+) models$", out))
    assert f"\n  - {TINY}\n" in out
    assert count == out.count("\n  - ")


def test_create_lora_training_client_example(base_url, alice):
    out = run_example("create_lora_training_client.py", base_url, alice)
    assert found(r"^Created model ID (\S+)$", out)


def test_custom_lora_configuration_example(base_url, alice):
    out = run_example("custom_lora_configuration.py", base_url, alice)
    assert found(r"^LoRA rank: (\d+)$", out) == "64"


def test_resume_from_checkpoint_example(base_url, alice):
    out = run_example("resume_from_checkpoint.py", base_url, alice)
    source = found(r"^Source model ID: (\S+)$", out)
    assert found(r"^Saved: (\S+)$", out) == f"hpcai://{source}/training/step_0010"
    assert found(r"^Restored model ID: (\S+)$", out) != source


def test_restore_latest_checkpoint_example(base_url, alice):
    out = run_example("restore_latest_checkpoint.py", base_url, alice)
    source = found(r"^Training run: (\S+)$", out)
    assert found(r"^Restoring from: (\S+)$", out).startswith(f"hpcai://{source}/training/")
    assert found(r"^Restored model ID: (\S+)$", out) != source


def test_create_training_client_example(base_url, alice):
    out = run_example("create_training_client.py", base_url, alice)
    existing = found(r"^Existing model: (\S+)$", out)
    assert found(r"^Client bound to model: (\S+)$", out) == existing
    assert "\nTrained one step\n" in out


def test_create_training_client_then_load_state_example(base_url, alice):
    """The seed's "no model_id, then load_state" cannot work with hpcai 0.2.0: the SDK asserts on
    the client that a model_id is set, before sending anything. Should a later hpcai allow it,
    the script goes on to load and train, and this test fails so that the README gets updated."""
    out = run_example("create_training_client_then_load_state.py", base_url, alice)
    assert re.search(r"^Checkpoint: hpcai://\S+/training/step_0010$", out, re.MULTILINE)
    assert "hpcai refuses load_state without a model_id: model_id must be set" in out
    assert "Model loaded" not in out


def test_create_rest_client_example(base_url, alice):
    out = run_example("create_rest_client.py", base_url, alice)
    run_id = found(r"^Checkpoints of (\S+): 0$", out)
    assert found(r"^Training run: (\S+)$", out) == run_id
