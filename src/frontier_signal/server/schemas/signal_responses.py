"""Response shapes of the Signal REST API (docs/signal-api.md), as `response_model`s: what
`/openapi.json` documents and what each route's answer is checked against. Every field the
routes send is declared; `extra="allow"` keeps any key a route or a recorded (idempotent)
answer adds, so a model never drops a key the SDK reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class BaseModelInfo(Answer):
    id: str
    loaded: bool


class BaseModelList(Answer):
    data: list[BaseModelInfo]


class RunStatus(Answer):
    run_id: str
    base_model: str
    status: str
    step: int
    config: dict
    effective: dict | None
    created_at: str
    updated_at: str


class RunList(Answer):
    data: list[RunStatus]


class DeletedRun(Answer):
    run_id: str
    deleted: bool


class GradStats(Answer):
    max_abs: float | None
    num_params: int | None
    nonfinite: int | None


class ForwardBackwardResult(Answer):
    loss: float
    step: int
    grad_norm: float | None
    grad_stats: GradStats
    tokens: int


class OptimStepMetrics(Answer):
    loss: float | None
    tokens: int | None
    clipped: bool | None
    checkpoint_id: str | None


class OptimStepResult(Answer):
    step: int
    learning_rate: float
    grad_norm: float | None
    metrics: OptimStepMetrics


class SampleResult(Answer):
    outputs: list[str]
    logprobs: list[list[float]] | None
    finish_reasons: list[str]
    step: int


class Embeddings(Answer):
    embeddings: list[list[float]]
    dim: int
    step: int


class SavedState(Answer):
    checkpoint_id: str
    checkpoint_path: str
    artifact_uri: str | None
    mode: str
    step: int
    pushed_to_hub: bool
    hub_model_id: str | None
    files: dict


class Metric(Answer):
    step: int
    loss: float | None
    grad_norm: float | None
    learning_rate: float | None
    tokens: int | None
    time: str


class MetricList(Answer):
    data: list[Metric]


class CheckpointInfo(Answer):
    checkpoint_id: str
    name: str | None
    kind: str
    step: int
    size: int | None
    sha256: str | None
    created_at: str


class CheckpointList(Answer):
    data: list[CheckpointInfo]


class KeptSteps(Answer):
    steps: list[int]
