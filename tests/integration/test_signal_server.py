"""The Signal REST API over real HTTP: tenants, bad input, idempotency, sampling, checkpoints."""

from __future__ import annotations

import io
import json
import tarfile
import time

import httpx
import pytest

from tests.conftest import TINY

TEXT = {"text": "The capital of Zorbia is Quellmar."}
CHAT = {
    "messages": [
        {"role": "user", "content": "What is the capital of Zorbia?"},
        {"role": "assistant", "content": "Quellmar."},
    ]
}


def client(server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=60)


def wait_ready(http: httpx.Client) -> None:
    for _ in range(600):  # bounded: 60 s
        if http.get("/ready").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("server never became ready")


def new_run(http: httpx.Client, **config) -> str:
    response = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4, **config})
    assert response.status_code == 200, response.text
    return response.json()["run_id"]


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert "x-request-id" in response.headers
    return response.json()["error"]["message"]


@pytest.fixture(scope="module")
def http(server, alice):
    with client(server, alice) as http:
        wait_ready(http)
        yield http


def test_a_request_without_a_valid_key_is_refused_with_a_hint(server, alice):
    with client(server, None) as anonymous:
        assert "Authorization: Bearer" in error_of(anonymous.get("/v1/runs"), 401)
    with client(server, "sk-fs-not-a-key") as wrong:
        assert "invalid API key" in error_of(wrong.get("/v1/runs"), 401)


def test_a_run_trains_samples_and_reports_its_history(http):
    run_id = new_run(http, seed=3)
    status = http.get(f"/v1/runs/{run_id}").json()
    assert status["step"] == 0 and status["config"]["optimizer"] == "adamw_8bit"
    assert "fp32 state" in status["effective"]["optimizer"]
    first = http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT, CHAT]}).json()
    assert first["step"] == 1 and first["loss"] > 0 and first["grad_norm"] > 0
    assert set(first["grad_stats"]) == {"max_abs", "num_params", "nonfinite"}
    step = http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 1e-2}).json()
    assert step["step"] == 1 and step["learning_rate"] == 1e-2
    assert step["metrics"]["loss"] == pytest.approx(first["loss"])
    sample = http.post(
        f"/v1/runs/{run_id}/sample",
        json={"prompts": ["The capital", "Hello"], "max_tokens": 4, "return_logprobs": True},
    ).json()
    assert len(sample["outputs"]) == 2 and all(len(lp) <= 4 for lp in sample["logprobs"])
    assert sample["step"] == 1 and set(sample["finish_reasons"]) <= {"stop", "length"}
    history = http.get(f"/v1/runs/{run_id}/metrics").json()["data"]
    assert [row["step"] for row in history] == [1] and history[0]["tokens"] == first["tokens"]
    assert run_id in [run["run_id"] for run in http.get("/v1/runs").json()["data"]]


def test_accumulate_adds_gradients_and_the_default_clears_them(http):
    run_id = new_run(http, seed=4)
    url = f"/v1/runs/{run_id}/forward_backward"
    alone = http.post(url, json={"batch": [TEXT]}).json()["grad_norm"]
    cleared = http.post(url, json={"batch": [TEXT]}).json()["grad_norm"]
    summed = http.post(url, json={"batch": [TEXT], "accumulate": True}).json()["grad_norm"]
    assert cleared == pytest.approx(alone, rel=1e-5)
    assert summed == pytest.approx(2 * alone, rel=1e-4)


