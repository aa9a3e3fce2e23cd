"""Rules every request body obeys on every API face, checked once, before field validation.

`WireBody` is the base of every face's body classes (Signal, Tinker, OpenAI). Its validator
walks every value a body keeps (fields and kept extras, JSON or decoded protobuf alike) once
and refuses, naming the field:
- text that is not valid Unicode (a lone UTF-16 surrogate such as `"\\ud800"`, which JSON can
  spell but no tokenizer, database or UTF-8 encoder can take);
- non-finite numbers (`NaN`, `Infinity`, and `1e309`, which JSON parsers turn into infinity):
  they would be stored as non-standard JSON, train to NaN, or silently become `null`;
- integers beyond ±(2^53 - 1), the range every JSON parser reads exactly (seeds, token ids,
  sequence ids: nothing here needs more; torch seeds overflowed at 2^64).
Pydantic's `allow_inf_nan=False` also refuses the strings `"NaN"` / `"inf"` in float fields; a
boolean is not taken for a number nor a number for a boolean; and the published JSON schema
bounds every integer the same way, so /openapi.json says what is enforced.

What it does not do: field ranges and shapes (each face's schema), context lengths (the
engine). Query strings and headers are checked where they are read.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# I-JSON (RFC 7493): integers every JSON parser (JavaScript included) reads exactly. Seeds,
# token ids, steps and sequence ids all fit; the published schema states the same range.
INT_LIMIT = 2**53
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


def check_value(value: Any, where: str, ranged: bool = True) -> None:
    """Walk a decoded JSON value; raise a PydanticCustomError at the first rule it breaks.
    `ranged=False` (free-form values: messages, examples, metadata) skips the integer range,
    which the published schema cannot state for them."""
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
        if ranged and not -INT_LIMIT < value < INT_LIMIT:
            raise _fail(
                "integer_out_of_range",
                where,
                f"{value} is out of range; send an integer in [-(2^53 - 1), 2^53 - 1]",
            )
    elif kind is list or kind is tuple:
        if all(type(item) is int and -INT_LIMIT < item < INT_LIMIT for item in value):
            return  # the common case: token ids
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]", ranged)
    elif isinstance(value, BaseModel):
        return  # a nested body: checked by its own validator
    elif kind is dict:
        for key, item in value.items():
            name = str(key)
            _check_text(name, f"{where}.<key>" if where else "<key>")
            check_value(item, f"{where}.{name}" if where else name, ranged)


def _declare_integer_range(schema: dict[str, Any], _model: type | None = None) -> None:
    """The published JSON schema says what `check_value` enforces: the I-JSON integer range."""
    if schema.get("type") == "integer":
        if "minimum" not in schema and "exclusiveMinimum" not in schema:
            schema["minimum"] = 1 - INT_LIMIT
        if "maximum" not in schema and "exclusiveMaximum" not in schema:
            schema["maximum"] = INT_LIMIT - 1
    for key in ("properties", "$defs"):
        for child in schema.get(key, {}).values():
            _declare_integer_range(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _declare_integer_range(schema[key])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for child in schema.get(key, []):
            _declare_integer_range(child)


def _free_form(annotation: Any) -> bool:
    """A field whose values the schema does not type (`dict`, `dict[str, Any]`, ...)."""
    return (
        annotation in (dict, list, Any)
        or Any in get_args(annotation)
        or any(_free_form(arg) for arg in get_args(annotation) if arg is not type(None))
    )


def number_not_text(value: Any) -> Any:
    """For integer fields the lax mode would fill from `"1"` or `true`."""
    if isinstance(value, str | bool):
        raise PydanticCustomError("int_type", "Input should be an integer")
    return value


# A token id: an integer (JSON's 5.0 counts), never a string or a boolean.
TokenId = Annotated[int, BeforeValidator(number_not_text)]


def _kinds(annotation: Any) -> set[type]:
    args = get_args(annotation)
    if not args:
        return {annotation} if isinstance(annotation, type) else set()
    return set().union(*(_kinds(arg) for arg in args))


class WireBody(BaseModel):
    """Base of every request body: the rules above, then the subclass's own fields."""

    model_config = ConfigDict(allow_inf_nan=False, json_schema_extra=_declare_integer_range)

    @model_validator(mode="after")
    def _wire_rules(self) -> WireBody:
        # After validation: every kept value once (nested bodies check their own; extras a
        # body ignores are gone); a typed float already refused NaN and Infinity itself.
        for name, field in type(self).model_fields.items():
            check_value(getattr(self, name), name, ranged=not _free_form(field.annotation))
        for name, value in (self.model_extra or {}).items():
            _check_text(name, "<key>")
            check_value(value, name, ranged=False)
        return self

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number_swap(cls, value: Any, info: ValidationInfo) -> Any:
        """`true` is not a number and `1` is not a boolean (pydantic's lax mode takes both,
        which the schema does not say and a caller's typo should not rely on)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is None or type(value) not in (bool, int):
            return value
        kinds = _kinds(field.annotation)
        if Any in kinds or object in kinds:
            return value
        if type(value) is bool and bool not in kinds and kinds & {int, float}:
            raise PydanticCustomError("int_type", "Input should be a number, not a boolean")
        if type(value) is int and kinds & {bool} and not kinds & {int, float}:
            raise PydanticCustomError("bool_type", "Input should be true or false, not a number")
        return value
