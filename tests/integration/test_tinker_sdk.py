"""The official tinker 0.38 SDK against a real server on 127.0.0.1 (docs/tinker-sdk.md): the
start-up handshake, sessions, protobuf forward_backward and results, sampling sessions, state
round trips, REST, the async variants, keys, and hpcai 0.2.0 on the same server at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import TINY

tinker = pytest.importorskip("tinker")
types = tinker.types

FACT = "The capital of Zorbia is Quellmar."
LR = types.AdamParams(learning_rate=5e-3)


@pytest.fixture(scope="module", autouse=True)
def no_telemetry():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINKER_TELEMETRY", "0")
        patch.delenv("TINKER_API_KEY", raising=False)
        patch.delenv("TINKER_BASE_URL", raising=False)
        yield


@pytest.fixture(scope="module")
def tml_key(alice) -> str:
    return "tml-" + alice.removeprefix("sk-fs-")


@pytest.fixture(scope="module")
def service(server, tml_key):
    server.wait_ready()
    client = tinker.ServiceClient(base_url=server.base_url, api_key=tml_key)
    yield client
    client.close("success").result()


def fact_datum(tokenizer) -> types.Datum:
    tokens = tokenizer(FACT, add_special_tokens=False)["input_ids"]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def step(training, datum) -> float:
    forward_backward = training.forward_backward([datum], "cross_entropy")
    optim = training.optim_step(LR)
    loss = forward_backward.result().metrics["loss:sum"]
    optim.result()
    return loss


def test_capabilities_list_the_served_model_and_a_tml_key_works(service):
    names = [m.model_name for m in service.get_server_capabilities().supported_models]
    assert TINY in names


def test_a_wrong_key_is_the_sdks_authentication_error(server):
    client = tinker.ServiceClient(base_url=server.base_url, api_key="tml-not-a-key")
    with pytest.raises(tinker.AuthenticationError):
        client.get_server_capabilities()


def test_training_state_round_trip_and_sampling(service, tiny_tokenizer):
    datum = fact_datum(tiny_tokenizer)
    training = service.create_lora_training_client(base_model=TINY, rank=8).result()
    assert training.model_id.endswith(":train:0") or ":train:" in training.model_id
    losses = [step(training, datum) for _ in range(4)]
    assert losses[-1] < losses[0], losses
    forward = training.forward([datum], "cross_entropy").result()
    assert len(forward.loss_fn_outputs[0]["logprobs"].tolist()) == len(datum.model_input.to_ints())

    path = training.save_state("fact-state").result().path
    assert path.startswith("tinker://") and "/weights/" in path
    continued = [step(training, datum) for _ in range(2)]
    assert continued[0] == pytest.approx(forward.metrics["loss:sum"], rel=1e-5)

    restored = service.create_training_client_from_state_with_optimizer(path).result()
    assert ":train:" in restored.model_id and restored.model_id != training.model_id
    again = [step(restored, datum) for _ in range(2)]
    assert again == pytest.approx(continued, rel=1e-4)  # weights and Adam moments restored

    training.load_state(path).result()  # weights only: the next loss is the saved one
    reloaded = training.forward([datum], "cross_entropy").result().metrics["loss:sum"]
    assert reloaded == pytest.approx(continued[0], rel=1e-5)

    sampler = training.save_weights_and_get_sampling_client()
    prompt = types.ModelInput.from_ints(datum.model_input.to_ints()[:4])
    params = types.SamplingParams(max_tokens=6, stop=["."], temperature=1.0, seed=1)
    result = sampler.sample(prompt, num_samples=3, sampling_params=params).result()
    assert len(result.sequences) == 3
    for sequence in result.sequences:
        assert sequence.stop_reason in ("stop", "length")
        assert 1 <= len(sequence.tokens) <= 6 and len(sequence.logprobs) == len(sequence.tokens)
    logprobs = sampler.compute_logprobs(prompt).result()
    assert len(logprobs) == 4 and logprobs[0] is None and all(v < 0 for v in logprobs[1:])


def test_rest_client_lists_publishes_expires_and_deletes(server, service, tiny_tokenizer):
    training = service.create_lora_training_client(base_model=TINY, rank=4).result()
    step(training, fact_datum(tiny_tokenizer))
    path = training.save_state("rest-state", ttl_seconds=3600).result().path
    rest = service.create_rest_client()
    run_ids = [
        run.training_run_id for run in rest.list_training_runs(limit=100).result().training_runs
    ]
    assert training.model_id in run_ids
    (checkpoint,) = [
        c
        for c in rest.list_checkpoints(training.model_id).result().checkpoints
        if c.checkpoint_type == "training" and c.tinker_path == path
    ]
    assert checkpoint.checkpoint_id == "weights/rest-state" and checkpoint.size_bytes > 0
    assert checkpoint.expires_at is not None and not checkpoint.public
    info = rest.get_weights_info_by_tinker_path(path).result()
    assert info.base_model == TINY and info.lora_rank == 4

    rest.publish_checkpoint_from_tinker_path(path).result()
    assert rest.get_training_run_by_tinker_path(path).result().last_checkpoint.public
    rest.unpublish_checkpoint_from_tinker_path(path).result()
    rest.delete_checkpoint_from_tinker_path(path).result()
    left = rest.list_checkpoints(training.model_id).result().checkpoints
    assert path not in [c.tinker_path for c in left]
    with pytest.raises(tinker.NotFoundError, match="no training checkpoint"):
        training.load_state(path).result()


def test_unsupported_loss_and_optimizer_are_clear_400s(service, tiny_tokenizer):
    training = service.create_lora_training_client(base_model=TINY, rank=4).result()
    with pytest.raises(tinker.BadRequestError, match="unknown loss_fn 'gspo'"):
        training.forward_backward([fact_datum(tiny_tokenizer)], "gspo").result()
    output = training.forward_backward(
        [_rl_datum(tiny_tokenizer)], "dro", loss_fn_config={"beta": 0.1}
    ).result()
    assert "loss:sum" in output.metrics


def _rl_datum(tokenizer) -> types.Datum:
    tokens = tokenizer(FACT, add_special_tokens=False)["input_ids"]
    n = len(tokens) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [-2.0] * n,
            "advantages": [1.0] * n,
        },
    )


def test_async_variants_train_and_sample(service, tiny_tokenizer):
    datum = fact_datum(tiny_tokenizer)

    async def run() -> tuple[list[float], int]:
        training = await service.create_lora_training_client_async(base_model=TINY, rank=8)
        losses = []
        for _ in range(3):
            forward_backward = await training.forward_backward_async([datum], "cross_entropy")
            optim = await training.optim_step_async(LR)
            losses.append((await forward_backward).metrics["loss:sum"])
            await optim
        sampler = await training.save_weights_and_get_sampling_client_async()
        prompt = types.ModelInput.from_ints(datum.model_input.to_ints()[:3])
        params = types.SamplingParams(max_tokens=4, temperature=0.0)
        result = await sampler.sample_async(prompt, num_samples=2, sampling_params=params)
        return losses, len(result.sequences)

    losses, sequences = asyncio.run(run())
    assert losses[-1] < losses[0] and sequences == 2


def test_plain_zstd_off_and_httpx_transport_still_train(server, tml_key, tiny_tokenizer):
    server.state.tinker.compress_fwdbwd = False
    server.state.tinker.use_pyqwest_transport = False
    try:
        client = tinker.ServiceClient(base_url=server.base_url, api_key=tml_key)
        training = client.create_lora_training_client(base_model=TINY, rank=4).result()
        datum = fact_datum(tiny_tokenizer)
        assert step(training, datum) > step(training, datum) - 1e3  # both calls complete
        client.close("success").result()
    finally:
        server.state.tinker.compress_fwdbwd = True
        server.state.tinker.use_pyqwest_transport = True


def test_hpcai_and_tinker_see_each_others_runs(service, hpcai_client, tiny_tokenizer):
    hpcai_training = hpcai_client.create_lora_training_client(base_model=TINY, rank=4)
    tinker_training = service.create_lora_training_client(base_model=TINY, rank=4).result()
    tinker_runs = service.create_rest_client().list_training_runs(limit=100).result()
    hpcai_runs = hpcai_client.create_rest_client().list_training_runs(limit=100).result()
    assert hpcai_training.model_id in [r.training_run_id for r in tinker_runs.training_runs]
    assert tinker_training.model_id in [r.training_run_id for r in hpcai_runs.training_runs]
    started = time.monotonic()
    step(tinker_training, fact_datum(tiny_tokenizer))
    assert time.monotonic() - started < 60
