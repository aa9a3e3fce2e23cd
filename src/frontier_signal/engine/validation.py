"""Input checks run before the engine touches any state, so bad input never breaks a run.

Every failure is an `InvalidInputError` whose message names the field and the fix.
"""

from __future__ import annotations

import math

from frontier_signal.backend.losses import RL_LOSSES, validate_loss
from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import (
    Datum,
    ForwardBackwardRequest,
    OptimizerSpec,
    RunConfig,
    SamplingParams,
    normalize_target_modules,
)

FLOAT32_MAX = 3.4028234663852886e38
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_LOGIT_BIAS = 100.0  # OpenAI's range: -100..100
MAX_LOGIT_BIAS_TOKENS = 1024


def check_run_config(config: RunConfig) -> None:
    lora, opt = config.lora, config.optimizer
    if not isinstance(lora.rank, int) or lora.rank <= 0:
        raise InvalidInputError(f"LoRA rank must be a positive integer, got {lora.rank!r}")
    # The adapter's scale (alpha / rank) is applied in fp32: beyond its range it is inf, and
    # inf times a fresh LoRA's zero B is NaN in every forward (alpha 1e300 did that).
    if not (isinstance(lora.alpha, int | float) and 0 < lora.alpha <= FLOAT32_MAX):
        raise InvalidInputError(
            f"LoRA alpha must be > 0 and at most {FLOAT32_MAX:.4g} (float32's range), "
            f"got {lora.alpha!r}"
        )
    if not 0 <= lora.dropout < 1:
        raise InvalidInputError(f"LoRA dropout must be in [0, 1), got {lora.dropout!r}")
    if not lora.target_modules:
        raise InvalidInputError(
            "no LoRA target modules: enable train_attn, train_mlp or "
            "train_unembed, or list modules explicitly"
        )
    try:
        normalize_target_modules(lora.target_modules)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if config.max_seq_length <= 0:
        raise InvalidInputError(f"max_seq_length must be > 0, got {config.max_seq_length}")
    check_optimizer(opt)


def check_fits_context(what: str, tokens: int, context: int, room: int) -> None:
    """`what` (a prompt of `tokens` tokens) must leave `room` tokens of the model's context."""
    if tokens + room > context:
        extra = " and generating needs room for at least one more" if room else ""
        raise InvalidInputError(
            f"{what} has {tokens} tokens; this model's context is {context} tokens{extra}: "
            "shorten it"
        )


def check_optimizer(opt: OptimizerSpec) -> None:
    if opt.kind not in ("adamw", "adamw_8bit", "sgd"):
        raise InvalidInputError(
            f"unknown optimizer {opt.kind!r}; supported: adamw, adamw_8bit, sgd"
        )
    checks = [
        ("learning_rate", opt.learning_rate, opt.learning_rate >= 0),
        ("beta1", opt.beta1, 0 <= opt.beta1 < 1),
        ("beta2", opt.beta2, 0 <= opt.beta2 < 1),
        ("eps", opt.eps, opt.eps >= 0),
        ("weight_decay", opt.weight_decay, opt.weight_decay >= 0),
        ("grad_clip_norm", opt.grad_clip_norm, opt.grad_clip_norm >= 0),
    ]
    for name, value, ok in checks:
        if not (isinstance(value, int | float) and math.isfinite(value) and ok):
            raise InvalidInputError(f"optimizer {name} out of range: {value!r}")
    # Each step scales the weights by 1 - lr * wd: above 1 that flips their sign, above 2 it
    # grows them without bound (a weight decay of 1e38 turned a run's outputs into NaN).
    if opt.learning_rate * opt.weight_decay > 1:
        raise InvalidInputError(
            f"optimizer learning_rate x weight_decay is {opt.learning_rate * opt.weight_decay:g}; "
            "it must be at most 1 (each step scales the weights by 1 - learning_rate x "
            "weight_decay)"
        )


