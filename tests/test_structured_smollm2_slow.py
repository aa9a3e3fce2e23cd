"""On the real, untrained SmolLM2-135M-Instruct: constrained decoding makes its answers
schema-valid JSON and its forced tool calls schema-valid arguments, sampled or greedy.

Strings are bounded (`maxLength`): an untrained model may repeat itself inside a string
("john_john_john_...") until max_tokens runs out, which the grammar cannot prevent."""

from __future__ import annotations

import json

import jsonschema
import pytest

from frontier_signal.engine.types import SampleRequest, SamplingParams
from tests.conftest import SMOLLM2

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "email": {"type": "string", "format": "email", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
        "role": {"enum": ["admin", "editor", "viewer"]},
    },
    "required": ["name", "age", "email", "hobbies", "role"],
    "additionalProperties": False,
}
ASK = "Invent a user profile for a website, as JSON with name, age, email, hobbies and role."


@pytest.mark.slow
def test_untrained_smollm2_returns_schema_valid_json_and_tool_arguments():
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.rendering import render_chat_prompt
    from frontier_signal.engine.structured import json_schema_grammar, tool_call_grammar
    from frontier_signal.engine.tools import parse_tool_calls, template_messages

    engine = Engine()
    tokenizer = engine.tokenizer(SMOLLM2)
    eos = (tokenizer.eos_token_id,)
    prompt = render_chat_prompt(tokenizer, [{"role": "user", "content": ASK}])
    grammar = json_schema_grammar(PERSON)
    tool = {"name": "create_user", "description": "Create a user account", "parameters": PERSON}
    messages = template_messages([{"role": "user", "content": ASK}], [tool])
    call_prompt = render_chat_prompt(tokenizer, messages)
    call_prompt += tokenizer("<tool_call>", add_special_tokens=False)["input_ids"]
    required = tool_call_grammar([tool], "required")

    def params(temperature: float, seed: int, grammar: str) -> SamplingParams:
        return SamplingParams(160, temperature, seed=seed, stop_token_ids=eos, grammar=grammar)

    # One batch: greedy and sampled JSON answers, sampled forced tool calls.
    json_greedy, json_sampled, calls = engine.sample_batch(
        [
            SampleRequest(SMOLLM2, prompt, params(0.0, 0, grammar)),
            SampleRequest(SMOLLM2, prompt, params(0.8, 1, grammar), 2),
            SampleRequest(SMOLLM2, call_prompt, params(0.7, 2, required), 2),
        ]
    )
    for sequence in json_greedy.sequences + json_sampled.sequences:
        assert sequence.stop_reason == "stop", sequence.text
        jsonschema.validate(json.loads(sequence.text), PERSON)
    # A sampled call may spend its tokens inside a long string (the schema bounds no length)
    # and stop at `length`, unfinished, as OpenAI's API does; every call that stops is valid.
    finished = [s for s in calls.sequences if s.stop_reason == "stop"]
    assert finished, [s.text for s in calls.sequences]
    for sequence in finished:
        _, [call] = parse_tool_calls("<tool_call>" + sequence.text, {"create_user"})
        jsonschema.validate(json.loads(call.arguments), PERSON)
