"""One function per Signal API endpoint: check the arguments, describe the request.

Each builder validates what it can locally (empty batch, prompts given as one string, bad save
mode, ...) and raises `ValidationError` before anything is sent; it returns a `Call` (method,
path, JSON body) that the sync and async transports send alike. Functions named `read_*` turn a
response body into what the SDK method returns. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pydantic

from .errors import ServerError, ValidationError
from .types import SAVE_MODES, RunConfig, TrainingExample

SAMPLE_OPTIONS = frozenset({"seed", "stop", "return_logprobs", "min_p", "logit_bias"})


@dataclass(frozen=True)
class Call:
    """One request to make: the transport adds auth, idempotency key, timeout and retries."""

    method: str
    path: str
    json: dict[str, Any] | None = None


def _run_path(run_id: str, tail: str = "") -> str:
    if not isinstance(run_id, str) or not run_id:
        raise ValidationError(f"run_id must be a non-empty string, got {run_id!r}")
    return f"/v1/runs/{quote(run_id, safe='')}{tail}"


def pydantic_message(exc: pydantic.ValidationError) -> str:
    """A one-line account of a pydantic error: `field: what is wrong; ...`."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{location}: {error['msg']}" if location else error["msg"])
    return "; ".join(parts)


# ----- models and runs --------------------------------------------------------------------


def list_models() -> Call:
    return Call("GET", "/v1/base-models")


def read_model_ids(body: dict[str, Any]) -> list[str]:
    return [model["id"] for model in body.get("data", [])]


def read_data(body: dict[str, Any]) -> list[Any]:
    """The `data` list of a list endpoint."""
    return list(body.get("data", []))


def list_runs() -> Call:
    return Call("GET", "/v1/runs")


def run_config(
    base_model: str | RunConfig | None, config: RunConfig | None, fields: dict[str, Any]
) -> RunConfig:
    """The `RunConfig` of `create_run`, from a `RunConfig` or from keyword fields (not both).

    Raises:
        ValidationError: Missing base model, a bad field value, or a `RunConfig` given together
            with keyword fields that differ from the defaults.
    """
    if isinstance(base_model, RunConfig):
        config, base_model = base_model, None
    if config is not None:
        defaults = RunConfig.model_fields
        changed = [name for name, value in fields.items() if value != defaults[name].default]
        if base_model is not None or changed:
            given = ", ".join((["base_model"] if base_model is not None else []) + changed)
            raise ValidationError(
                f"pass either a RunConfig or keyword fields, not both (also given: {given})"
            )
        return config
    if base_model is None:
        raise ValidationError("base_model is required (see list_models() for the names)")
    try:
        return RunConfig(base_model=base_model, **fields)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"invalid run config: {pydantic_message(exc)}") from None


def create_run(config: RunConfig) -> Call:
    return Call("POST", "/v1/runs", config.model_dump())


def get_run(run_id: str) -> Call:
    return Call("GET", _run_path(run_id))


def delete_run(run_id: str) -> Call:
    return Call("DELETE", _run_path(run_id))


def get_metrics(run_id: str) -> Call:
    return Call("GET", _run_path(run_id, "/metrics"))


def list_checkpoints(run_id: str) -> Call:
    return Call("GET", _run_path(run_id, "/checkpoints"))


# ----- training ---------------------------------------------------------------------------


def training_examples(batch: Any) -> list[dict[str, Any]]:
    """The wire form of a batch of dicts and/or `TrainingExample`s, each one checked."""
    if isinstance(batch, (str, bytes, Mapping, TrainingExample)) or not isinstance(batch, Iterable):
        raise ValidationError(
            "batch must be a list of examples ({'text': ...} or {'messages': [...]}), "
            f"got {type(batch).__name__}"
        )
    examples = []
    for index, item in enumerate(batch):
        try:
            example = (
                item if isinstance(item, TrainingExample) else TrainingExample.model_validate(item)
            )
        except pydantic.ValidationError as exc:
            raise ValidationError(f"batch[{index}]: {pydantic_message(exc)}") from None
        examples.append(example.to_wire())
    if not examples:
        raise ValidationError("batch is empty: pass at least one example")
    return examples


def forward_backward(run_id: str, batch: Any, accumulate: bool = False) -> Call:
    body = {"batch": training_examples(batch), "accumulate": bool(accumulate)}
    return Call("POST", _run_path(run_id, "/forward_backward"), body)


def optim_step(run_id: str, learning_rate: float | None = None) -> Call:
    if learning_rate is not None and not learning_rate > 0:
        raise ValidationError(f"learning_rate must be positive, got {learning_rate!r}")
    return Call("POST", _run_path(run_id, "/optim_step"), {"learning_rate": learning_rate})


