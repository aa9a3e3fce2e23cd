"""Response shapes of the Tinker-style API (`/api/v1`), as `response_model`s: what
`/openapi.json` documents and what each route's answer is checked against.

The shapes are the ones the hpcai 0.2.0 and tinker 0.38 SDKs read (tinker-wire-protocol.md §2.3,
§9, §13); every field a route sends is declared, and `extra="allow"` keeps any key a newer
server adds, so declaring a model never drops a key a client reads. Futures' results (polled by
`retrieve_future`) are JSON or protobuf and documented on that route.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class FutureHandle(Answer):
    """An asynchronous operation started: poll `retrieve_future` with `request_id`."""

    request_id: str
    model_id: str | None


class SampleHandle(Answer):
    request_id: str
    sample_sequence_ids: list[str]


class ClientConfig(Answer):
    """The tinker SDK's start-up flags (`/client/config`)."""

    pjwt_auth_enabled: bool
    credential_default_source: str
    parallel_fwdbwd_chunks: bool
    proto_compress_fwdbwd: bool
    fwdbwd_max_chunk_len: int
    fwdbwd_max_chunk_bytes_count: int
    use_pyqwest_transport: bool
    sample_no_retries: bool
    sample_use_retrieve_futures: bool
    custom_loss_server_side: bool
    sample_join_sampling_session: bool


class ClientDynamicConfig(Answer):
    refresh_interval_sec: int
    sample_cancel_enabled: bool
    sample_cancel_max_batch_size: int


class CreatedSession(Answer):
    type: Literal["create_session"] = "create_session"
    session_id: str


class Heartbeat(Answer):
    type: Literal["session_heartbeat"] = "session_heartbeat"


class FinishedSession(Answer):
    session_id: str
    status: Literal["finished"] = "finished"


class SessionList(Answer):
    sessions: list[str]


class Session(Answer):
    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str]
    status: str


class CreatedSamplingSession(Answer):
    type: Literal["create_sampling_session"] = "create_sampling_session"
    sampling_session_id: str


class SamplerInfo(Answer):
    sampler_id: str
    base_model: str
    model_path: str | None


class WeightsInfo(Answer):
    base_model: str
    optimizer_config: dict
    is_lora: bool
    lora_rank: int
    train_unembed: bool | None
    train_mlp: bool | None
    train_attn: bool | None


class Status(Answer):
    status: str


class SupportedModel(Answer):
    model_name: str


class ServerCapabilities(Answer):
    supported_models: list[SupportedModel]


class ModelData(Answer):
    model_name: str
    arch: str
    tokenizer_id: str


class ModelInfo(Answer):
    type: Literal["get_info"] = "get_info"
    model_id: str
    model_data: ModelData
    is_lora: bool
    lora_rank: int
    model_name: str
    optimizer_config: dict


class CancelledFuture(Answer):
    request_id: str
    cancelled: bool


class Checkpoint(Answer):
    checkpoint_id: str
    checkpoint_type: str
    time: str
    checkpoint_path: str
    tinker_path: str
    size_bytes: int | None
    public: bool
    expires_at: str | None


class CheckpointList(Answer):
    checkpoints: list[Checkpoint]


class TrainingRun(Answer):
    training_run_id: str
    base_model: str
    model_owner: str
    is_lora: bool
    corrupted: bool
    lora_rank: int
    last_request_time: str
    last_checkpoint: Checkpoint | None
    last_sampler_checkpoint: Checkpoint | None
    user_metadata: dict


class Cursor(Answer):
    offset: int
    limit: int
    total_count: int


class TrainingRunList(Answer):
    training_runs: list[TrainingRun]
    cursor: Cursor


class SignedUrls(Answer):
    urls: dict[str, str]
    expires: str


class SampledSequence(Answer):
    tokens: list[int]
    logprobs: list[float]
    stop_reason: str


class SampleResponse(Answer):
    """tinker's SampleResponse (also the result of an `asample` future)."""

    type: Literal["sample"] = "sample"
    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None


class ForwardBackwardOutput(Answer):
    """The result of a `forward_backward` / `forward` future."""

    loss_fn_output_type: str
    loss_fn_outputs: list[dict]
    metrics: dict[str, float]


class TryAgain(Answer):
    """`retrieve_future` while the operation still runs."""

    type: Literal["try_again"]


class CompleteMetadata(Answer):
    """`retrieve_future` of a large result, for tinker to fetch once it reserved memory."""

    status: Literal["complete_metadata"]
    response_payload_size: int


class FailedFuture(Answer):
    """`retrieve_future` of a failed operation, as tinker reads it (hpcai gets a 400)."""

    error: str
    category: str


def inline_schema(model: type[BaseModel]) -> dict:
    """A small model's JSON schema, inline (for `responses=` content)."""
    schema = model.model_json_schema()
    schema.pop("$defs", None)
    return schema


FUTURE_RESULT_SCHEMA = {
    "anyOf": [
        inline_schema(TryAgain),
        inline_schema(CompleteMetadata),
        inline_schema(FailedFuture),
        inline_schema(ForwardBackwardOutput),
        {"$ref": "#/components/schemas/SampleResponse"},
        {"type": "object", "description": "Another operation's result (its `type` names it)."},
    ]
}
