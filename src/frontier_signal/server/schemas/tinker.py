"""Wire types of the Tinker-style API (`/api/v1`, docs/tinker-api.md), and their conversions.

Request bodies ignore unknown fields (clients add `type`, `seq_id`, ... freely); the shapes are
those hpcai 0.2.0 sends (tinker-wire-protocol.md §3, §4). `to_run_spec` turns a new model's body
into a `RunSpec`, the small `to_*` functions turn the others into engine types and the
`*_output` functions turn engine results into the exact result shapes of §2.3. Nothing here
touches torch or the store.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, StrictStr

from frontier_signal.engine.types import (
    LOSS_FNS,
    Datum,
    ForwardBackwardResult,
    OptimizerSpec,
    SampleResult,
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


class CreateModelBody(Body):
    base_model: str
    lora_config: LoraConfig = Field(default_factory=LoraConfig)
    # tinker: the model is `{session_id}:train:{model_seq_id}`.
    session_id: str | None = None
    model_seq_id: int | None = Field(None, ge=0)
    user_metadata: dict | None = None
    optimizer_config: dict | None = None

    def to_run_spec(self, tenant_id: str) -> RunSpec:
        """The run this model is (raises InvalidRequest when it would train nothing)."""
        if self.optimizer_config and self.optimizer_config.get("type", "adamw") != "adamw":
            raise InvalidRequest("only the adamw optimizer is supported by this server")
        lora, metadata = self.lora_config, self.user_metadata
        return model_spec(tenant_id, self.base_model, lora, self.session_id, metadata)


class ModelBody(Body):
    model_id: str


class ForwardBackwardBody(ModelBody):
    forward_backward_input: ForwardBackwardInput
    seq_id: int | None = None
    forward_only: bool = False  # protobuf bodies carry it; JSON ones use /forward


class ForwardBody(ModelBody):
    forward_input: ForwardBackwardInput
    seq_id: int | None = None


class AdamParams(Body):
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class OptimStepBody(ModelBody):
    adam_params: AdamParams | None = None
    optimizer_params: dict | None = None  # tinker: optimizers other than Adam
    seq_id: int | None = None


class SaveWeightsBody(ModelBody):
    path: str | None = None
    overwrite: bool = False
    seq_id: int | None = None
    ttl_seconds: int | None = TtlSeconds
    # tinker's nameless save_weights_for_sampler: the server opens the sampling session.
    sampling_session_seq_id: int | None = None
    kind: str = "snapshot"


class SaveWeightsExternalBody(ModelBody):
    path: str  # the name of the external weights (tinker requires one)
    overwrite: bool = False
    seq_id: int | None = None
    ttl_seconds: int | None = TtlSeconds
    age_encryption_recipients: list[str] | None = None


class LoadWeightsBody(Body):
    path: str
    optimizer: bool = True
    model_id: str | None = None
    seq_id: int | None = None
    # tinker's create_training_client_from_state: no create_model; the server makes
    # `{session_id}:train:{model_seq_id}` from the checkpoint.
    session_id: str | None = None
    model_seq_id: int | None = Field(None, ge=0)
    base_model: str | None = None
    user_metadata: dict | None = None

    def to_run_spec(self, tenant_id: str, source: RunSpec) -> RunSpec:
        """The model tinker's `create_training_client_from_state` makes: the source run's
        base model and LoRA layout (the loaded checkpoint's layout replaces it), a new seed."""
        if self.base_model and self.base_model != source.base_model:
            raise InvalidRequest(
                f"the checkpoint is of {source.base_model!r}, not {self.base_model!r}"
            )
        lora = LoraConfig.model_construct(  # the source run's own values: valid already
            rank=source.lora_rank,
            seed=None,
            train_attn=source.trains_attention,
            train_mlp=source.trains_mlp,
            train_unembed=source.trains_unembed,
        )
        return model_spec(tenant_id, source.base_model, lora, self.session_id, self.user_metadata)


class CreateSessionBody(Body):
    tags: list[str] = Field(default_factory=list)
    user_metadata: dict | None = None
    sdk_version: str = ""


class SessionBody(Body):
    session_id: str


class CreateSamplingSessionBody(Body):
    session_id: str
    sampling_session_seq_id: int = 0
    base_model: str | None = None
    model_path: str | None = None


class RequestIdBody(Body):
    request_id: str


class TtlBody(Body):
    ttl_seconds: int | None = TtlSeconds


class WeightsInfoBody(Body):
    tinker_path: str


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


class SampleBody(Body):
    prompt: ModelInput
    num_samples: int = Field(1, ge=1, le=256)
    sampling_params: WireSamplingParams = Field(default_factory=WireSamplingParams)
    base_model: str | None = None
    model_path: str | None = None
    prompt_logprobs: bool | None = False
    topk_prompt_logprobs: int = 0
    # tinker: the weights come from the sampling session; seq_id de-duplicates resends.
    sampling_session_id: str | None = None
    seq_id: int | None = None
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: dict | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None


class RetrieveFutureBody(Body):
    request_id: str
    model_id: str | None = None
    # Sent (always) by tinker ≥ 0.25 only: such clients take `{error, category}` failures.
    allow_metadata_only: bool | None = None


class TelemetryBody(Body):
    events: list[dict] = Field(default_factory=list)


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


def check_sample_supported(body: SampleBody) -> None:
    """Refuse (400) the sampling options this server does not implement."""
    unsupported = {
        "topk_prompt_logprobs": body.topk_prompt_logprobs,
        "topk_sample_logprobs": body.topk_sample_logprobs,
        "target_prompt_logprobs": body.target_prompt_logprobs,
        "prompt_alt_tokens_k": body.prompt_alt_tokens_k,
        "prompt_logprobs_last_n": body.prompt_logprobs_last_n,
    }
    for name, value in unsupported.items():
        if value:
            raise InvalidRequest(f"{name} is not supported by this server; leave it unset")


def to_optimizer_overrides(body: OptimStepBody) -> dict[str, float]:
    """Every Adam setting, for this step (weight decay and clipping default to 0 here)."""
    if body.optimizer_params is not None:
        kind = body.optimizer_params.get("type", "?")
        if kind != "adamw":
            raise InvalidRequest(
                f"optimizer {kind!r} is not supported by this server; send adam_params (AdamW)"
            )
        return AdamParams.model_validate(body.optimizer_params).model_dump()
    return (body.adam_params or AdamParams()).model_dump()


# ----- conversions: engine → result shapes (§2.3) ------------------------------------------
def tensor(values: list[float]) -> dict:
    return {"data": list(values), "dtype": "float32", "shape": [len(values)]}


def forward_backward_output(result: ForwardBackwardResult) -> dict:
    outputs = [
        {"logprobs": tensor(logprobs), "elementwise_loss": tensor(loss)}
        for logprobs, loss in zip(result.logprobs, result.elementwise_loss, strict=True)
    ]
    return {
        "loss_fn_output_type": "scalar",
        "loss_fn_outputs": outputs,
        "metrics": result.metrics,
    }


def sample_output(result: SampleResult, prompt_logprobs: bool) -> dict:
    sequences = [
        {"tokens": s.tokens, "logprobs": s.logprobs, "stop_reason": s.stop_reason}
        for s in result.sequences
    ]
    return {
        "type": "sample",
        "sequences": sequences,
        "prompt_logprobs": result.prompt_logprobs if prompt_logprobs else None,
    }