def save_state(
    run_id: str, mode: str = "adapter", push_to_hub: bool = False, hub_model_id: str | None = None
) -> Call:
    if mode not in SAVE_MODES:
        raise ValidationError(f"mode must be one of {', '.join(SAVE_MODES)}, got {mode!r}")
    if push_to_hub and not hub_model_id:
        raise ValidationError("push_to_hub=True needs hub_model_id ('user/model-name')")
    body = {"mode": mode, "push_to_hub": bool(push_to_hub), "hub_model_id": hub_model_id}
    return Call("POST", _run_path(run_id, "/save_state"), body)


# ----- inference --------------------------------------------------------------------------


def check_prompts(prompts: Any, name: str = "prompts") -> list[str]:
    """A non-empty list of strings (one bare string is refused: it would be split into chars)."""
    if isinstance(prompts, str) or not isinstance(prompts, Iterable):
        raise ValidationError(f"{name} must be a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValidationError(f"{name} is empty: pass at least one string")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValidationError(f"{name}[{index}] must be a string, got {type(prompt).__name__}")
    return prompts


def sample_body(
    prompts: list[str],
    max_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.9,
    step: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The sample request body; `options` may hold `seed`, `stop`, `return_logprobs`, `min_p`
    (0..1) and `logit_bias` ({token id: bias in -100..100}); the last two are sent only when
    set, so older servers keep working."""
    unknown = sorted(set(options) - SAMPLE_OPTIONS)
    if unknown:
        raise ValidationError(
            f"unknown sampling argument(s): {', '.join(unknown)} "
            f"(known: max_tokens, temperature, top_p, {', '.join(sorted(SAMPLE_OPTIONS))})"
        )
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValidationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if temperature < 0:
        raise ValidationError(f"temperature must be >= 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValidationError(f"top_p must be in (0, 1], got {top_p!r}")
    body = {
        "prompts": prompts,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "return_logprobs": bool(options.get("return_logprobs", False)),
        "step": step,
        "seed": options.get("seed"),
        "stop": options.get("stop"),
    }
    min_p, bias = options.get("min_p"), options.get("logit_bias")
    if min_p is not None:
        if not 0 <= min_p <= 1:
            raise ValidationError(f"min_p must be in [0, 1], got {min_p!r}")
        body["min_p"] = min_p
    if bias:
        if not isinstance(bias, dict):
            raise ValidationError("logit_bias must be a dict {token id: bias}")
        body["logit_bias"] = {str(token): value for token, value in bias.items()}
    return body


def sample(run_id: str, prompts: Any, **sampling: Any) -> Call:
    return sample_call(run_id, sample_body(check_prompts(prompts), **sampling))


def sample_call(run_id: str, body: dict[str, Any]) -> Call:
    """The sample request for a body built by `sample_body`."""
    return Call("POST", _run_path(run_id, "/sample"), body)


def read_outputs(body: dict[str, Any], answer: dict[str, Any]) -> list[str]:
    """The `outputs` of a sample answer, one per prompt of `body`."""
    outputs = list(answer["outputs"])
    if len(outputs) != len(body["prompts"]):
        raise ServerError(
            f"the server answered {len(outputs)} outputs for {len(body['prompts'])} prompts"
        )
    return outputs


def sample_stream(run_id: str, prompt: str, **sampling: Any) -> Call:
    if not isinstance(prompt, str):
        raise ValidationError(f"prompt must be a string, got {type(prompt).__name__}")
    body = sample_body([prompt], **sampling)
    return Call("POST", _run_path(run_id, "/sample/stream"), body)


def embeddings(run_id: str, texts: Any, step: int | None = None) -> Call:
    body = {"texts": check_prompts(texts, "texts"), "step": step}
    return Call("POST", _run_path(run_id, "/embeddings"), body)


def read_embeddings(body: dict[str, Any]) -> list[list[float]]:
    return [list(vector) for vector in body["embeddings"]]


def cache_key(prompt: str, body: dict[str, Any]) -> str:
    """The cache key of one prompt: the prompt and every other sampling argument."""
    rest = {k: v for k, v in body.items() if k != "prompts"}
    return repr((prompt, sorted((k, repr(v)) for k, v in rest.items())))


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """`items` cut into consecutive lists of at most `size`."""
    if not isinstance(size, int) or size < 1:
        raise ValidationError(f"batch_size must be a positive integer, got {size!r}")
    return [items[i : i + size] for i in range(0, len(items), size)]
