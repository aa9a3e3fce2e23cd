"""Helpers for the GGUF tests: llama-cpp-python (skip locally when absent, fail in CI) and
log-probs / greedy tokens read from it."""

from __future__ import annotations

import atexit
import os

import numpy as np
import pytest

# llama.cpp on our GGUFs vs our fp32 engine, max |Δ log-prob| over every position of the test
# texts. Measured on the tiny model after 30 steps (docs/gguf.md): merged f16 0.011, f16 base +
# LoRA GGUF 0.0075, merged q8_0 0.131; the bounds leave ~3-5x room (other CPUs, other builds).
TOLERANCE = {"f16": 0.05, "q8_0": 0.4, "lora": 0.05}


def require_llama_cpp():
    """The llama_cpp module; skips when it is not installed, fails instead in CI
    (FRONTIER_SIGNAL_REQUIRE_LLAMA_CPP=1, set by .ci/run; scripts/setup installs it)."""
    try:
        import llama_cpp
    except ImportError as exc:
        if os.environ.get("FRONTIER_SIGNAL_REQUIRE_LLAMA_CPP") == "1":
            pytest.fail(f"llama_cpp is required here (FRONTIER_SIGNAL_REQUIRE_LLAMA_CPP=1): {exc}")
        pytest.skip("llama-cpp-python is not installed (scripts/setup installs it)")
    return llama_cpp


_OPEN: list = []


def _close_all() -> None:
    # llama_cpp frees models in __del__; at interpreter exit its globals may already be gone
    # ("TypeError: 'NoneType' object is not callable"), so close them while they still exist.
    while _OPEN:
        _OPEN.pop().close()


def load(path, lora_path=None, n_ctx: int = 256):
    """A llama.cpp model with logits for every position (closed at exit, or by the caller)."""
    llama_cpp = require_llama_cpp()
    extra = {"lora_path": str(lora_path)} if lora_path else {}
    llm = llama_cpp.Llama(
        str(path), logits_all=True, n_ctx=n_ctx, n_threads=2, seed=0, verbose=False, **extra
    )
    if not _OPEN:
        atexit.register(_close_all)
    _OPEN.append(llm)
    return llm


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    shifted = scores - scores.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def sequence_logprobs(llm, tokens: list[int]) -> list[float]:
    """log p(tokens[i+1] | tokens[:i+1]) for every position, as the engine's `forward` gives."""
    llm.reset()
    llm.eval(tokens)
    logprobs = _log_softmax(np.array(llm.scores[: len(tokens) - 1]))
    return [float(logprobs[i, tokens[i + 1]]) for i in range(len(tokens) - 1)]


def greedy(
    llm, prompt: list[int], max_tokens: int, stop: set[int]
) -> tuple[list[int], list[float]]:
    """Greedy continuation (argmax of the logits) with each chosen token's log-prob."""
    llm.reset()
    llm.eval(prompt)
    tokens: list[int] = []
    logprobs: list[float] = []
    for _ in range(max_tokens):
        row = _log_softmax(np.array(llm.scores[llm.n_tokens - 1]))
        token = int(row.argmax())
        if token in stop:
            break
        tokens.append(token)
        logprobs.append(float(row[token]))
        llm.eval([token])
    return tokens, logprobs
