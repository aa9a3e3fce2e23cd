"""Examples (`{"text": ...}` or `{"messages": [...]}`) → token-level datums.

One renderer path, the tokenizer's own chat template, is shared by training, sampling and
serving, so a run is trained on exactly what it is served. Chat trains on assistant turns only
(their content and the end-of-turn token); text trains on every token. Truncation to the run's
max length is explicit: it is reported, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.tools import check_tools, template_messages
from frontier_signal.engine.types import Datum

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class RenderedExample:
    datum: Datum
    num_tokens: int  # tokens in the rendered sequence before truncation
    truncated: bool


def _check_messages(messages: object, index: int) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise InvalidInputError(f"example {index}: 'messages' must be a non-empty list")
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidInputError(
                f"example {index}, message {turn}: needs 'role' in {ROLES}, got {message!r:.80}"
            )
        if not isinstance(message.get("content"), str):
            raise InvalidInputError(f"example {index}, message {turn}: 'content' must be a string")
    return messages


def _assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn's answer."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = (
            tokenizer.apply_chat_template(
                messages[:turn], tokenize=False, add_generation_prompt=True
            )
            if turn
            else ""
        )
        through = tokenizer.apply_chat_template(messages[: turn + 1], tokenize=False)
        if not full.startswith(through) or not through.startswith(prefix):
            raise InvalidInputError(
                "the chat template does not render turns as prefixes; "
                "cannot locate assistant tokens"
            )
        spans.append((len(prefix), len(through.rstrip())))
    return full, spans


def _tool_aware(example: dict, index: int) -> object:
    """Messages with tool calls, tool results or a `tools` list → plain template messages, in
    the format serving uses (engine/tools.py); plain messages pass through unchanged."""
    messages, tools = example["messages"], example.get("tools")
    plain = isinstance(messages, list) and all(
        isinstance(m, dict)
        and isinstance(m.get("content"), str)
        and not m.get("tool_calls")
        and m.get("role") != "tool"
        for m in messages
    )
    if plain and tools is None:
        return messages
    try:
        return template_messages(messages, check_tools(tools) if tools is not None else None)
    except InvalidInputError as exc:
        raise InvalidInputError(f"example {index}: {exc}") from None


def render_example(tokenizer, example: dict, max_length: int, index: int = 0) -> RenderedExample:
    """Tokenize one example into a shifted datum (`target_tokens[t]` = token t+1).

    Raises:
        InvalidInputError: neither text nor messages, or a chat with nothing to train on.
    """
    if not isinstance(example, dict):
        raise InvalidInputError(
            f"example {index}: expected an object, got {type(example).__name__}"
        )
    if "messages" in example:
        messages = _check_messages(_tool_aware(example, index), index)
        text, spans = _assistant_char_spans(tokenizer, messages)
        if not spans:
            raise InvalidInputError(
                f"example {index}: the conversation has no assistant turn, so nothing to train "
                "on; add an assistant message or use {'text': ...}"
            )
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        tokens = list(encoded["input_ids"])
        trained = [any(s <= start < e for s, e in spans) for start, _ in encoded["offset_mapping"]]
    elif "text" in example:
        if not isinstance(example["text"], str) or not example["text"]:
            raise InvalidInputError(f"example {index}: 'text' must be a non-empty string")
        tokens = list(tokenizer(example["text"], add_special_tokens=False)["input_ids"])
        trained = [True] * len(tokens)
    else:
        raise InvalidInputError(
            f"example {index}: needs 'text' or 'messages', got keys {sorted(example)}"
        )
    if len(tokens) < 2:
        raise InvalidInputError(f"example {index}: needs at least 2 tokens to predict one")
    num_tokens = len(tokens)
    truncated = num_tokens - 1 > max_length
    tokens, trained = tokens[: max_length + 1], trained[: max_length + 1]
    weights = [1.0 if flag else 0.0 for flag in trained[1:]]
    if not any(weights):
        raise InvalidInputError(
            f"example {index}: no trainable tokens left after truncation to {max_length} tokens"
        )
    datum = Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=weights)
    return RenderedExample(datum, num_tokens, truncated)


def render_chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Prompt tokens for the assistant's next turn (the same template training uses)."""
    _check_messages(messages, 0)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
