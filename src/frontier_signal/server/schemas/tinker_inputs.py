"""The payloads inside Tinker request bodies and their conversions to internal types.

Tokens (`ModelInput`), Datums (`WireDatum`, `TensorData`), LoRA and Adam settings and sampling
parameters, as hpcai 0.2.0 and tinker send them (tinker-wire-protocol.md §3, §4); `model_spec`,
`to_datums` and `to_sampling_params` turn them into a `RunSpec` and engine types. The request
bodies that carry them are in `tinker.py`, the answers in `tinker_outputs.py`. Nothing here
touches torch or the store.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, StrictStr

from frontier_signal.engine.types import (
    LOSS_FNS,
    Datum,
    OptimizerSpec,
    SamplingParams,
    target_modules_from_switches,
)
from frontier_signal.engine.validation import logit_bias_from_wire
from frontier_signal.server.schemas.rules import TokenId, WireBody
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.files import MAX_TTL_SECONDS
from frontier_signal.service.run_spec import RunSpec

# LoRA alpha of runs made through this face (Tinker and SkyRL tx use a fixed alpha of 32).
TINKER_LORA_ALPHA = 32.0
TINKER_MAX_SEQ_LENGTH = 4096
# What a null `max_tokens` means (the hpcai SDK's default is None).
DEFAULT_MAX_TOKENS = 128
TtlSeconds = Field(None, gt=0, le=MAX_TTL_SECONDS)
Seed = Field(None, ge=0, le=2**53 - 1)


class Body(WireBody):
    model_config = ConfigDict(extra="ignore")


class Chunk(Body):
    type: str = "encoded_text"
    tokens: list[TokenId] | TokenId = Field(default_factory=list)


class ModelInput(Body):
    chunks: list[Chunk]


class TensorData(Body):
    data: list[int | float]
    dtype: str = "float32"
    shape: list[int] | None = None


class WireDatum(Body):
    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData] = Field(default_factory=dict)


class ForwardBackwardInput(Body):
    data: list[WireDatum]
    loss_fn: str = "cross_entropy"
    loss_fn_config: dict[str, float] | None = None


class LoraConfig(Body):
    rank: int = Field(32, ge=1, le=512)
    seed: int | None = Seed
    train_unembed: bool = False
    train_mlp: bool = False
    train_attn: bool = True


class AdamParams(Body):
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class WireSamplingParams(Body):
    max_tokens: int | None = None
    seed: int | None = Seed
    # `["1"]` is not a list of token ids, `[true]` not a list of strings.
    stop: str | list[StrictStr] | list[TokenId] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    # Our JSON extensions (the tinker SDK's SamplingParams and the protobuf codec carry neither;
    # raw-JSON callers can send them).
    min_p: float = 0.0
    logit_bias: dict[str, float] | None = None


# ----- conversions: wire → internal types --------------------------------------------------
def model_spec(
    tenant_id: str,
    base_model: str,
    lora: LoraConfig,
    session_id: str | None,
    user_metadata: dict | None,
) -> RunSpec:
    """A Tinker model's RunSpec: LoRA on the switched-on layers (attention, MLP, unembedding)
    with this face's fixed alpha, dropout, length and base AdamW (each step sends its own)."""
    targets = target_modules_from_switches(lora.train_attn, lora.train_mlp, lora.train_unembed)
    if not targets:
        raise InvalidRequest("train_attn, train_mlp and train_unembed are all false")
    return RunSpec(
        base_model=base_model,
        tenant_id=tenant_id,
        face="tinker",
        lora_rank=lora.rank,
        lora_alpha=TINKER_LORA_ALPHA,
        lora_dropout=0.0,
        target_modules=targets,
        requested_target_modules=targets,
        optimizer=OptimizerSpec(
            "adamw", learning_rate=1e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
        ),
        max_seq_length=TINKER_MAX_SEQ_LENGTH,
        gradient_checkpointing=False,
        bf16=False,
        seed=lora.seed,
        session_id=session_id,
        user_metadata={str(k): str(v) for k, v in (user_metadata or {}).items()},
    )


