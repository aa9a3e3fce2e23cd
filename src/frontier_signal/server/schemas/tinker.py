"""Wire types of the Tinker-style API (`/api/v1`, docs/tinker-api.md): its request bodies.

Request bodies ignore unknown fields (clients add `type`, `seq_id`, ... freely); the shapes are
those hpcai 0.2.0 sends (tinker-wire-protocol.md §3, §4). `to_run_spec` turns a new model's body
into a `RunSpec`. The payloads inside bodies and their conversions to engine types are in
`tinker_inputs.py`, the answers rendered from service and engine results in `tinker_outputs.py`
(both re-exported here). Nothing here touches torch or the store.
"""

from __future__ import annotations

from pydantic import Field

from frontier_signal.server.schemas.tinker_inputs import (
    DEFAULT_MAX_TOKENS,
    TINKER_LORA_ALPHA,
    TINKER_MAX_SEQ_LENGTH,
    AdamParams,
    Body,
    Chunk,
    ForwardBackwardInput,
    LoraConfig,
    ModelInput,
    TensorData,
    TtlSeconds,
    WireDatum,
    WireSamplingParams,
    input_tokens,
    model_spec,
    to_datum,
    to_datums,
    to_sampling_params,
)
from frontier_signal.server.schemas.tinker_outputs import (
    forward_backward_output,
    sample_output,
    tensor,
)
from frontier_signal.service.errors import InvalidRequest
from frontier_signal.service.run_spec import RunSpec

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "TINKER_LORA_ALPHA",
    "TINKER_MAX_SEQ_LENGTH",
    "AdamParams",
    "Body",
    "Chunk",
    "ForwardBackwardInput",
    "LoraConfig",
    "ModelInput",
    "TensorData",
    "WireDatum",
    "WireSamplingParams",
    "forward_backward_output",
    "input_tokens",
    "model_spec",
    "sample_output",
    "tensor",
    "to_datum",
    "to_datums",
    "to_sampling_params",
]


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
