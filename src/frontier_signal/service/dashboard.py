"""What the web dashboard shows, as plain dicts: runs, one run's curves and files, the queue.

It reads through the existing services and the store with the API's rules: a tenant sees only
its own runs (another tenant's run is "not found", as in the API), and in the queue only its
own work in detail (other tenants' work is counted, never described). The queue comes from the
engine worker's read-only `snapshot()`; nothing here touches the engine. It knows nothing about
HTTP.
Times are UNIX seconds (the browser formats them in the viewer's time zone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from frontier_signal.service.run_spec import RunSpec
from frontier_signal.service.runs import RunService
from frontier_signal.service.tables import Checkpoint, Metric, Request, Run

RECENT_REQUESTS = 20


def tokens_per_s(metric: Metric | None) -> float | None:
    if metric is None or not metric.seconds:
        return None
    return metric.tokens / metric.seconds


def metric_point(metric: Metric) -> dict:
    return {
        "step": metric.step,
        "loss": metric.loss,
        "grad_norm": metric.grad_norm,
        "learning_rate": metric.learning_rate,
        "tokens": metric.tokens,
        "tokens_per_s": tokens_per_s(metric),
        "time": metric.time,
    }


def checkpoint_entry(checkpoint: Checkpoint) -> dict:
    return {
        "checkpoint_id": checkpoint.id,
        "name": checkpoint.name,
        "kind": checkpoint.kind,
        "step": checkpoint.step,
        "size": checkpoint.size,
        "created_at": checkpoint.created_at,
    }


def request_entry(request: Request) -> dict:
    finished = request.finished_at
    error = request.error or {}
    return {
        "request_id": request.id,
        "kind": request.kind,
        "status": request.status,
        "created_at": request.created_at,
        "duration_s": None if finished is None else max(0.0, finished - request.created_at),
        "error": error.get("message"),
    }


class DashboardService:
    """The dashboard's read model over `RunService` (and through it the store and engine worker)."""

    def __init__(self, runs: RunService, render_config: Callable[[RunSpec], dict]):
        """`render_config`: a run's config as the page shows it (the Signal face's shape)."""
        self.runs = runs
        self.store = runs.store
        self.render_config = render_config

    def run_summary(self, run: Run) -> dict:
        latest = self.store.latest_metric(run.id)
        return {
            "run_id": run.id,
            "face": run.face,
            "base_model": run.base_model,
            "lora_rank": run.lora_rank,
            "step": run.step,
            "last_loss": latest.loss if latest is not None else None,
            "tokens_per_s": tokens_per_s(latest),
            "status": run.status,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
        }

    def list_runs(self, tenant_id: str) -> list[dict]:
        return [self.run_summary(run) for run in self.store.list_runs(tenant_id)]

    def run_detail(self, tenant_id: str, run_id: str) -> dict:
        run = self.runs.run_row(tenant_id, run_id)
        checkpoints = [c for c in self.store.list_checkpoints(run_id) if c.kind != "sampler"]
        return {
            **self.run_summary(run),
            "config": self.render_config(run.spec),
            "effective": run.effective,
            "checkpoints": [checkpoint_entry(c) for c in checkpoints],
            "kept_steps": self.runs.kept_steps(tenant_id, run_id),
            "requests": [
                request_entry(r) for r in self.store.recent_requests(run_id, RECENT_REQUESTS)
            ],
        }

    def metrics(self, tenant_id: str, run_id: str, after: int) -> dict:
        """Points of steps after `after`; `step` lets the page see a rewind (a loaded earlier
        state restarts the history there) and reload from the start."""
        run = self.runs.run_row(tenant_id, run_id)
        rows = self.store.metrics_after(run_id, after)
        return {"step": run.step, "data": [metric_point(m) for m in rows]}

    def queue(self, tenant_id: str) -> dict:
        """What the engine runs now and what waits: this tenant's work in detail, the rest as
        counts by kind (shared work, such as loading a base model, is counted there too)."""
        own = {run.id for run in self.store.list_runs(tenant_id)}
        snapshot = self.runs.worker.snapshot()
        answer: dict = {"workers": len(self.runs.worker.workers())}
        for part in ("running", "pending"):
            mine, others = [], Counter[str]()
            for position, work in enumerate(snapshot[part]):
                if work["key"] in own:
                    mine.append({**work, "run_id": work.pop("key"), "position": position})
                else:
                    others[work["kind"]] += 1
            answer[part] = {"own": mine, "others": dict(others)}
        return answer

    def base_models(self) -> list[dict]:
        return [{"id": model.id, "loaded": model.loaded} for model in self.runs.list_models()]
