"""Grammars for structured output, built with llguidance from JSON schemas and tool lists.

Structured output is enforced by constrained decoding: a grammar travels in
`SamplingParams.grammar` (llguidance's serialized form) and the backend
(`backend/constrained.py`) masks the tokens it does not allow at every step. This module
builds those grammars and checks them against a tokenizer; it knows nothing about tensors.

Why llguidance (over xgrammar and outlines-core): a CPU wheel with no torch pin, a JSON-schema
compiler that covers what OpenAI's strict mode does and more, a Lark front end that mixes free
text and JSON (what `tool_choice="auto"` needs: free text or one `<tool_call>` whose arguments
follow the schema), and a mask in ~5 µs per step on SmolLM2's 49k vocabulary.

The tool-call grammars follow engine/tools.py's text format: `<tool_call>{"name": ...,
"arguments": {...}}</tool_call>`. `required` and a named function are prefilled in the prompt
(`<tool_call>` or `<tool_call>{"name": "f", "arguments": `), so their grammars start after the
prefill.
"""

from __future__ import annotations

import json
import threading

import llguidance
import llguidance.hf
from llguidance import LLMatcher

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.tools import CALL_CLOSE, CALL_OPEN

ANY_OBJECT: dict = {"type": "object"}
# JSON as `json.dumps` writes it: no free whitespace (an untrained model would fill a flexible
# grammar with blanks until max_tokens runs out) and the separators tools.py renders calls with.
COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_TOKENIZERS: dict[int, tuple[object, llguidance.LLTokenizer]] = {}
_LOCK = threading.Lock()


def grammar_tokenizer(tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of an HF tokenizer, built once per tokenizer (~0.5 s)."""
    key = id(tokenizer)
    with _LOCK:
        known = _TOKENIZERS.get(key)
        if known is None or known[0] is not tokenizer:
            known = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
            _TOKENIZERS[key] = known
        return known[1]


def _schema_text(schema: object, where: str) -> str:
    """The schema as JSON text, with llguidance's options (`x-guidance`) for compact JSON."""
    if not isinstance(schema, dict):
        raise InvalidInputError(f"{where} must be a JSON schema object, got {schema!r:.80}")
    return json.dumps(schema | {"x-guidance": COMPACT}, ensure_ascii=False)


def json_schema_grammar(schema: object, where: str = "json_schema.schema") -> str:
    """Output must be one JSON value that follows `schema`.

    Raises:
        InvalidInputError: `schema` is not an object, or llguidance cannot compile it.
    """
    try:
        return LLMatcher.grammar_from_json_schema(_schema_text(schema, where))
    except ValueError as exc:
        raise InvalidInputError(f"{where} is not a usable JSON schema: {exc}") from None


def _call_schema(functions: list[dict]) -> dict:
    """`{"name": <one of the functions>, "arguments": <that function's parameters>}`."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or ANY_OBJECT,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _lark_literal(text: str) -> str:
    return json.dumps(text)


def tool_call_grammar(functions: list[dict], mode: str, name: str = "") -> str:
    """The grammar of what follows the prompt (and its prefill) for a tool choice.

    Args:
        functions: the validated function definitions (engine/tools.py `check_tools`).
        mode: `auto` (free text, or text then one call), `required` (one call to any function,
            after a prefilled `<tool_call>`) or `named` (the arguments of `name`, after a
            prefilled `<tool_call>{"name": "...", "arguments": `).
        name: the function `named` calls.
    """
    close = _lark_literal(CALL_CLOSE)
    if mode == "named":
        [function] = [f for f in functions if f["name"] == name]
        arguments = _schema_text(function.get("parameters") or ANY_OBJECT, f"tool {name!r}")
        lark = f"start: %json{arguments} {_lark_literal('}' + CALL_CLOSE)}\n"
    elif mode == "required":
        lark = f"start: %json{_schema_text(_call_schema(functions), 'tools')} {close}\n"
    elif mode == "auto":
        # `text[suffix=...]` ends free text at the first `<tool_call>` (which it swallows);
        # `free` is text with no call at all. A greedy lexeme could not tell them apart.
        lark = (
            "start: free | text call\n"
            f"call: %json{_schema_text(_call_schema(functions), 'tools')} {close}\n"
            f"text[suffix={_lark_literal(CALL_OPEN)}]: /(.|\\n)*/\n"
            'free[suffix=""]: /(.|\\n)*/\n'
        )
    else:
        raise ValueError(f"unknown tool grammar mode {mode!r}")
    return LLMatcher.grammar_from_lark(lark)


def check_grammar(grammar: str, tokenizer) -> None:
    """Compile `grammar` for `tokenizer` once, so a bad schema is a 400 before decoding.

    Raises:
        InvalidInputError: the grammar (a JSON schema or tool parameters) does not compile.
    """
    error = LLMatcher.validate_grammar(grammar, grammar_tokenizer(tokenizer))
    if error and not error.startswith("WARNING"):
        raise InvalidInputError(
            f"the JSON schema cannot be enforced: {error.strip().splitlines()[0][:300]}; "
            "simplify the schema (see docs/openai-api.md, Structured output)"
        )
