"""Every example of seed 002 (the HPC-AI ServiceClient reference), run with the real hpcai SDK
against our server. Edits from the seed: our base URL, key and tiny model; `training_data`
defined; `hpcai://…/training/…` for the seed's `…/weights/…` (hpcai 0.2.0's own path parser
refuses `weights` on the client, before anything is sent)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY
from tests.integration.tinker_support import fact_datum, hpcai


@pytest.fixture(scope="module")
def training_data(tiny_tokenizer):
    return [fact_datum(tiny_tokenizer)]


def test_get_server_capabilities_example(hpcai_client, capsys):
    capabilities = hpcai_client.get_server_capabilities()
    print(f"Server supports {len(capabilities.supported_models)} models")
    for model in capabilities.supported_models:
        if model.model_name:
            print(f"  - {model.model_name}")
    assert f"  - {TINY}" in capsys.readouterr().out


def test_create_lora_training_client_examples(hpcai_client):
    training_client = hpcai_client.create_lora_training_client(base_model=TINY)
    assert training_client.model_id
    custom = hpcai_client.create_lora_training_client(
        base_model=TINY,
        rank=64,
        seed=42,
        train_mlp=False,
        train_attn=True,  # only fine tune on attention layers
        train_unembed=False,
    )
    run = hpcai_client.create_rest_client().get_training_run(custom.model_id).result()
    assert run.lora_rank == 64


def test_create_training_client_from_state_examples(hpcai_client, training_data):
    source = hpcai_client.create_lora_training_client(base_model=TINY, rank=8)
    source.forward_backward(training_data, loss_fn="cross_entropy")
    source.optim_step(hpcai.AdamParams(learning_rate=1e-4))
    checkpoint_path = source.save_state("step_0010").result().path
    assert checkpoint_path == f"hpcai://{source.model_id}/training/step_0010"

    # Resuming training from a saved checkpoint.
    training_client = hpcai_client.create_training_client_from_state(checkpoint_path)
    fwd_bwd = training_client.forward_backward(training_data, loss_fn="cross_entropy")
    optim = training_client.optim_step(hpcai.AdamParams(learning_rate=1e-4))
    fwd_bwd.result()
    optim.result()
    training_client.unload_model().result()

    # Getting the checkpoint path from the RestClient and restoring.
    rest_client = hpcai_client.create_rest_client()
    checkpoints_response = rest_client.list_checkpoints(source.model_id).result()
    assert checkpoints_response.checkpoints
    latest_checkpoint = checkpoints_response.checkpoints[-1]
    restored = hpcai_client.create_training_client_from_state(latest_checkpoint.checkpoint_path)
    assert restored.model_id not in (source.model_id, training_client.model_id)


def test_create_training_client_examples(hpcai_client, training_data):
    existing_model_id = hpcai_client.create_lora_training_client(base_model=TINY).model_id
    training_client = hpcai_client.create_training_client(model_id=existing_model_id)
    assert training_client.model_id == existing_model_id
    fwd_bwd = training_client.forward_backward(training_data, loss_fn="cross_entropy")
    optim = training_client.optim_step(hpcai.AdamParams(learning_rate=1e-4))
    fwd_bwd.result()
    optim.result()

    # The seed's "no model_id, then load_state" cannot work with hpcai 0.2.0: the SDK asserts
    # on the client that a model_id is set, before sending anything.
    unbound = hpcai_client.create_training_client(model_id=None)
    with pytest.raises(AssertionError, match="model_id"):
        unbound.load_state(f"hpcai://{existing_model_id}/training/x").result()


def test_create_rest_client_example(hpcai_client):
    training_run_id = hpcai_client.create_lora_training_client(base_model=TINY).model_id
    rest_client = hpcai_client.create_rest_client()
    checkpoints_response = rest_client.list_checkpoints(training_run_id).result()
    training_run = rest_client.get_training_run(training_run_id).result()
    assert checkpoints_response.checkpoints == []
    assert training_run.training_run_id == training_run_id
