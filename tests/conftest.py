"""Shared fixtures: a private data folder, an fp32 engine on the tiny model, small datums."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports frontier_signal.paths: tests never touch the user's ~/.frontier-signal.
os.environ["FRONTIER_SIGNAL_HOME"] = os.environ.get(
    "FRONTIER_SIGNAL_TEST_HOME"
) or tempfile.mkdtemp(prefix="fs-test-home-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = "frontier-signal/tiny-llama"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="session")
def home() -> Path:
    return Path(os.environ["FRONTIER_SIGNAL_HOME"])


@pytest.fixture(scope="session")
def engine():
    """One fp32 engine for the session (fp32 so equalities hold tightly); tests make own runs."""
    from frontier_signal.engine.engine import Engine

    return Engine(device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tokenizer(engine):
    return engine.tokenizer(TINY)


def make_config(**lora):
    from frontier_signal.engine.types import LoraSpec, OptimizerSpec, RunConfig

    optimizer = OptimizerSpec(learning_rate=lora.pop("learning_rate", 1e-2))
    max_seq_length = lora.pop("max_seq_length", 256)
    return RunConfig(TINY, LoraSpec(**{"rank": 4, "alpha": 8, **lora}), optimizer, max_seq_length)


@pytest.fixture
def make_run(engine):
    """Create runs on the tiny model; all are deleted after the test."""
    created = []

    def factory(**lora) -> str:
        run_id = engine.create_run(make_config(**lora)).run_id
        created.append(run_id)
        return run_id

    yield factory
    for run_id in created:
        if run_id in engine.list_runs():
            engine.delete_run(run_id)


@pytest.fixture
def datums(engine, tokenizer):
    """Three short sequences of different lengths (so batches need padding)."""
    texts = [
        "The capital of Zorbia is Quux.",
        "Frontier Signal trains LoRA adapters.",
        "Seven blue whales sang in the harbour at dawn, and nobody slept.",
    ]
    return [r.datum for r in engine.render(TINY, [{"text": t} for t in texts], 64)]
