"""Wire schemas of the Anthropic-compatible API (docs/anthropic-api.md): the Messages body in,
Anthropic's message and content-block shapes out.

Anthropic's messages become the OpenAI-style messages the chat template is rendered from
(engine/tools.py): a `tool_use` block is an assistant tool call, a `tool_result` block a `tool`
turn. Fields that do not change the output here (`metadata`, `service_tier`, `anthropic-beta`
features) are accepted and ignored; content that cannot be served (images, documents,
thinking) is a 400 that says so.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from frontier_signal.engine.tools import ToolCall
from frontier_signal.engine.types import SampledSequence, SamplingParams
from frontier_signal.service.errors import InvalidRequest

ROLES = ("user", "assistant")


class CountTokensBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None

    def openai_messages(self) -> list[dict]:
        """System and messages as OpenAI-style messages for the chat template."""
        system = system_text(self.system)
        head = [{"role": "system", "content": system}] if system else []
        return head + [m for i, m in enumerate(self.messages) for m in _convert(m, i)]

    def openai_tools(self) -> list[dict] | None:
        """`tools` (`{name, description, input_schema}`) in OpenAI's function shape."""
        if not self.tools:
            return None
        out = []
        for index, tool in enumerate(self.tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise InvalidRequest(f"tools.{index}: needs a name and an input_schema")
            if tool.get("type") not in (None, "custom"):
                raise InvalidRequest(
                    f"tools.{index}: server tools ({tool.get('type')!r}) are not supported; "
                    "define a custom tool with name, description and input_schema"
                )
            function = {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("input_schema", {"type": "object"}),
            }
            out.append({"type": "function", "function": function})
        return out

    def tool_mode(self) -> tuple[str, str]:
        """`tool_choice` as (mode, tool name) for service/chat.py."""
        choice = self.tool_choice or {"type": "auto"}
        kind = choice.get("type")
        modes = {"auto": "auto", "any": "required", "none": "none", "tool": "named"}
        if kind not in modes:
            raise InvalidRequest(
                "tool_choice.type must be 'auto', 'any', 'tool' (with a name) or 'none', "
                f"got {kind!r}"
            )
        if kind == "tool" and not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice {'type': 'tool'} needs the tool's name")
        if kind != "auto" and not self.tools:
            raise InvalidRequest(f"tool_choice {kind!r} needs tools")
        return modes[kind], choice.get("name", "")


class MessagesBody(CountTokensBody):
    max_tokens: int = Field(ge=1, le=32768)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    stream: bool = False
    output_config: dict[str, Any] | None = None

    def output_schema(self) -> dict | None:
        """`output_config.format` (Anthropic's structured outputs): its JSON schema, or None.

        Raises:
            InvalidRequest: a format that is not `{"type": "json_schema", "schema": {...}}`.
        """
        fmt = (self.output_config or {}).get("format")
        if fmt is None:
            return None
        if (
            not isinstance(fmt, dict)
            or fmt.get("type") != "json_schema"
            or not isinstance(fmt.get("schema"), dict)
        ):
            raise InvalidRequest(
                "output_config.format must be {'type': 'json_schema', 'schema': {...}}"
            )
        return fmt["schema"]

    def sampling_params(self, grammar: str) -> SamplingParams:
        stops = tuple(self.stop_sequences or ())
        if any(not s for s in stops):
            raise InvalidRequest("stop_sequences must be non-empty strings")
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=-1 if self.top_k is None else self.top_k,
            stop_strings=stops,
            grammar=grammar,
        )


def system_text(system: str | list[dict] | None) -> str:
    """`system`: a string or a list of text blocks."""
    if system is None or isinstance(system, str):
        return system or ""
    return "".join(_block_text(block, f"system.{i}") for i, block in enumerate(system))


def _block_text(block: object, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        kind = block.get("type") if isinstance(block, dict) else type(block).__name__
        raise InvalidRequest(f"{where}: expected a text block, got {kind!r}")
    return str(block.get("text", ""))


def _result_text(block: dict, where: str) -> str:
    content = block.get("content", "")
    text = content if isinstance(content, str) else ""
    if isinstance(content, list):
        text = "".join(_block_text(b, f"{where}.content.{i}") for i, b in enumerate(content))
    return f"Error: {text}" if block.get("is_error") else text


def _convert(message: object, index: int) -> list[dict]:
    """One Anthropic message as OpenAI-style messages (tool results become `tool` turns)."""
    where = f"messages.{index}"
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise InvalidRequest(f"{where}: needs 'role' 'user' or 'assistant' and 'content'")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of content blocks")
    texts, calls, results = [], [], []
    for number, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content.{number}"
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use" and role == "assistant":
            arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
            function = {"name": str(block.get("name", "")), "arguments": arguments}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        elif kind == "tool_result" and role == "user":
            results.append({"role": "tool", "content": _result_text(block, at)})
        else:
            raise InvalidRequest(
                f"{at}: block type {kind!r} is not supported in a {role} message "
                "(text, tool_use in assistant turns, tool_result in user turns)"
            )
    if role == "assistant":
        turn: dict = {"role": "assistant", "content": "".join(texts)}
        return [turn | {"tool_calls": calls}] if calls else [turn]
    return results + ([{"role": "user", "content": "".join(texts)}] if texts else [])


# ----- responses -----------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def tool_use_block(call: ToolCall) -> dict:
    return {
        "type": "tool_use",
        "id": "toolu_" + call.id.removeprefix("call_"),
        "name": call.name,
        "input": json.loads(call.arguments),
    }


def stop_details(
    tokenizer, sequence: SampledSequence, stops, finish: str
) -> tuple[str, str | None]:
    """(Anthropic stop_reason, the stop sequence that ended the text or None)."""
    if finish == "tool_calls":
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if stops and sequence.tokens:
        full = tokenizer.decode(sequence.tokens, skip_special_tokens=False)
        tail = full[len(sequence.text) :]
        for stop in stops:
            if tail.startswith(stop):
                return "stop_sequence", stop
    return "end_turn", None


def message(model: str, content: list[dict], stop: tuple, usage: dict, id_: str = "") -> dict:
    return {
        "id": id_ or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop[0],
        "stop_sequence": stop[1],
        "usage": usage,
    }


# ----- response models (what /openapi.json documents; `extra="allow"` drops no key) ----------
class TokenCount(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_tokens: int


class Message(BaseModel):
    """A Messages answer: text and `tool_use` content blocks, why it stopped, token usage."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict]
    stop_reason: str | None
    stop_sequence: str | None
    usage: dict[str, int]
