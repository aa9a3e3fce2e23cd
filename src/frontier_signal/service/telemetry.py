"""Prometheus metrics of one server (docs/observability.md lists them all).

`Telemetry` owns a private `CollectorRegistry` (one per app, so several servers in one process,
as in the tests, never collide) and is fed from three places:
- the HTTP middleware (`server/telemetry.py`): requests by face, route template and status;
- the scheduler, through its `observer` hook: queue wait, batch sizes, training and sampling
  tokens/s, time to first token of streamed samples;
- the run service: checkpoint write time and bytes.
Gauges (queue depth, runs and base models loaded, process RSS, CUDA memory) are read when
scraped. Labels never carry a tenant, key or run id: only faces, route templates, statuses and
work kinds, whose number is bounded. It knows nothing about HTTP beyond those label values.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "Telemetry"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RATE_BUCKETS = (10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
BYTES_BUCKETS = (2**16, 2**20, 2**22, 2**24, 2**26, 2**28, 2**30, 2**32)


class Telemetry:
    """The metrics of one server; `render()` is the `/metrics` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http_metrics(self.registry)
        self._engine_metrics(self.registry)
        self._checkpoint_metrics(self.registry)
        self._gauges(self.registry)

    def _http_metrics(self, registry: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "frontier_http_requests",
            "HTTP requests answered, by API face, route template and status code.",
            ["face", "route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "frontier_http_request_duration_seconds",
            "Time from request to the end of the response body, by face and route template.",
            ["face", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def _engine_metrics(self, registry: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "frontier_scheduler_wait_seconds",
            "Time work waited in the scheduler queue before the engine took it, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "frontier_engine_batch_size",
            "Work items the engine ran together in one batch, by kind.",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "frontier_engine_batch_seconds",
            "Engine time of one batch, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "frontier_engine_tokens",
            "Tokens processed: trained (forward_backward) or generated (sample).",
            ["kind"],
            registry=registry,
        )
        self.tokens_per_s = Histogram(
            "frontier_engine_tokens_per_second",
            "Tokens per second of one engine batch (trained or generated), by kind.",
            ["kind"],
            buckets=RATE_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "frontier_sampling_time_to_first_token_seconds",
            "Time from submitting a streamed sample to its first generated token (queue included).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def _checkpoint_metrics(self, registry: CollectorRegistry) -> None:
        self.checkpoint_seconds = Histogram(
            "frontier_checkpoint_write_seconds",
            "Time to write one checkpoint folder, by kind (sampler, training, merged).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.checkpoint_bytes = Histogram(
            "frontier_checkpoint_bytes",
            "Size of each checkpoint written, by kind.",
            ["kind"],
            buckets=BYTES_BUCKETS,
            registry=registry,
        )

    def _gauges(self, registry: CollectorRegistry) -> None:
        """Read when scraped: the scheduler's (see `bind`), the process's and CUDA's memory."""
        self.queue_depth = Gauge(
            "frontier_scheduler_queue_depth",
            "Work items waiting in the scheduler (not counting the batch running).",
            registry=registry,
        )
        self.runs_loaded = Gauge(
            "frontier_runs_loaded", "Runs (LoRA adapters) in engine memory.", registry=registry
        )
        self.models_loaded = Gauge(
            "frontier_base_models_loaded", "Base models in engine memory.", registry=registry
        )
        self.rss = Gauge(
            "frontier_process_resident_memory_bytes",
            "Resident memory of the server process.",
            registry=registry,
        )
        process = psutil.Process(os.getpid())
        self.rss.set_function(lambda: process.memory_info().rss)
        self.cuda_allocated = Gauge(
            "frontier_cuda_memory_allocated_bytes",
            "CUDA memory held by tensors (0 without CUDA).",
            registry=registry,
        )
        self.cuda_allocated.set_function(_cuda_allocated)

    def bind(self, worker) -> None:
        """Observe this engine worker's batches; read its queue depth and what its engine
        holds (`worker.info()`, published after each batch) when scraped."""
        worker.observe(self)
        self.queue_depth.set_function(lambda: worker.counts()["queued"])
        self.runs_loaded.set_function(lambda: len(worker.info().runs))
        self.models_loaded.set_function(lambda: len(worker.info().loaded_models))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ----- fed by the HTTP middleware ---------------------------------------------------
    def http_done(self, face: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(face, route, str(status)).inc()
        self.http_latency.labels(face, route).observe(seconds)

    # ----- fed by the scheduler (engine thread) -----------------------------------------
    def batch_started(self, kind: str, submitted: list[float], now: float) -> None:
        for at in submitted:
            self.queue_wait.labels(kind).observe(max(0.0, now - at))
        self.batch_size.labels(kind).observe(len(submitted))

    def batch_done(self, kind: str, outcomes: list[Any], seconds: float) -> None:
        """`outcomes`: what each work item of the batch returned (results or exceptions)."""
        self.batch_seconds.labels(kind).observe(seconds)
        if kind not in ("forward_backward", "sample"):  # calls, optimizer steps: no tokens
            return
        tokens = sum(_tokens(kind, outcome) for outcome in outcomes)
        self.tokens.labels(kind).inc(tokens)
        if tokens and seconds > 0:
            self.tokens_per_s.labels(kind).observe(tokens / seconds)

    def first_token(self, submitted: float) -> None:
        self.ttft.observe(max(0.0, time.monotonic() - submitted))

    # ----- fed by the run service -------------------------------------------------------
    def checkpoint_written(self, kind: str, seconds: float, size: int) -> None:
        self.checkpoint_seconds.labels(kind).observe(seconds)
        self.checkpoint_bytes.labels(kind).observe(size)


def _tokens(kind: str, outcome: Any) -> int:
    if isinstance(outcome, BaseException):
        return 0
    if kind == "forward_backward":
        return int(getattr(outcome, "num_tokens", 0))
    # a sample work item: a list of SampleResult
    return sum(len(s.tokens) for result in outcome for s in result.sequences)


def _cuda_allocated() -> float:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to say 0
    if torch is None or not torch.cuda.is_available():
        return 0.0
    return float(torch.cuda.memory_allocated())
