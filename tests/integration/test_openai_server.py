"""The OpenAI-compatible face driven by the official `openai` SDK (sync and async) against the real
server on 127.0.0.1, on the tiny model."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.conftest import TINY
from tests.integration.tool_chat import ANSWER, CALL, QUESTION, RESULT, WEATHER

openai = pytest.importorskip("openai")

FACT = [
    {"role": "user", "content": "What is the capital of Zorbia?"},
    {"role": "assistant", "content": "Quuxville."},
]


def _train(oai_http, examples: list[dict], steps: int, learning_rate: float = 2e-2) -> str:
    run = oai_http.post("/v1/runs", json={"base_model": TINY, "lora_r": 8, "lora_alpha": 16})
    assert run.status_code == 200, run.text
    run_id = run.json()["run_id"]
    for _ in range(steps):
        fb = oai_http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": examples})
        assert fb.status_code == 200, fb.text
        step = oai_http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": learning_rate})
        assert step.status_code == 200, step.text
    return run_id


@pytest.fixture(scope="module")
def tool_run(oai_http) -> str:
    """A run with a few steps on a fact and on the tool format (the tiny model cannot learn
    them; tests/integration/test_openai_tools_slow.py checks the learning on SmolLM2)."""
    examples = [
        {"messages": [QUESTION, CALL, RESULT, ANSWER], "tools": [WEATHER]},
        {"messages": FACT},
    ]
    return _train(oai_http, examples, steps=3)


# ----- models ---------------------------------------------------------------------------------
def test_models_list_base_models_and_the_callers_runs_only(oai, tool_run, server, bob):
    models = {m.id: m for m in oai.models.list().data}
    assert TINY in models and tool_run in models
    assert models[tool_run].model_dump()["parent"] == TINY
    assert oai.models.retrieve(tool_run).id == tool_run
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=bob, max_retries=0) as other:
        assert tool_run not in {m.id for m in other.models.list().data}
        with pytest.raises(openai.NotFoundError):
            other.models.retrieve(tool_run)
        with pytest.raises(openai.NotFoundError, match="not found"):
            other.chat.completions.create(model=tool_run, messages=[QUESTION], max_tokens=4)


# ----- chat -----------------------------------------------------------------------------------
def test_chat_answers_with_usage_and_a_finish_reason(oai):
    response = oai.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, seed=1
    )
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == TINY
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 8 and response.usage.prompt_tokens > 5
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_same_seed_same_answer_and_n_gives_n_choices(oai):
    def ask(seed: int, n: int = 1):
        return oai.chat.completions.create(
            model=TINY, messages=[QUESTION], max_tokens=12, temperature=1.0, seed=seed, n=n
        )

    first, again, other = ask(7), ask(7), ask(8)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    many = ask(7, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert len({c.message.content for c in many.choices}) > 1
    assert many.usage.completion_tokens > first.usage.completion_tokens


def test_streaming_adds_up_to_the_plain_answer_and_ends_with_usage(oai, oai_http):
    common = {"model": TINY, "messages": [QUESTION], "max_tokens": 16, "seed": 3}
    plain = oai.chat.completions.create(**common)
    chunks = list(
        oai.chat.completions.create(**common, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == plain.choices[0].finish_reason and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == plain.usage.model_dump()
    with oai_http.stream("POST", "/v1/chat/completions", json=common | {"stream": True}) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0].removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_stop_strings_cut_the_answer_in_both_modes(oai):
    common = {"model": TINY, "messages": [QUESTION], "max_tokens": 24, "seed": 5}
    full = oai.chat.completions.create(**common).choices[0].message.content
    assert len(full) > 4
    stop = full[2:4]
    cut = oai.chat.completions.create(**common, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.index(stop)] and cut.finish_reason == "stop"
    streamed = oai.chat.completions.create(**common, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == cut.message.content


def test_logprobs_and_top_logprobs(oai):
    response = oai.chat.completions.create(
        model=TINY, messages=[QUESTION], max_tokens=6, logprobs=True, top_logprobs=3, seed=2
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-5


def test_penalties_change_sampling_and_out_of_range_is_a_400(oai):
    common = {"model": TINY, "messages": [QUESTION], "max_tokens": 24, "temperature": 0}
    plain = oai.chat.completions.create(**common).choices[0].message.content
    penalised = oai.chat.completions.create(**common, frequency_penalty=2.0, presence_penalty=2)
    assert penalised.choices[0].message.content != plain
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        oai.chat.completions.create(**common, presence_penalty=3)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"logit_bias": {"five": 1}}, "token ids"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"99999999": 1}}, "outside the vocabulary"),
        ({"extra_body": {"min_p": 1.5}}, "min_p"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "name"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
            "schema",
        ),
        ({"response_format": {"type": "yaml"}}, "json_schema"),
        ({"response_format": {"type": "json_object"}}, "JSON"),
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}}, "x"),
        ({"n": 99}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_completion_tokens": 8190}, "context is 8192 tokens"),
        ({"max_completion_tokens": 8190, "stream": True}, "context is 8192 tokens"),
    ],
)
def test_bad_chat_requests_get_a_400_saying_what_is_wrong(oai, extra, needle):
    with pytest.raises(openai.BadRequestError, match=needle.replace("[", r"\[")) as raised:
        oai.chat.completions.create(model=TINY, messages=[QUESTION], max_tokens=4, **extra)
    assert raised.value.body["type"] == "invalid_request_error"


def test_unknown_models_and_bad_keys_are_refused_in_openai_shape(oai, server):
    with pytest.raises(openai.NotFoundError, match="SmolLM2|tiny-llama") as raised:
        oai.chat.completions.create(model="gpt-3.5-turbo", messages=[QUESTION])
    assert set(raised.value.body) >= {"message", "type", "code", "param"}
    with pytest.raises(openai.BadRequestError, match="role"):
        oai.chat.completions.create(model=TINY, messages=[{"role": "robot", "content": "x"}])
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-fs-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# ----- trained runs ---------------------------------------------------------------------------
def test_a_run_serves_what_the_signal_api_samples_for_the_same_prompt_and_seed(
    oai, oai_http, tool_run, tiny_tokenizer
):
    messages = FACT[:1]
    settings = {"max_tokens": 12, "temperature": 0.8, "top_p": 0.95, "seed": 11}
    chat = oai.chat.completions.create(model=tool_run, messages=messages, **settings)
    prompt = tiny_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    sample = oai_http.post(f"/v1/runs/{tool_run}/sample", json={"prompts": [prompt], **settings})
    assert sample.status_code == 200, sample.text
    assert chat.choices[0].message.content == sample.json()["outputs"][0]


def test_past_steps_and_checkpoints_are_addressable_models(oai, oai_http, tool_run):
    steps = oai_http.get(f"/v1/runs/{tool_run}/steps").json()["steps"]
    assert 0 in steps
    common = {"messages": FACT[:1], "max_tokens": 6, "temperature": 0}
    at_zero = oai.chat.completions.create(model=f"{tool_run}@0", **common)
    base = oai.chat.completions.create(model=TINY, **common)
    assert at_zero.choices[0].message.content == base.choices[0].message.content
    assert at_zero.model == f"{tool_run}@0"
    saved = oai_http.post(f"/v1/runs/{tool_run}/save_state", json={}).json()
    current = oai.chat.completions.create(model=tool_run, **common)
    checkpoint = oai.chat.completions.create(model=f"{tool_run}:{saved['checkpoint_id']}", **common)
    assert checkpoint.choices[0].message.content == current.choices[0].message.content
    with pytest.raises(openai.NotFoundError, match="not kept"):
        oai.chat.completions.create(model=f"{tool_run}@12345", **common)


# ----- completions ----------------------------------------------------------------------------
def test_completions_take_strings_lists_echo_and_logprobs(oai):
    one = oai.completions.create(model=TINY, prompt="The capital of", max_tokens=5, seed=1)
    assert one.object == "text_completion" and len(one.choices) == 1
    assert one.usage.completion_tokens <= 5
    two = oai.completions.create(model=TINY, prompt=["Hello", "Goodbye"], max_tokens=4, n=2, seed=1)
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    echo = oai.completions.create(
        model=TINY, prompt="The capital of", max_tokens=3, echo=True, logprobs=2, seed=1
    )
    choice = echo.choices[0]
    assert choice.text.startswith("The capital of")
    tokens = choice.logprobs.tokens
    assert "".join(tokens) == choice.text
    assert choice.logprobs.token_logprobs[0] is None
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs[1:])
    assert choice.logprobs.text_offset[0] == 0
    assert len(choice.logprobs.top_logprobs[-1]) == 2
    streamed = oai.completions.create(
        model=TINY, prompt="The capital of", max_tokens=5, seed=1, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == one.choices[0].text


# ----- warmup ---------------------------------------------------------------------------------
def test_warmup_loads_a_run_and_reports_its_status(oai_http, tool_run):
    assert oai_http.get("/v1/warmup/gpt-4").status_code == 404
    started = oai_http.post("/v1/warmup", json={"model": tool_run})
    assert started.status_code == 200 and started.json()["status"] in ("loading", "ready")
    for _ in range(300):  # bounded: 30 s
        status = oai_http.get(f"/v1/warmup/{tool_run}").json()
        if status["status"] != "loading":
            break
        time.sleep(0.1)
    assert status == status | {"model": tool_run, "status": "ready"}
    assert oai_http.get(f"/v1/warmup/{TINY}").json()["status"] == "ready"


# ----- async SDK ------------------------------------------------------------------------------
def test_the_async_sdk_streams_and_runs_requests_concurrently(server, alice):
    async def main():
        async with openai.AsyncOpenAI(
            base_url=f"{server.base_url}/v1", api_key=alice, max_retries=0
        ) as client:
            asks = [
                client.chat.completions.create(
                    model=TINY, messages=[QUESTION], max_tokens=8, seed=seed
                )
                for seed in range(4)
            ]
            answers = await asyncio.gather(*asks)
            stream = await client.chat.completions.create(
                model=TINY, messages=[QUESTION], max_tokens=8, seed=0, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return answers, text

    answers, text = asyncio.run(main())
    assert len(answers) == 4 and text == answers[0].choices[0].message.content


def test_streaming_n_choices_each_add_up_to_their_plain_answer(oai):
    common = {"model": TINY, "messages": [QUESTION], "max_tokens": 10, "seed": 9, "n": 3}
    plain = oai.chat.completions.create(**common)
    texts, finishes = ["", "", ""], [None, None, None]
    for chunk in oai.chat.completions.create(**common, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == [c.message.content for c in plain.choices]
    assert finishes == [c.finish_reason for c in plain.choices]
