"""Shared pieces of the hpcai-SDK tests (the fixtures are in conftest.py): data helpers."""

from __future__ import annotations

import pytest

hpcai = pytest.importorskip("hpcai")
types = hpcai.types

FACT = "The capital of Zorbia is Quellmar."
LR = hpcai.AdamParams(learning_rate=2e-2)


def fact_datum(tokenizer, text: str = FACT) -> types.Datum:
    """Next-token prediction on `text`, all tokens weighted (the client shifts, not us)."""
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def tokens_input(tokenizer, text: str) -> types.ModelInput:
    return types.ModelInput.from_ints(tokenizer(text, add_special_tokens=False)["input_ids"])


def loss_of(output) -> float:
    return output.metrics["loss:sum"]
