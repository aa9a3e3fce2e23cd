"""Response shapes of the routes outside the API faces: liveness and readiness
(`/health`, `/ready`) and the dashboard's JSON API (`/v1/dashboard/*`, docs/dashboard.md), as
`response_model`s. `extra="allow"` keeps every key the services send (the dashboard page reads
them), so declaring a model never drops one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(Answer):
    status: str


class Ready(Answer):
    """200 when ready; the same keys (`status` "not_ready" or "loading", a `detail` or the
    `models` being loaded) come with the 503."""

    status: str
    models: list[str]
    caches: dict
    scheduler: dict


class DashboardSession(Answer):
    signed_in: bool
    no_auth: bool
    tenant_id: str | None = None
    message: str | None = None


class RunSummary(Answer):
    run_id: str
    face: str
    base_model: str
    lora_rank: int | None
    step: int
    last_loss: float | None
    tokens_per_s: float | None
    status: str
    created_at: float
    updated_at: float


class RunSummaryList(Answer):
    data: list[RunSummary]


class RunDetail(RunSummary):
    config: dict
    effective: dict | None
    checkpoints: list[dict]
    kept_steps: list[int]
    requests: list[dict]


class MetricPoints(Answer):
    step: int
    data: list[dict]


class QueuePart(Answer):
    own: list[dict]
    others: dict[str, int]


class Queue(Answer):
    workers: int
    running: QueuePart
    pending: QueuePart


class BaseModelInfo(Answer):
    id: str
    loaded: bool


class BaseModelList(Answer):
    data: list[BaseModelInfo]
