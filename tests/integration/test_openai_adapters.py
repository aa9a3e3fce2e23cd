"""Many adapters through the OpenAI face of a real server (official `openai` SDK): a PEFT folder
written by `peft` itself and registered by name answers as peft's own generate does; kept steps
and checkpoints serve without a warmup through a small LRU and come back the same after eviction;
`/v1/models` pages; another key can neither list nor serve them."""

from __future__ import annotations

import httpx
import pytest
import torch

from tests.conftest import TINY
from tests.integration.conftest import make_key, server_settings
from tests.integration.sdk_fixtures import wait_ready
from tests.live_server import LiveServer

openai = pytest.importorskip("openai")
peft = pytest.importorskip("peft")

PROMPT = "Seven blue whales sang in the harbour"


@pytest.fixture(scope="module")
def peft_folder(tmp_path_factory):
    """A LoRA saved by peft (random A and B, so it changes the outputs), and peft's own greedy
    continuation of PROMPT."""
    from frontier_signal.backend import models

    model = models.load_hf_model(TINY, dtype=torch.float32)
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    wrapped = peft.get_peft_model(model, config)
    folder = tmp_path_factory.mktemp("peft") / "adapter"
    wrapped.save_pretrained(folder)
    tokenizer = models.load_tokenizer(TINY)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = wrapped.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None
        )
    return folder, tokenizer.decode(out[0, len(ids) :].tolist())


@pytest.fixture(scope="module")
def adapter_server(tmp_path_factory, peft_folder):
    data_dir = tmp_path_factory.mktemp("adapters-data")
    settings = server_settings(
        data_dir,
        checkpoint_every=2,
        adapters=[f"peft-tiny={peft_folder[0]}"],
        adapter_cache_count=2,
    )
    live = LiveServer(settings).start()
    wait_ready(live.base_url)
    keys = make_key(data_dir, "alice"), make_key(data_dir, "bob")
    yield live, keys
    live.stop()


@pytest.fixture(scope="module")
def clients(adapter_server):
    live, (alice, bob) = adapter_server
    url = f"{live.base_url}/v1"
    with (
        openai.OpenAI(base_url=url, api_key=alice, max_retries=0) as a,
        openai.OpenAI(base_url=url, api_key=bob, max_retries=0) as b,
        httpx.Client(base_url=live.base_url, headers={"Authorization": f"Bearer {alice}"}) as h,
    ):
        yield a, b, h


@pytest.fixture(scope="module")
def trained(clients) -> str:
    """A run with steps 0-4 kept and a training checkpoint at steps 2 and 4."""
    _, _, http = clients
    run = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 8, "lora_alpha": 16}).json()
    examples = [{"text": "Quuxville is the capital of Zorbia."}]
    for _ in range(4):
        assert http.post(f"/v1/runs/{run['run_id']}/forward_backward", json={"batch": examples})
        step = http.post(f"/v1/runs/{run['run_id']}/optim_step", json={"learning_rate": 5e-2})
        assert step.status_code == 200, step.text
    return run["run_id"]


def _greedy(client, model: str, max_tokens: int = 8) -> str:
    answer = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0
    )
    assert answer.model == model
    return answer.choices[0].text


def test_a_registered_peft_folder_answers_as_peft_generate(clients, peft_folder):
    alice, bob, _ = clients
    ours = _greedy(alice, "peft-tiny")
    assert ours == peft_folder[1]
    assert ours != _greedy(alice, TINY)  # the adapter does change the answer
    assert _greedy(bob, "peft-tiny") == ours  # registered adapters serve every key


def test_steps_and_checkpoints_serve_without_warmup_and_survive_eviction(
    clients, trained, adapter_server
):
    alice, _, _ = clients
    worker = adapter_server[0].state.worker  # what it published after each batch
    names = [f"{trained}@2", f"{trained}@4", f"{trained}:auto-step-2", "peft-tiny"]
    first = {name: _greedy(alice, name, 6) for name in names}
    assert len(worker.info().adapter_keys) == 2  # the count budget of this server
    loads = worker.info().caches["adapters"]["loads"]
    again = {name: _greedy(alice, name, 6) for name in names}
    assert again == first  # evicted ones reloaded, same answers
    assert worker.info().caches["adapters"]["loads"] >= loads + 2
    assert first[f"{trained}@2"] == first[f"{trained}:auto-step-2"]  # the same weights
    assert trained in worker.info().runs  # the live run stays loaded
    caches = httpx.get(f"{adapter_server[0].base_url}/ready").json()["caches"]
    assert caches["adapters"]["adapters"] == 2 and caches["adapters"]["evictions"] >= 2
    assert caches["prefix"][TINY]["lookups"] >= 1


def test_models_page_through_everything_a_key_serves(clients, trained):
    _, _, http = clients
    everything = http.get("/v1/models").json()
    assert everything["has_more"] is False
    ids = [card["id"] for card in everything["data"]]
    for name in (TINY, "peft-tiny", trained, f"{trained}@0", f"{trained}@4"):
        assert name in ids
    assert f"{trained}:auto-step-4" in ids
    paged, after = [], None
    for _ in range(len(ids)):  # bounded
        params = {"limit": 2} | ({"after": after} if after else {})
        page = http.get("/v1/models", params=params).json()
        assert len(page["data"]) <= 2
        paged += [card["id"] for card in page["data"]]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert paged == ids
    bad = http.get("/v1/models", params={"after": "nope"})
    assert bad.status_code == 400 and "last_id" in bad.text
    assert http.get("/v1/models", params={"limit": 0}).status_code in (400, 422)
    card = http.get(f"/v1/models/{trained}@2").json()
    assert card["id"] == f"{trained}@2" and card["parent"] == TINY


def test_another_key_can_neither_list_nor_serve_them(clients, trained):
    _, bob, _ = clients
    listed = {m.id for m in bob.models.list().data}
    assert "peft-tiny" in listed and not any(trained in name for name in listed)
    for name in (trained, f"{trained}@2", f"{trained}:auto-step-2"):
        with pytest.raises(openai.NotFoundError):
            _greedy(bob, name, 2)
        with pytest.raises(openai.NotFoundError):
            bob.models.retrieve(name)
