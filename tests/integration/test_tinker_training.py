"""The real hpcai SDK (0.2.0) drives our server over HTTP: training, forward, optimizer steps,
checkpoints and sampling through the Tinker-style API (docs/tinker-api.md)."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.conftest import TINY
from tests.integration.conftest import make_key
from tests.integration.tinker_support import (
    FACT,
    LR,
    fact_datum,
    hpcai,
    loss_of,
    tokens_input,
    types,
)


def test_server_capabilities_list_the_loaded_base_model(hpcai_client):
    names = [m.model_name for m in hpcai_client.get_server_capabilities().supported_models]
    assert TINY in names


def test_forward_backward_and_optim_step_lower_the_loss_of_a_small_fact(
    hpcai_client, tiny_tokenizer
):
    # Attention-only LoRA learns slowly on the tiny random model: train every layer kind here.
    training = hpcai_client.create_lora_training_client(
        base_model=TINY, rank=8, seed=1, train_mlp=True, train_unembed=True
    )
    datum = fact_datum(tiny_tokenizer)
    losses = []
    for _ in range(5):
        fwd_bwd = training.forward_backward([datum], loss_fn="cross_entropy")
        optim = training.optim_step(LR)
        output = fwd_bwd.result()
        optim.result()
        losses.append(loss_of(output))
        logprobs = output.loss_fn_outputs[0]["logprobs"]
        assert logprobs.dtype == "float32" and len(logprobs.data) == datum.model_input.length
        # Sum reduction: the loss is the sum of the per-token losses, not their mean.
        assert loss_of(output) == pytest.approx(-sum(logprobs.data), rel=1e-4)
    assert losses[-1] < losses[0] * 0.7, losses
    after = training.forward([datum], loss_fn="cross_entropy").result()
    assert loss_of(after) < losses[-1]


def test_gradients_accumulate_over_forward_backward_calls_until_the_step(
    hpcai_client, tiny_tokenizer
):
    """Two forward_backward calls then one step == one call on both datums then one step."""
    datum = fact_datum(tiny_tokenizer)
    other = fact_datum(tiny_tokenizer, "Quellmar lies on the river Ost.")
    split = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=7)
    split.forward_backward([datum], "cross_entropy")
    split.forward_backward([other], "cross_entropy")
    split.optim_step(LR).result()
    joined = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=7)
    joined.forward_backward([datum, other], "cross_entropy")
    joined.optim_step(LR).result()
    probe = [datum, other]
    split_loss = loss_of(split.forward(probe, "cross_entropy").result())
    joined_loss = loss_of(joined.forward(probe, "cross_entropy").result())
    assert split_loss == pytest.approx(joined_loss, rel=1e-3)


@pytest.mark.parametrize(
    "switches",
    [
        {"train_attn": True, "train_mlp": False, "train_unembed": False},
        {"train_attn": False, "train_mlp": True, "train_unembed": False},
        {"train_attn": False, "train_mlp": False, "train_unembed": True},
        {"train_attn": True, "train_mlp": True, "train_unembed": True},
    ],
)
def test_each_lora_switch_makes_a_run_that_trains(hpcai_client, tiny_tokenizer, switches):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=2, **switches)
    datum = fact_datum(tiny_tokenizer)
    first = training.forward_backward([datum], "cross_entropy").result()
    training.optim_step(LR).result()
    second = training.forward([datum], "cross_entropy").result()
    assert loss_of(second) < loss_of(first)
    info = training.get_info()
    assert info.model_data.model_name == TINY


def test_save_weights_for_sampler_then_sample_and_compute_logprobs(hpcai_client, tiny_tokenizer):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=3)
    training.forward_backward([fact_datum(tiny_tokenizer)], "cross_entropy")
    training.optim_step(LR).result()
    sampler = training.save_weights_and_get_sampling_client("first")
    assert sampler.model_path == f"hpcai://{training.model_id}/sampler/first"
    prompt = tokens_input(tiny_tokenizer, "The capital")
    params = types.SamplingParams(max_tokens=5, temperature=1.0, seed=11)
    result = sampler.sample(prompt=prompt, num_samples=3, sampling_params=params).result()
    assert len(result.sequences) == 3
    for sequence in result.sequences:
        assert 1 <= len(sequence.tokens) <= 5
        assert len(sequence.logprobs) == len(sequence.tokens)
        assert sequence.stop_reason in ("length", "stop")
    logprobs = sampler.compute_logprobs(prompt).result()
    assert len(logprobs) == prompt.length and logprobs[0] is None
    assert all(isinstance(v, float) and v <= 0 for v in logprobs[1:])
    # Greedy with no max_tokens: the server default applies.
    greedy = types.SamplingParams(max_tokens=None, temperature=0.0)
    again = sampler.sample(prompt=prompt, num_samples=1, sampling_params=greedy).result()
    assert 1 <= len(again.sequences[0].tokens) <= 128


def test_a_sampling_client_with_base_model_and_model_path_samples_the_path(
    hpcai_client, tiny_tokenizer
):
    training = hpcai_client.create_lora_training_client(
        base_model=TINY, rank=8, seed=4, train_mlp=True, train_unembed=True
    )
    for _ in range(4):
        training.forward_backward([fact_datum(tiny_tokenizer)], "cross_entropy")
        training.optim_step(LR)
    path = training.save_weights_for_sampler("trained").result().path
    trained = hpcai_client.create_sampling_client(model_path=path, base_model=TINY)
    bare = hpcai_client.create_sampling_client(base_model=TINY)
    prompt = tokens_input(tiny_tokenizer, FACT)
    trained_lp = trained.compute_logprobs(prompt).result()
    bare_lp = bare.compute_logprobs(prompt).result()
    assert sum(trained_lp[1:]) > sum(bare_lp[1:]) + 1.0


def test_stop_strings_and_stop_token_ids_end_sampling(hpcai_client, tiny_tokenizer):
    sampler = hpcai_client.create_sampling_client(base_model=TINY)
    prompt = tokens_input(tiny_tokenizer, "Hello")
    free = sampler.sample(
        prompt, 1, types.SamplingParams(max_tokens=6, temperature=0.0, stop=[])
    ).result()
    first_token = free.sequences[0].tokens[0]
    stopped = sampler.sample(
        prompt, 1, types.SamplingParams(max_tokens=6, temperature=0.0, stop=[first_token])
    ).result()
    assert stopped.sequences[0].tokens == [first_token]
    assert stopped.sequences[0].stop_reason == "stop"
    text = tiny_tokenizer.decode(free.sequences[0].tokens[:2])
    if text.strip():
        by_text = sampler.sample(
            prompt, 1, types.SamplingParams(max_tokens=6, temperature=0.0, stop=text)
        ).result()
        assert len(by_text.sequences[0].tokens) <= 2


def test_the_async_variants_work(hpcai_client, tiny_tokenizer):
    async def flow():
        training = await hpcai_client.create_lora_training_client_async(base_model=TINY, rank=4)
        datum = fact_datum(tiny_tokenizer)
        fwd_bwd = await training.forward_backward_async([datum], "cross_entropy")
        optim = await training.optim_step_async(LR)
        output = await fwd_bwd.result_async()
        await optim.result_async()
        forward = await (await training.forward_async([datum], "cross_entropy")).result_async()
        saved = await (await training.save_state_async("async-state")).result_async()
        sampler = await training.save_weights_and_get_sampling_client_async("async-sampler")
        prompt = types.ModelInput.from_ints([1, 2, 3])
        sample = await sampler.sample_async(prompt, 2, types.SamplingParams(max_tokens=3))
        capabilities = await hpcai_client.get_server_capabilities_async()
        await (await training.unload_model_async()).result_async()
        return output, forward, saved, sample, capabilities

    output, forward, saved, sample, capabilities = asyncio.run(flow())
    assert loss_of(forward) < loss_of(output)
    assert saved.path.endswith("/training/async-state")
    assert len(sample.sequences) == 2 and capabilities.supported_models


def test_an_infinite_loss_comes_back_as_json_not_a_server_error(hpcai_client, tiny_tokenizer):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    datum = fact_datum(tiny_tokenizer)
    length = datum.model_input.length
    datum.loss_fn_inputs["weights"] = types.TensorData(
        data=[3e38] * length, dtype="float32", shape=[length]
    )
    output = training.forward([datum], "cross_entropy").result()
    assert math.isinf(loss_of(output))


def test_bad_input_is_a_clear_error(hpcai_client, tiny_tokenizer):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    datum = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"target_tokens": [1, 2]},
    )
    with pytest.raises(Exception, match="one per model_input token"):
        training.forward_backward([datum], "cross_entropy").result()
    with pytest.raises(ValueError, match="nothing to apply"):
        training.optim_step(LR).result()


def test_an_unknown_base_model_is_a_not_found_error_listing_ours(hpcai_client):
    with pytest.raises(hpcai.NotFoundError, match=TINY):
        hpcai_client.create_lora_training_client(base_model="meta-llama/Llama-3.2-3B")


def test_a_bad_key_is_an_authentication_error(server):
    wrong = hpcai.ServiceClient(base_url=server.base_url, api_key="sk-fs-not-a-key")
    with pytest.raises(hpcai.AuthenticationError):
        wrong.get_server_capabilities()


def test_another_tenant_cannot_touch_a_run(server, hpcai_client, data_dir):
    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    other = hpcai.ServiceClient(base_url=server.base_url, api_key=make_key(data_dir, "carol"))
    with pytest.raises(hpcai.NotFoundError):
        other.create_rest_client().get_training_run(training.model_id).result()


def test_forward_backward_custom_matches_cross_entropy_for_the_same_loss(
    hpcai_client, tiny_tokenizer
):
    """The SDK's custom loss sends weights = -dC/dlogprobs: with C = -sum(logprobs) that is
    cross_entropy, so both runs take the same step (the server's loss is a plain sum)."""

    def negative_sum(data, logprobs_list):
        loss = -sum(logprobs.sum() for logprobs in logprobs_list)
        return loss, {"custom:sum": float(loss)}

    datum = fact_datum(tiny_tokenizer)
    custom = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=12)
    output = custom.forward_backward_custom([datum], negative_sum).result()
    custom.optim_step(LR).result()
    plain = hpcai_client.create_lora_training_client(base_model=TINY, rank=4, seed=12)
    plain.forward_backward([datum], "cross_entropy")
    plain.optim_step(LR).result()
    assert output.metrics["custom:sum"] == pytest.approx(loss_of(output), rel=1e-4)
    custom_after = loss_of(custom.forward([datum], "cross_entropy").result())
    plain_after = loss_of(plain.forward([datum], "cross_entropy").result())
    assert custom_after == pytest.approx(plain_after, rel=1e-4)
