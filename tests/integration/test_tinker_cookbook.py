"""tinker-cookbook 0.6.1 recipes against a real server on 127.0.0.1 (docs/tinker-sdk.md):
`supervised.train` on the cookbook's own example conversations with periodic checkpoints, then a
resume from its checkpoints.jsonl. The hub is unreachable: the tiny model's tokenizer is
registered with the cookbook by the name `get_info` reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import TINY

pytest.importorskip("tinker")
cookbook = pytest.importorskip("tinker_cookbook")


@pytest.fixture(scope="module")
def cookbook_env(server, alice, tiny_tokenizer):
    from tinker_cookbook import tokenizer_utils

    server.wait_ready()
    tokenizer_utils.register_tokenizer(TINY, lambda: tiny_tokenizer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINKER_API_KEY", "tml-" + alice.removeprefix("sk-fs-"))
        patch.setenv("TINKER_TELEMETRY", "0")
        yield server.base_url
    tokenizer_utils.unregister_tokenizer(TINY)


def _config(base_url: str, log_path: Path, max_steps: int):
    from tinker_cookbook.supervised import train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    conversations = Path(cookbook.__file__).parent / "example_data" / "conversations.jsonl"
    builder = FromConversationFileBuilder(
        file_path=str(conversations),
        common_config=ChatDatasetBuilderCommonConfig(
            model_name_for_tokenizer=TINY,
            renderer_name="role_colon",
            max_length=128,
            batch_size=16,
        ),
    )
    return train.Config(
        log_path=str(log_path),
        model_name=TINY,
        recipe_name="sft-test",
        renderer_name="role_colon",
        dataset_builder=builder,
        learning_rate=5e-3,
        lora_rank=4,
        base_url=base_url,
        save_every=2,
        eval_every=0,
        infrequent_eval_every=0,
        max_steps=max_steps,
    )


def _checkpoints(log_path: Path) -> list[dict]:
    lines = (log_path / "checkpoints.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_supervised_train_saves_periodic_checkpoints_and_resumes(cookbook_env, tmp_path):
    from tinker_cookbook.supervised import train

    log_path = tmp_path / "sft"
    asyncio.run(train.main(_config(cookbook_env, log_path, max_steps=3)))
    first = _checkpoints(log_path)
    assert first and all(
        c["state_path"].startswith("tinker://") for c in first if "state_path" in c
    )
    (periodic,) = [c for c in first if c["name"] == "000002"]  # the periodic save at step 2

    # As if the first run had died right after its periodic save: resume from that record.
    (log_path / "checkpoints.jsonl").write_text(json.dumps(periodic) + "\n")
    asyncio.run(train.main(_config(cookbook_env, log_path, max_steps=5)))
    after = _checkpoints(log_path)
    names = [c["name"] for c in after]
    assert names[0] == "000002" and "000004" in names and names[-1] == "final"
    resumed = [c for c in after if c["name"] == "000004"][0]
    assert resumed["state_path"] != periodic["state_path"]
    metrics = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "step" in m]
    assert 2 in steps and 4 in steps  # steps 2.. ran after the resume, not from 0 again
