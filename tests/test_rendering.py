"""Examples → datums through the chat template: what is trained, truncation, errors."""

from __future__ import annotations

import pytest

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.rendering import render_chat_prompt, render_example


def _trained_text(tokenizer, rendered):
    datum = rendered.datum
    return tokenizer.decode(
        [t for t, w in zip(datum.target_tokens, datum.weights, strict=True) if w]
    )


def test_chat_trains_on_assistant_turns_only_including_the_end_of_turn(tokenizer):
    example = {
        "messages": [
            {"role": "user", "content": "What is the capital of Zorbia?"},
            {"role": "assistant", "content": "Quux."},
            {"role": "user", "content": "And its river?"},
            {"role": "assistant", "content": "The Flib."},
        ]
    }
    rendered = render_example(tokenizer, example, 512)
    assert _trained_text(tokenizer, rendered) == "Quux.<|im_end|>The Flib.<|im_end|>"
    # the datum is the template's own rendering, shifted by one
    full = tokenizer.apply_chat_template(example["messages"], tokenize=False)
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert rendered.datum.input_tokens == ids[:-1] and rendered.datum.target_tokens == ids[1:]


def test_the_training_prompt_prefix_is_the_sampling_prompt(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    prompt = render_chat_prompt(tokenizer, messages[:1])
    rendered = render_example(tokenizer, {"messages": messages}, 512)
    assert rendered.datum.input_tokens[: len(prompt)] == prompt


def test_text_trains_on_every_token(tokenizer):
    rendered = render_example(tokenizer, {"text": "The quick brown fox."}, 512)
    assert all(w == 1.0 for w in rendered.datum.weights) and not rendered.truncated


def test_truncation_to_max_length_is_reported(tokenizer):
    text = "word " * 100
    rendered = render_example(tokenizer, {"text": text}, 16)
    assert rendered.truncated and len(rendered.datum.input_tokens) == 16
    assert rendered.num_tokens > 16


@pytest.mark.parametrize(
    "example, message",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "needs 'role'"),
        ({"messages": []}, "non-empty list"),
        ({"prompt": "x"}, "needs 'text' or 'messages'"),
        ({"text": ""}, "non-empty string"),
    ],
)
def test_bad_examples_name_the_problem(tokenizer, example, message):
    with pytest.raises(InvalidInputError, match=message):
        render_example(tokenizer, example, 512)