def test_another_tenant_gets_404_for_everything_of_a_run(server, http, bob):
    run_id = new_run(http)
    http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
    http.post(f"/v1/runs/{run_id}/optim_step", json={})
    saved = http.post(f"/v1/runs/{run_id}/save_state", json={}).json()
    with client(server, bob) as other:
        for method, path, body in [
            ("GET", f"/v1/runs/{run_id}", None),
            ("GET", f"/v1/runs/{run_id}/metrics", None),
            ("GET", f"/v1/runs/{run_id}/checkpoints", None),
            ("GET", f"/v1/runs/{run_id}/checkpoints/{saved['checkpoint_id']}/archive", None),
            ("POST", f"/v1/runs/{run_id}/forward_backward", {"batch": [TEXT]}),
            ("POST", f"/v1/runs/{run_id}/sample", {"prompts": ["Hi"]}),
            ("POST", f"/v1/runs/{run_id}/save_state", {}),
            ("DELETE", f"/v1/runs/{run_id}", None),
        ]:
            assert "no run" in error_of(other.request(method, path, json=body), 404)
        assert run_id not in [r["run_id"] for r in other.get("/v1/runs").json()["data"]]
    assert http.get(f"/v1/runs/{run_id}").json()["step"] == 1  # untouched


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"base_model": "meta-llama/Llama-3.2-3B"}, 404, "Available models"),
        ({"base_model": TINY, "lora_r": 0}, 422, "lora_r"),
        ({"base_model": TINY, "optimizer": "adam"}, 422, "optimizer"),
        ({"base_model": TINY, "learning_rate": -1}, 422, "learning_rate"),
        ({"base_model": TINY, "lora_target_modules": ["qq"]}, 400, "valid: q_proj"),
        ({"base_model": TINY, "lora_rank": 8}, 422, "lora_rank"),
        ({"lora_r": 8}, 422, "base_model"),
    ],
)
def test_bad_run_configs_get_4xx_naming_the_problem(http, body, status, needle):
    assert needle in error_of(http.post("/v1/runs", json=body), status)


def test_bad_training_and_sampling_input_gets_4xx_and_the_server_keeps_serving(http):
    run_id = new_run(http, max_seq_length=16)
    url = f"/v1/runs/{run_id}/forward_backward"
    assert "empty" in error_of(http.post(url, json={"batch": []}), 400)
    bad_messages = {"messages": [{"role": "user"}]}
    assert "example 0" in error_of(http.post(url, json={"batch": [bad_messages]}), 400)
    no_answer = {"messages": [{"role": "user", "content": "Hi"}]}
    assert "assistant" in error_of(http.post(url, json={"batch": [no_answer]}), 400)
    long_text = {"text": "word " * 100}
    assert "max_seq_length" in error_of(http.post(url, json={"batch": [long_text]}), 400)
    assert "forward_backward first" in error_of(
        http.post(f"/v1/runs/{run_id}/optim_step", json={}), 400
    )
    assert "no run" in error_of(
        http.post("/v1/runs/run_nope/forward_backward", json={"batch": [TEXT]}), 404
    )
    sample = f"/v1/runs/{run_id}/sample"
    assert "kept steps: [0]" in error_of(http.post(sample, json={"prompts": ["a"], "step": 9}), 404)
    assert "empty" in error_of(http.post(sample, json={"prompts": []}), 400)
    assert "temperature" in error_of(
        http.post(sample, json={"prompts": ["a"], "temperature": -1}), 422
    )
    assert "JSON" in error_of(
        http.post(url, content=b"{not json", headers={"content-type": "application/json"}), 422
    )
    assert http.get("/health").status_code == 200
    assert http.post(url, json={"batch": [TEXT]}).status_code == 200


def test_the_same_idempotency_key_is_applied_once(http):
    run_id = new_run(http)
    http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
    headers = {"Idempotency-Key": "step-once"}
    first = http.post(f"/v1/runs/{run_id}/optim_step", json={}, headers=headers)
    again = http.post(f"/v1/runs/{run_id}/optim_step", json={}, headers=headers)
    assert first.json() == again.json() and first.json()["step"] == 1
    assert http.get(f"/v1/runs/{run_id}").json()["step"] == 1
    different = http.post(
        f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 1.0}, headers=headers
    )
    assert "different" in error_of(different, 409)
    assert different.headers["x-should-retry"] == "false"  # retrying cannot help


