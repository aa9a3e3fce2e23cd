"""Rules every request body obeys on every API face, checked once, before field validation.

`WireBody` is the base of every face's body classes (Signal, Tinker, OpenAI). Its `before`
validator walks the raw JSON (or decoded protobuf) once and refuses, naming the field:
- text that is not valid Unicode (a lone UTF-16 surrogate such as `"\\ud800"`, which JSON can
  spell but no tokenizer, database or UTF-8 encoder can take);
- non-finite numbers (`NaN`, `Infinity`, and `1e309`, which JSON parsers turn into infinity):
  they would be stored as non-standard JSON, train to NaN, or silently become `null`;
- integers outside signed 64 bits (seeds, token ids, sequence ids: nothing here takes more).
Pydantic's `allow_inf_nan=False` also refuses the strings `"NaN"` / `"inf"` in float fields.

What it does not do: field ranges and shapes (each face's schema), context lengths (the
engine). Query strings and headers are checked where they are read.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

INT_LIMIT = 2**63
# Error types this module raises; the error handler shows their message as is.
RULE_ERRORS = ("invalid_text", "non_finite_number", "integer_out_of_range")


def _fail(kind: str, where: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "{field}: " + message, {"field": where})


def _check_text(text: str, where: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(
            "invalid_text",
            where,
            f"the text has an unpaired UTF-16 surrogate at character {exc.start}; send valid "
            "Unicode (encode text as UTF-8, never split a surrogate pair)",
        ) from None


def check_value(value: Any, where: str) -> None:
    """Walk a decoded JSON value; raise a PydanticCustomError at the first rule it breaks."""
    kind = type(value)
    if kind is str:
        _check_text(value, where)
    elif kind is float:
        if not math.isfinite(value):
            raise _fail(
                "non_finite_number",
                where,
                f"{value} is not a finite number (NaN, Infinity and values beyond 1.8e308 "
                "are refused); send a finite number",
            )
    elif kind is int:
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise _fail(
                "integer_out_of_range",
                where,
                "the integer does not fit in 64 bits; send a value in [-2^63, 2^63)",
            )
    elif kind is list or kind is tuple:
        if all(type(item) is int and -INT_LIMIT <= item < INT_LIMIT for item in value):
            return  # the common case: token ids
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]")
    elif kind is dict:
        for key, item in value.items():
            name = str(key)
            _check_text(name, f"{where}.<key>" if where else "<key>")
            check_value(item, f"{where}.{name}" if where else name)


class WireBody(BaseModel):
    """Base of every request body: the rules above, then the subclass's own fields."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _wire_rules(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_value(data, "")
        return data