def input_tokens(model_input: ModelInput, where: str) -> list[int]:
    """The flat token list of a ModelInput (only text chunks exist on this server)."""
    tokens: list[int] = []
    for index, chunk in enumerate(model_input.chunks):
        if chunk.type != "encoded_text" or not isinstance(chunk.tokens, list):
            raise InvalidRequest(
                f"{where}.chunks[{index}] is a {chunk.type!r} chunk; this server takes "
                "only encoded_text chunks (no images)"
            )
        tokens.extend(chunk.tokens)
    return tokens


_LOSS_INPUTS = {
    "target_tokens": "target_tokens",
    "weights": "weights",
    "logprobs": "sampler_logprobs",
    "advantages": "advantages",
}


def to_datum(datum: WireDatum, index: int) -> Datum:
    """A wire Datum → the engine's Datum (the client already shifted the targets)."""
    where = f"data[{index}]"
    tokens = input_tokens(datum.model_input, f"{where}.model_input")
    unknown = set(datum.loss_fn_inputs) - set(_LOSS_INPUTS)
    if unknown:
        raise InvalidRequest(
            f"{where}.loss_fn_inputs has unknown keys {sorted(unknown)}; "
            f"this server reads {sorted(_LOSS_INPUTS)}"
        )
    if "target_tokens" not in datum.loss_fn_inputs:
        raise InvalidRequest(f"{where}.loss_fn_inputs.target_tokens is required")
    fields: dict[str, list] = {}
    for wire_name, name in _LOSS_INPUTS.items():
        tensor = datum.loss_fn_inputs.get(wire_name)
        if tensor is None:
            continue
        if len(tensor.data) != len(tokens):
            raise InvalidRequest(
                f"{where}.loss_fn_inputs.{wire_name} has {len(tensor.data)} values; it must "
                f"have one per model_input token ({len(tokens)})"
            )
        if name == "target_tokens":
            fields[name] = [int(value) for value in tensor.data]
        else:
            fields[name] = [float(value) for value in tensor.data]
    return Datum(input_tokens=tokens, **fields)


def to_datums(batch: ForwardBackwardInput) -> tuple[list[Datum], str, dict[str, float]]:
    """(datums, loss_fn, loss_fn_config); the engine checks the config's keys and values."""
    if not batch.data:
        raise InvalidRequest("data is empty: send at least one Datum")
    if batch.loss_fn not in LOSS_FNS:
        raise InvalidRequest(
            f"unknown loss_fn {batch.loss_fn!r}; this server has {', '.join(LOSS_FNS)}"
        )
    datums = [to_datum(datum, i) for i, datum in enumerate(batch.data)]
    return datums, batch.loss_fn, dict(batch.loss_fn_config or {})


def to_sampling_params(wire: WireSamplingParams) -> SamplingParams:
    """Stop strings become stop strings; stop token ids become stop ids and are then the only
    stop tokens (`ignore_eos`: "exactly those", docs/tinker-api.md; service/sampling.py holds
    the stop policy); a null max_tokens becomes DEFAULT_MAX_TOKENS."""
    stop = [wire.stop] if isinstance(wire.stop, str) else list(wire.stop or [])
    strings = tuple(s for s in stop if isinstance(s, str))
    token_ids = tuple(s for s in stop if isinstance(s, int))
    return SamplingParams(
        max_tokens=DEFAULT_MAX_TOKENS if wire.max_tokens is None else wire.max_tokens,
        temperature=wire.temperature,
        top_p=wire.top_p,
        top_k=wire.top_k,
        stop_strings=strings,
        stop_token_ids=token_ids,
        ignore_eos=bool(token_ids),
        seed=wire.seed,
        min_p=wire.min_p,
        logit_bias=logit_bias_from_wire(wire.logit_bias),
    )
