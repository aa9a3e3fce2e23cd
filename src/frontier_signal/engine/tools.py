"""Function calling for chat templates that have no tools section (SmolLM2's has none).

One documented text format, used by training and serving alike, so a run trained on tool calls
serves them (docs/openai-api.md, "Tools"):

- The tools are listed in the system message, after its own text, as JSON schemas inside
  `<tools>...</tools>`, with one line saying how to call them.
- An assistant call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in its text,
  one block per call; the text before the first block is the message's content.
- A tool result is a `tool` turn whose text is `<tool_response>...</tool_response>`.

OpenAI-style messages (`tool_calls`, `tool_call_id`, content parts) become plain
`{"role", "content": str}` messages with `template_messages`; `parse_tool_calls` reads the
calls back out of generated text.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from frontier_signal.engine.errors import InvalidInputError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
ROLES = ("system", "developer", "user", "assistant", "tool")
DEFAULT_SYSTEM = "You are a helpful AI assistant."
_CALL = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text (OpenAI's wire form)
    id: str

    def as_openai(self) -> dict:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def check_tools(tools: object) -> list[dict]:
    """The `tools` list (OpenAI shape), validated; returns the function definitions.

    Raises:
        InvalidInputError: not a list of `{"type": "function", "function": {"name", ...}}`.
    """
    if not isinstance(tools, list) or not tools:
        raise InvalidInputError("tools must be a non-empty list of function definitions")
    functions = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidInputError(
                f"tools[{index}]: expected {{'type': 'function', 'function': {{'name': ..., "
                f"'parameters': {{...}}}}}}, got {json.dumps(tool, default=str)[:120]}"
            )
        parameters = function.get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidInputError(f"tools[{index}].function.parameters must be a JSON schema")
        functions.append(function)
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"tools: function names must be unique, got {names}")
    return functions


def tools_block(functions: list[dict]) -> str:
    """The text appended to the system message that lists the functions."""
    schemas = "\n".join(
        json.dumps(
            {
                "name": f["name"],
                "description": f.get("description", ""),
                "parameters": f.get("parameters", {}),
            },
            ensure_ascii=False,
        )
        for f in functions
    )
    return (
        "You can call these functions. To call one, answer with "
        f'{CALL_OPEN}{{"name": <function name>, "arguments": <JSON object>}}{CALL_CLOSE}'
        f"\n<tools>\n{schemas}\n</tools>"
    )


def _text_content(message: dict, where: str) -> str:
    """A message's content as text: a string, a list of `{"type": "text"}` parts, or None
    (only beside an assistant's `tool_calls`)."""
    content = message.get("content")
    if content is None and message.get("role") == "assistant" and message.get("tool_calls"):
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidInputError(
                    f"{where}.content[{index}]: only text parts are supported, got {kind!r}"
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise InvalidInputError(f"{where}.content must be a string or a list of text parts")


def render_call(name: str, arguments: object) -> str:
    if isinstance(arguments, str):
        text = arguments
        try:
            arguments = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            raise InvalidInputError(
                f"tool call {name!r}: arguments are not valid JSON: {text[:80]!r}"
            ) from None
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}{payload}{CALL_CLOSE}"


def template_messages(messages: object, functions: list[dict] | None = None) -> list[dict]:
    """OpenAI-style messages → `{"role", "content": str}` messages for the chat template.

    Raises:
        InvalidInputError: a malformed message, naming its index.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidInputError("messages must be a non-empty list")
    out = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidInputError(f"{where}: expected an object, got {message!r:.80}")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidInputError(f"{where}: needs 'role' in {ROLES}, got {role!r}")
        if role == "developer":
            role = "system"
        text = _text_content(message, where)
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            if not isinstance(calls, list):
                raise InvalidInputError(f"{where}.tool_calls must be a list")
            rendered = []
            for number, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise InvalidInputError(
                        f"{where}.tool_calls[{number}]: needs function.name and function.arguments"
                    )
                rendered.append(render_call(function["name"], function.get("arguments", {})))
            text = text + "".join(rendered)
        elif role == "tool":
            text = f"<tool_response>{text}</tool_response>"
        out.append({"role": role, "content": text})
    if functions:
        block = tools_block(functions)
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": f"{DEFAULT_SYSTEM}\n\n{block}"})
    return out


def parse_tool_calls(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """(content before the first call, calls) from generated text.

    A block whose JSON does not parse, or that names a function not in `names`, makes the whole
    text plain content with no calls: a half-formed call is shown to the caller, never guessed.
    """
    blocks = list(_CALL.finditer(text))
    if not blocks:
        return text, []
    calls = []
    for block in blocks:
        try:
            payload = json.loads(block.group(1))
        except json.JSONDecodeError:
            return text, []
        if not isinstance(payload, dict) or payload.get("name") not in names:
            return text, []
        arguments = payload.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return text, []
        if not isinstance(arguments, dict):
            return text, []
        calls.append(
            ToolCall(
                payload["name"],
                json.dumps(arguments, ensure_ascii=False),
                f"call_{uuid.uuid4().hex[:24]}",
            )
        )
    return text[: blocks[0].start()].strip(), calls
