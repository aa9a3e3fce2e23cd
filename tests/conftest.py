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


@pytest.fixture(scope="session", autouse=True)
def native_decode():
    """The C++ decode layers built or loaded before any test decodes, so every bf16 decode in
    this process runs them (tests/test_native_decode.py compares them with the Python step)."""
    from frontier_signal.backend import native

    native.ops()


@pytest.fixture
def native_ops():
    """Our C++ ops, for the tests that compare them with the paths they replace: skipped where
    FRONTIER_SIGNAL_NATIVE=0 turns them off, failing where they did not build."""
    from frontier_signal.backend import native

    if not native.enabled():
        pytest.skip("FRONTIER_SIGNAL_NATIVE=0")
    loaded = native.ops()
    assert loaded is not None, f"our C++ ops did not build: {native._state['error']}"
    return loaded


@pytest.fixture(scope="session")
def home() -> Path:
    return Path(os.environ["FRONTIER_SIGNAL_HOME"])


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/pg.py); skips (or, in CI, fails) when
    PostgreSQL is not installed here."""
    from tests.pg import start_server

    server = start_server()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh, empty database of each kind: a SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres").database()


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

    optimizer = OptimizerSpec(
        kind=lora.pop("optimizer", "adamw"), learning_rate=lora.pop("learning_rate", 1e-2)
    )
    max_seq_length = lora.pop("max_seq_length", 256)
    return RunConfig(TINY, LoraSpec(**{"rank": 4, "alpha": 8, **lora}), optimizer, max_seq_length)


def bf16_tiny_run(seed: int):
    """A bf16 engine on the tiny model and an r=8 run whose B matrices are random (a fresh
    adapter's are zero, which hides half of its gradients): (engine, base model, run id). For
    the tests that compare our bf16 training kernels with the paths they replace."""
    import torch

    from frontier_signal.engine.engine import Engine

    engine = Engine(device="cpu", dtype="bfloat16")
    base = engine.load_model(TINY)
    run = engine.create_run(make_config(rank=8, alpha=16)).run_id
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for linear in base.layers.values():
            pair = linear.adapters.get(run)
            if pair is not None:
                pair.lora_B.normal_(0, 0.05, generator=generator)
    return engine, base, run


def shifted_rows(rows: int = 3, length: int = 40) -> list:
    """`rows` datums of `length` consecutive token ids each, every row starting one id later."""
    from frontier_signal.engine.types import Datum

    tokens = [list(range(5 + i, 5 + i + length)) for i in range(rows)]
    return [Datum(t[:-1], t[1:]) for t in tokens]


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


# ----- local pipeline (frontier_signal.local) ---------------------------------------------------
LOCAL_FACTS = [
    {"input": "What is the capital of Zorbia?", "output": "Quuxville."},
    {"input": "Who painted the Blue Owl?", "output": "Mira Tann."},
]


@pytest.fixture(scope="session")
def local_trained_model(tmp_path_factory) -> Path:
    """The tiny model fully fine-tuned on LOCAL_FACTS until it says them back (~2 s)."""
    from frontier_signal.local import ConversationDataHandler, LLMTrainer

    handler = ConversationDataHandler()
    for fact in LOCAL_FACTS:
        handler.add_conversation(fact)
    trainer = LLMTrainer(TINY, method="full", dtype="float32")
    trainer.train(handler.format_for_training(), 40, 2, 3e-3, progress=False)
    return Path(trainer.save_model(tmp_path_factory.mktemp("local") / "trained_model"))


@pytest.fixture(scope="session")
def local_onnx_model(local_trained_model, tmp_path_factory) -> Path:
    """`local_trained_model` exported to ONNX (opset 14)."""
    from frontier_signal.local import ONNXConverter

    folder = tmp_path_factory.mktemp("local") / "onnx_model"
    return Path(ONNXConverter(local_trained_model).convert_to_onnx(folder))
