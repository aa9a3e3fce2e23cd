"""The official tinker 0.38 SDK against a real server on 127.0.0.1 (docs/tinker-sdk.md): the
start-up handshake, sessions, protobuf forward_backward and results, sampling sessions, state
round trips, REST, the async variants, keys, and hpcai 0.2.0 on the same server at once."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import torch

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
    with (
        tinker.ServiceClient(base_url=server.base_url, api_key="tml-not-a-key") as client,
        pytest.raises(tinker.AuthenticationError),
    ):
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


# ----- checkpoint download: save_weights_external + signed per-file URLs -----------------------
def _external_export(service, tiny_tokenizer, name: str):
    training = service.create_lora_training_client(base_model=TINY, rank=4).result()
    step(training, fact_datum(tiny_tokenizer))
    return training, training.save_weights_external(name).result().path


def _server_folder(server, path: str) -> Path:
    run_id = path.removeprefix("tinker://").split("/")[0]
    (row,) = [
        c
        for c in server.state.store.list_checkpoints(run_id, "external")
        if c.name == path.rsplit("/", 1)[1]
    ]
    return Path(row.path)


def test_save_weights_external_downloads_the_adapter_through_signed_urls(
    server, service, alice, data_dir, tiny_tokenizer, tmp_path
):
    from safetensors import safe_open
    from tinker.cli.commands.checkpoint import _download_external_weights

    training, path = _external_export(service, tiny_tokenizer, "export")
    assert path == f"tinker://{training.model_id}/external_weights/export"
    rest = service.create_rest_client()
    listed = rest.list_checkpoints(training.model_id).result().checkpoints
    (external,) = [c for c in listed if c.tinker_path == path]
    assert external.checkpoint_type == "external" and external.size_bytes > 0
    assert external.checkpoint_id == "external_weights/export"

    before = time.time()
    signed = rest.get_external_weights_urls(path).result()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(signed.urls)
    assert 3500 < signed.expires.timestamp() - before < 3700
    folder = _server_folder(server, path)
    with httpx.Client(timeout=60) as http:  # no API key: the signature is the grant
        for relpath, url in signed.urls.items():
            response = http.get(url)
            assert response.status_code == 200, response.text
            assert response.content == (folder / relpath).read_bytes()
            (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relpath).write_bytes(response.content)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    with safe_open(str(tmp_path / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
        trained = [weights.get_tensor(n).abs().sum().item() for n in names if "lora_B" in n]
        assert max(trained) > 0  # lora_B starts at zero: these are the trained weights

    # tinker's own downloader (`tinker checkpoint download`): urllib, TTL renewal, same bytes
    cli_dir = tmp_path / "cli"
    total = _download_external_weights(
        rest, path, cli_dir, show_progress=False, format="json", renew_ttl_seconds=3600
    )
    assert total == external.size_bytes
    for relpath in signed.urls:
        assert (cli_dir / relpath).read_bytes() == (folder / relpath).read_bytes()

    secret = data_dir / "url-signing.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) == 64
    training.save_state("kept").result()
    hpcai_view = httpx.get(  # not a tinker User-Agent: hpcai's types know no `external`
        f"{server.base_url}/api/v1/training_runs/{training.model_id}/checkpoints",
        headers={"X-API-Key": alice},
    ).json()["checkpoints"]
    assert [c["checkpoint_type"] for c in hpcai_view] == ["training"]

    rest.delete_checkpoint_from_tinker_path(path).result()
    gone = httpx.get(signed.urls["adapter_config.json"])
    assert gone.status_code == 404 and "no longer exists" in gone.text


def test_signed_urls_refuse_tampering_other_files_and_expiry(server, service, tiny_tokenizer):
    _, path = _external_export(service, tiny_tokenizer, "signed")
    signed = service.create_rest_client().get_external_weights_urls(path).result()
    url = signed.urls["adapter_config.json"]
    base, _, query = url.partition("?")
    params = dict(item.split("=") for item in query.split("&"))
    signature = params["signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    other_file = signed.urls["adapter_model.safetensors"].split("?")[0]
    later = int(params["expires"]) + 3600
    refused = {
        "tampered signature": f"{base}?expires={params['expires']}&signature={flipped}",
        "another file": f"{other_file}?{query}",
        "later expiry": f"{base}?expires={later}&signature={signature}",
        "no signature": base,
    }
    with httpx.Client(timeout=60) as http:
        assert http.get(url).status_code == 200
        for what, bad in refused.items():
            response = http.get(bad)
            assert response.status_code == 403, (what, response.text)
            assert "signature" in response.json()["error"]["message"], what

        signer = server.state.tinker.signer
        checkpoint_id = base.split("/checkpoint_files/")[1].split("/")[0]
        escape = "../../../../url-signing.key"
        expires = signer.expiry()
        forged = (
            f"{server.base_url}/api/v1/checkpoint_files/{checkpoint_id}/"
            f"{quote(escape, safe='')}?expires={expires}"
            f"&signature={signer.signature(checkpoint_id, escape, expires)}"
        )
        escaped = http.get(forged)
        assert escaped.status_code == 404 and signer.secret.decode() not in escaped.text

        real_clock = signer.clock
        signer.clock = lambda: real_clock() + 3601  # an hour later: the URL has expired
        try:
            expired = http.get(url)
        finally:
            signer.clock = real_clock
        assert expired.status_code == 403 and "expired" in expired.json()["error"]["message"]
        assert http.get(url).status_code == 200


def test_external_weights_urls_are_404_for_another_tenant_unless_public(
    server, service, bob, tiny_tokenizer
):
    _, path = _external_export(service, tiny_tokenizer, "private")
    rest = service.create_rest_client()
    other = tinker.ServiceClient(base_url=server.base_url, api_key="tml-" + bob[len("sk-fs-") :])
    try:
        bob_rest = other.create_rest_client()
        with pytest.raises(tinker.NotFoundError):
            bob_rest.get_external_weights_urls(path).result()
        with pytest.raises(tinker.NotFoundError, match="no external checkpoint named 'nope'"):
            rest.get_external_weights_urls(path.replace("/private", "/nope")).result()
        rest.publish_checkpoint_from_tinker_path(path).result()
        shared = bob_rest.get_external_weights_urls(path).result()
        assert httpx.get(shared.urls["adapter_config.json"]).status_code == 200
        with pytest.raises(tinker.NotFoundError):  # public is readable, not deletable
            bob_rest.delete_checkpoint_from_tinker_path(path).result()
    finally:
        other.close("success").result()


def test_cancel_future_stops_a_pending_sample(server, alice, bob, tiny_tokenizer):
    tokens = tiny_tokenizer(FACT, add_special_tokens=False)["input_ids"]
    body = {
        "base_model": TINY,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": tokens}]},
        "sampling_params": {"max_tokens": 4000, "stop": [], "temperature": 1.0},
        "num_samples": 1,
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        as_alice, as_bob = {"X-API-Key": alice}, {"X-API-Key": bob}
        request_id = http.post("/api/v1/asample", json=body, headers=as_alice).json()["request_id"]
        stranger = http.post(
            "/api/v1/cancel_future", json={"request_id": request_id}, headers=as_bob
        )
        assert stranger.status_code == 404
        cancel = http.post(
            "/api/v1/cancel_future", json={"request_id": request_id}, headers=as_alice
        )
        assert cancel.json() == {"request_id": request_id, "cancelled": True}
        poll = {"request_id": request_id, "allow_metadata_only": True}
        result = http.post("/api/v1/retrieve_future", json=poll, headers=as_alice).json()
        assert result["category"] == "user" and "cancelled" in result["error"]
        again = http.post(
            "/api/v1/cancel_future", json={"request_id": request_id}, headers=as_alice
        )
        assert again.json()["cancelled"] is False  # already finished: nothing to cancel


def test_tinker_cli_downloads_a_training_checkpoint(
    server, service, tml_key, tiny_tokenizer, tmp_path
):
    """`tinker checkpoint download tinker://RUN/weights/NAME`: the SDK's CLI loads the state into
    a new training client, exports it, signs, downloads and deletes the export."""
    from safetensors.torch import load_file
    from tinker.cli.commands.checkpoint import _download_checkpoint

    training = service.create_lora_training_client(base_model=TINY, rank=4).result()
    step(training, fact_datum(tiny_tokenizer))
    path = training.save_state("to-download").result().path
    rest = service.create_rest_client()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINKER_BASE_URL", server.base_url)
        patch.setenv("TINKER_API_KEY", tml_key)
        total = _download_checkpoint(rest, path, tmp_path, show_progress=False, format="json")
    assert total == sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 4
    downloaded = load_file(tmp_path / "adapter_model.safetensors")
    run_id = path.removeprefix("tinker://").split("/")[0]
    (saved,) = [
        c
        for c in server.state.store.list_checkpoints(run_id, "training")
        if c.name == "to-download"
    ]
    original = load_file(Path(saved.path) / "adapter_model.safetensors")
    assert downloaded.keys() == original.keys()
    assert all(torch.equal(downloaded[k], original[k]) for k in original)
    exports = [
        c
        for r in server.state.store.list_runs()
        for c in server.state.store.list_checkpoints(r.id, "external")
        if c.name == "download"
    ]
    assert exports == []  # the temporary export is deleted after the download