def _check_floats(name: str, values: list[float], length: int, index: int) -> None:
    if values and len(values) != length:
        raise InvalidInputError(
            f"datum {index}: {name} has {len(values)} entries but the input has {length} tokens"
        )
    for position, value in enumerate(values):
        if not math.isfinite(value):
            raise InvalidInputError(
                f"datum {index}: {name}[{position}] is {value} (must be finite)"
            )


def check_datums(datums: list[Datum], loss_fn: str, vocab_size: int, max_length: int) -> None:
    if not datums:
        raise InvalidInputError("empty batch: send at least one datum")
    for index, datum in enumerate(datums):
        length = len(datum.input_tokens)
        if length == 0:
            raise InvalidInputError(f"datum {index}: input has no tokens")
        if length > max_length:
            raise InvalidInputError(
                f"datum {index}: {length} tokens exceed the run's max_seq_length {max_length}; "
                "truncate it or create the run with a larger max_seq_length"
            )
        if len(datum.target_tokens) != length:
            raise InvalidInputError(
                f"datum {index}: target_tokens is required and must have one entry per input "
                f"token ({length}), got {len(datum.target_tokens)}"
            )
        for name, tokens in (("input", datum.input_tokens), ("target_tokens", datum.target_tokens)):
            bad = [t for t in tokens if not isinstance(t, int) or not 0 <= t < vocab_size]
            if bad:
                raise InvalidInputError(
                    f"datum {index}: {name} token id {bad[0]!r} is outside the vocabulary "
                    f"[0, {vocab_size})"
                )
        _check_floats("weights", datum.weights, length, index)
        _check_floats("logprobs", datum.sampler_logprobs, length, index)
        _check_floats("advantages", datum.advantages, length, index)
        if loss_fn in RL_LOSSES:
            for name, values in (
                ("logprobs", datum.sampler_logprobs),
                ("advantages", datum.advantages),
            ):
                if not values:
                    raise InvalidInputError(
                        f"datum {index}: loss_fn {loss_fn!r} needs loss_fn_inputs "
                        f"'{name}' (one per token)"
                    )


def check_forward_backward(
    request: ForwardBackwardRequest, vocab_size: int, max_length: int
) -> None:
    try:
        validate_loss(request.loss_fn, request.loss_fn_config)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if request.reduction not in ("sum", "mean"):
        raise InvalidInputError(f"reduction must be 'sum' or 'mean', got {request.reduction!r}")
    check_datums(request.datums, request.loss_fn, vocab_size, max_length)
    if (
        request.reduction == "mean"
        and not request.forward_only
        and not any(w != 0 for d in request.datums for w in (d.weights or [1.0]))
    ):
        raise InvalidInputError("nothing to train on: every token has weight 0")


def check_sampling(
    params: SamplingParams,
    num_samples: int,
    prompt: list[int],
    vocab_size: int,
    context: int | None = None,
) -> None:
    """`context`, when given, is the model's longest sequence: prompt + max_tokens must fit."""
    if not prompt:
        raise InvalidInputError("empty prompt: send at least one token")
    bad = [t for t in prompt if not isinstance(t, int) or not 0 <= t < vocab_size]
    if bad:
        raise InvalidInputError(
            f"prompt token id {bad[0]!r} is outside the vocabulary [0, {vocab_size})"
        )
    if params.max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be >= 1, got {params.max_tokens}")
    if context is not None and len(prompt) + params.max_tokens > context:
        raise InvalidInputError(
            f"this model's context is {context} tokens: the prompt has {len(prompt)} and "
            f"max_tokens asks for {params.max_tokens}; shorten the prompt or lower max_tokens "
            f"(at most {max(context - len(prompt), 0)} here)"
        )
    if not (math.isfinite(params.temperature) and params.temperature >= 0):
        raise InvalidInputError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise InvalidInputError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k == 0 or params.top_k < -1:
        raise InvalidInputError(f"top_k must be -1 (off) or >= 1, got {params.top_k}")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and -2 <= value <= 2):
            raise InvalidInputError(f"{name} must be a number in [-2, 2], got {value!r}")
    penalty = params.repetition_penalty
    if not (isinstance(penalty, int | float) and math.isfinite(penalty) and penalty > 0):
        raise InvalidInputError(
            f"repetition_penalty must be a number > 0 (1.0 is off), got {penalty!r}"
        )
    top = params.top_logprobs
    if not (isinstance(top, int) and not isinstance(top, bool) and 0 <= top <= MAX_TOP_LOGPROBS):
        raise InvalidInputError(
            f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {top!r}"
        )
    min_p = params.min_p
    if not (isinstance(min_p, int | float) and math.isfinite(min_p) and 0 <= min_p <= 1):
        raise InvalidInputError(f"min_p must be a number in [0, 1] (0 is off), got {min_p!r}")
    check_logit_bias(params.logit_bias, vocab_size)
    if num_samples < 1:
        raise InvalidInputError(f"num_samples must be >= 1, got {num_samples}")


