"""save_state(mode="gguf") through a live server and the SDK, then the files in llama.cpp."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from frontier_signal import SignalClient, ValidationError
from tests.conftest import TINY
from tests.gguf_support import TOLERANCE, greedy, load
from tests.integration import sdk_fixtures

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

TEXT = {"text": "The capital of Zorbia is Quellmar, a harbour city of lanterns."}
PROMPT = "The capital of Zorbia is"


@pytest.fixture(scope="module")
def client(base_url, alice):
    with SignalClient(alice, base_url) as client:
        yield client


@pytest.fixture(scope="module")
def trained(client):
    run = client.create_run(base_model=TINY, lora_r=4, lora_alpha=8, optimizer="adamw", seed=3)
    for _ in range(20):
        run.forward_backward([TEXT])
        run.optim_step(learning_rate=1e-2)
    return run


def test_save_state_gguf_writes_files_in_the_checkpoint_area_that_llama_cpp_runs(
    client, trained, data_dir, tiny_tokenizer
):
    saved = trained.save_state(mode="gguf")
    folder = Path(saved["checkpoint_path"])
    assert saved["mode"] == "gguf" and saved["step"] == 20
    assert folder.is_relative_to(data_dir) and folder.is_dir()
    assert set(saved["files"]) >= {"model-f16.gguf", "base-f16.gguf", "adapter-lora.gguf"}
    assert {n: (folder / n).stat().st_size for n in saved["files"]} == saved["files"]
    listed = {c["checkpoint_id"]: c for c in client.list_checkpoints(trained.run_id)}
    assert listed[saved["checkpoint_id"]]["kind"] == "gguf"

    result = trained.sample([PROMPT], max_tokens=8, temperature=0.0, return_logprobs=True)
    prompt = tiny_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    llm = load(folder / "model-f16.gguf")
    tokens, logprobs = greedy(llm, prompt, 8, {tiny_tokenizer.eos_token_id})
    assert tiny_tokenizer.decode(tokens) == result["outputs"][0]
    diff = np.abs(np.array(logprobs) - np.array(result["logprobs"][0])).max()
    assert diff < TOLERANCE["f16"], diff


def test_save_state_gguf_q8_0_and_a_bad_mode(client, trained, base_url, alice):
    saved = trained.save_state(mode="gguf-q8_0")
    assert set(saved["files"]) >= {"model-q8_0.gguf", "base-q8_0.gguf", "adapter-lora.gguf"}
    from gguf import GGUFReader

    merged = GGUFReader(str(Path(saved["checkpoint_path"]) / "model-q8_0.gguf"))
    types = {t.name: t.tensor_type.name for t in merged.tensors}
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == "Q8_0"
    with pytest.raises(ValidationError, match="gguf-q8_0"):
        trained.save_state(mode="gguf-q4")
    answer = httpx.post(
        f"{base_url}/v1/runs/{trained.run_id}/save_state",
        json={"mode": "gguf-q4"},
        headers={"Authorization": f"Bearer {alice}"},
    )
    assert answer.status_code in (400, 422) and "mode" in answer.text
