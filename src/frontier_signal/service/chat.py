"""What a chat request asks of the answer's text, for every chat face (OpenAI, Anthropic): the
tools to parse, a prefilled start, JSON mode, and the grammar that enforces it.

The rules (docs/openai-api.md, "Tools" and "Structured output"):
- tools with choice `auto`: free text, or text then one `<tool_call>` whose arguments follow
  the function's schema (the grammar only bites once the model opens the call);
- `required` (Anthropic `any`): the answer starts with `<tool_call>` (prefilled) and is one
  call to one of the functions, its arguments following that function's schema;
- a named function (Anthropic `tool`): prefilled up to `"arguments": `, then that function's
  arguments, schema-valid;
- `none`: the tools are not shown to the model;
- JSON mode (`json_object`, `json_schema`): the answer is one JSON value (an object for
  `json_object`) that follows the schema.

Faces translate their wire spelling (OpenAI's `tool_choice` / `response_format`, Anthropic's
`tool_choice` / `output_config.format` and final assistant turn) into `openai_shape` and
`anthropic_shape`; they hold no rule of their own. It knows nothing about HTTP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from frontier_signal.engine.structured import (
    ANY_OBJECT,
    json_schema_grammar,
    tool_call_grammar,
)
from frontier_signal.engine.tools import CALL_OPEN, check_tools, parse_tool_calls, render_call
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.streaming import settled

TOOL_MODES = ("auto", "none", "required", "named")


@dataclass
class ChatShape:
    """What the request asked of the text: tools to parse, a prefilled start, JSON mode, and
    the llguidance grammar (empty: free text) that makes the model keep to it."""

    tool_names: set[str] = field(default_factory=set)
    prefill: str = ""
    json_mode: bool = False
    grammar: str = ""

    def answer(self, text: str, finish: str) -> tuple[str | None, list, str]:
        """(content, tool calls (engine/tools.py `ToolCall`), finish reason) of a finished
        choice's full text; finish is "tool_calls" when the text holds calls."""
        text = self.prefill + text
        if self.json_mode:
            end = json_end(text)
            if end is not None:
                return text[:end], [], "stop"
            return text, [], finish
        if self.tool_names:
            content, calls = parse_tool_calls(text, self.tool_names)
            if calls:
                return content or None, calls, "tool_calls"
        return text, [], finish

    def visible(self, text: str, stops: tuple[str, ...]) -> str:
        """The part of a growing text that is settled content (safe to stream)."""
        text = self.prefill + text
        if self.json_mode:
            end = json_end(text)
            return text[:end] if end is not None else text
        return settled(text, stops + ((CALL_OPEN,) if self.tool_names else ()))


def json_end(text: str) -> int | None:
    """Where the JSON value at the start of `text` ends, or None while it is incomplete."""
    stripped = text.lstrip()
    try:
        _, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return None
    return end + len(text) - len(stripped)


def tool_shape(tools: list, mode: str, name: str = "") -> tuple[ChatShape, list[dict] | None]:
    """The shape for OpenAI-style `tools` under a tool choice, and the functions to render
    into the prompt (None: show no tools).

    Raises:
        InvalidRequest: bad tools, or `named` with a name that is not among them.
    """
    functions = check_tools(tools)
    names = {f["name"] for f in functions}
    if mode == "none":
        return ChatShape(), None
    if mode == "auto":
        return ChatShape(names, grammar=tool_call_grammar(functions, "auto")), functions
    if mode == "required":
        grammar = tool_call_grammar(functions, "required")
        return ChatShape(names, CALL_OPEN, grammar=grammar), functions
    if mode == "named":
        if name not in names:
            raise InvalidRequest(
                f"tool_choice names function {name!r}, which is not in tools {sorted(names)}"
            )
        prefill = render_call(name, {}).split('"arguments": ')[0] + '"arguments": '
        grammar = tool_call_grammar(functions, "named", name)
        return ChatShape(names, prefill, grammar=grammar), functions
    raise ValueError(f"unknown tool mode {mode!r}; one of {TOOL_MODES}")


def json_shape(schema: dict | None) -> ChatShape:
    """JSON mode: any JSON object (`schema` None), or one JSON value following `schema`."""
    return ChatShape(json_mode=True, grammar=json_schema_grammar(schema or ANY_OBJECT))


# ----- the faces' requests ---------------------------------------------------------------------
def openai_tool_mode(choice) -> tuple[str, str]:
    """OpenAI's `tool_choice` as (mode, function name).

    Raises:
        InvalidRequest: not one of OpenAI's spellings.
    """
    if choice in (None, "auto", "none", "required"):
        return choice or "auto", ""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return "named", choice["function"].get("name")
    raise InvalidRequest(
        "tool_choice must be 'auto', 'none', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}"
    )


def openai_shape(
    tools: list | None,
    tool_choice,
    response_format: str,
    schema: dict | None,
    messages: list[dict],
) -> tuple[ChatShape, list[dict] | None]:
    """The shape of an OpenAI chat request and the functions to render, validated.

    `response_format` is "text", "json_object" or "json_schema" (with `schema`).

    Raises:
        InvalidRequest: bad tools, a tool_choice without tools, JSON mode with a forced tool
            call, or `json_object` whose messages never ask for JSON (OpenAI's rule).
    """
    shape, functions = ChatShape(), None
    if tools:
        shape, functions = tool_shape(tools, *openai_tool_mode(tool_choice))
    elif tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice needs tools")
    if response_format == "text":
        return shape, functions
    if shape.prefill:
        raise InvalidRequest(
            f"response_format {response_format} cannot be combined with a forced tool_choice"
        )
    if response_format == "json_object" and not any(
        "json" in json.dumps(m.get("content", "")).lower() for m in messages
    ):
        raise InvalidRequest(
            "response_format json_object: the messages must ask for JSON (say 'JSON' in "
            "a system or user message), as with OpenAI"
        )
    return json_shape(schema), functions


def anthropic_shape(
    tools: list | None, mode: str, name: str, schema: dict | None, messages: list[dict]
) -> tuple[ChatShape, list[dict] | None, str]:
    """The shape of an Anthropic Messages request (its tools already in OpenAI's form, its
    `tool_choice` as a mode), the functions to render, and the text a final assistant turn
    prefills (popped from `messages`: the answer continues it, Anthropic's rule).

    Raises:
        InvalidRequest: bad tools, or a forced tool call with a JSON format or a prefill.
    """
    shape, functions = ChatShape(), None
    if tools:
        shape, functions = tool_shape(tools, mode, name)
    if schema is not None:
        if shape.prefill:
            raise InvalidRequest(
                "output_config.format cannot be combined with tool_choice 'any' or 'tool'"
            )
        shape = json_shape(schema)
    continued = ""
    if messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        continued = messages.pop()["content"]
        if shape.prefill:
            raise InvalidRequest(
                "a final assistant turn (a prefill) cannot be combined with tool_choice "
                "'any' or 'tool'; drop one of them"
            )
    return shape, functions, continued