def logit_bias_from_wire(mapping: object) -> tuple[tuple[int, float], ...]:
    """A wire `logit_bias` (`{"token id": bias}`, JSON's string keys; int keys accepted too)
    as (id, bias) pairs. The ids are checked against the vocabulary by `check_sampling`.

    Raises:
        InvalidInputError: not a mapping, a key that is not a token id, or a bias that is not
            a number in [-100, 100].
    """
    if mapping is None:
        return ()
    if not isinstance(mapping, dict):
        raise InvalidInputError('logit_bias must be an object {"token id": bias}')
    pairs = []
    for key, value in mapping.items():
        text = str(key).strip()
        if isinstance(key, bool) or not text.isdigit():
            raise InvalidInputError(
                f"logit_bias keys are token ids written as strings (e.g. '50256'), got {key!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"logit_bias for token {text} must be a number, got {value!r}")
        pairs.append((int(text), float(value)))
    if len(pairs) > MAX_LOGIT_BIAS_TOKENS:
        raise InvalidInputError(
            f"logit_bias takes up to {MAX_LOGIT_BIAS_TOKENS} tokens, got {len(pairs)}"
        )
    check_logit_bias(tuple(pairs), vocab_size=2**31)
    return tuple(pairs)


def check_logit_bias(bias: tuple[tuple[int, float], ...], vocab_size: int) -> None:
    """Token ids inside the vocabulary, biases finite numbers in [-100, 100]."""
    for token, value in bias:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise InvalidInputError(
                f"logit_bias token id {token!r} is outside the vocabulary [0, {vocab_size})"
            )
        if not (
            isinstance(value, int | float)
            and math.isfinite(value)
            and -MAX_LOGIT_BIAS <= value <= MAX_LOGIT_BIAS
        ):
            raise InvalidInputError(
                f"logit_bias for token {token} must be a number in [-100, 100], got {value!r}"
            )


def stop_token_ids(params: SamplingParams, eos_token_id: int | None) -> tuple[int, ...]:
    """The token ids that end a generation of `params`: the request's own stop ids and, unless
    it sets `ignore_eos`, the model's end-of-sequence token. Every face's one stop rule (a face
    translates its wire spelling into these two fields; service/sampling.py)."""
    stops = tuple(params.stop_token_ids)
    if params.ignore_eos or eos_token_id is None or eos_token_id in stops:
        return stops
    return (*stops, eos_token_id)


def tokens_to_generate(context: int, prompt_tokens: int, max_tokens: int, default: int) -> int:
    """`max_tokens`, or with 0 as many as fit up to `default`.

    Raises:
        InvalidInputError: the prompt plus `max_tokens` do not fit the context.
    """
    room = context - prompt_tokens
    wanted = max_tokens or min(default, room)
    if room < 1 or wanted > room:
        raise InvalidInputError(
            f"this model's context is {context} tokens: the prompt has {prompt_tokens} and "
            f"max_tokens asks for {max(wanted, 1)}; shorten the prompt or lower max_tokens"
        )
    return wanted