def test_past_steps_sample_their_own_weights_and_unkept_steps_are_named(http):
    run_id = new_run(http, seed=11)
    for _ in range(3):
        http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
        http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 0.05})
    assert http.get(f"/v1/runs/{run_id}/steps").json()["steps"] == [0, 1, 2, 3]
    greedy = {"prompts": ["The capital of Zorbia is"], "max_tokens": 6, "temperature": 0}
    url = f"/v1/runs/{run_id}/sample"
    at = {step: http.post(url, json=greedy | {"step": step}).json() for step in (0, 3)}
    now = http.post(url, json=greedy).json()
    assert at[3]["outputs"] == now["outputs"] and at[0]["step"] == 0
    embedding_now = http.post(f"/v1/runs/{run_id}/embeddings", json={"texts": ["Zorbia"]}).json()
    embedding_0 = http.post(
        f"/v1/runs/{run_id}/embeddings", json={"texts": ["Zorbia"], "step": 0}
    ).json()
    assert embedding_now["embeddings"] != embedding_0["embeddings"]


def test_streaming_sends_tokens_then_the_finish_reason(http):
    run_id = new_run(http)
    body = {"prompt": "Hello", "max_tokens": 5, "temperature": 0, "seed": 1}
    with http.stream("POST", f"/v1/runs/{run_id}/sample/stream", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    events = [json.loads(line) for line in lines[:-1]]
    tokens, final = events[:-1], events[-1]
    assert final["usage"]["completion_tokens"] == len(tokens) and final["finish_reason"]
    whole = http.post(f"/v1/runs/{run_id}/sample", json={"prompts": ["Hello"]} | body).json()
    assert "".join(e["text"] for e in events) == whole["outputs"][0]
    # A stop string is cut from the streamed text as from the output, never sent and taken back.
    longer = body | {"max_tokens": 16}
    full = http.post(f"/v1/runs/{run_id}/sample", json={"prompts": ["Hello"]} | longer).json()
    stop = full["outputs"][0][3:5]
    cut = longer | {"stop": [stop]}
    with http.stream("POST", f"/v1/runs/{run_id}/sample/stream", json=cut) as response:
        streamed = [json.loads(line[6:]) for line in response.iter_lines() if line[6:7] == "{"]
    expected = full["outputs"][0][: full["outputs"][0].index(stop)]
    assert "".join(e["text"] for e in streamed) == expected
    assert all(stop not in e["text"] for e in streamed) and streamed[-1]["finish_reason"] == "stop"


def test_checkpoints_are_listed_with_digests_and_download_as_peft_folders(http):
    run_id = new_run(http)
    http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
    http.post(f"/v1/runs/{run_id}/optim_step", json={})
    saved = http.post(f"/v1/runs/{run_id}/save_state", json={"mode": "adapter"}).json()
    # A remote caller gets the archive's download URL, not a server path (issue 18).
    archive = f"/v1/runs/{run_id}/checkpoints/{saved['checkpoint_id']}/archive"
    assert saved["artifact_uri"].endswith(archive)
    assert saved["step"] == 1
    listed = http.get(f"/v1/runs/{run_id}/checkpoints").json()["data"]
    assert [c["checkpoint_id"] for c in listed] == [saved["checkpoint_id"]]
    assert listed[0]["size"] > 0 and len(listed[0]["sha256"]) == 64
    archive = http.get(f"/v1/runs/{run_id}/checkpoints/{saved['checkpoint_id']}/archive")
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        names = tar.getnames()
    assert f"{saved['checkpoint_id']}/adapter_config.json" in names
    pushed = http.post(
        f"/v1/runs/{run_id}/save_state", json={"push_to_hub": True, "hub_model_id": "me/model"}
    )
    assert "saved locally at" in error_of(pushed, 502)
    assert pushed.headers["x-should-retry"] == "false"
    assert "hub_model_id" in error_of(
        http.post(f"/v1/runs/{run_id}/save_state", json={"push_to_hub": True}), 400
    )
