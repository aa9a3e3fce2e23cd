"""Server settings, typed: from arguments, `FRONTIER_SIGNAL_*` environment variables and `.env`.

`frontier-signal serve --help` is generated from these fields (see cli.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from frontier_signal.paths import data_home
from frontier_signal.service.adapter_registry import parse_adapter_option


class ServiceSettings(BaseSettings):
    """Everything the server reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="FRONTIER_SIGNAL_", env_file=".env", extra="ignore"
    )

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, description="Port to listen on (0 picks a free one).")
    data_dir: Path = Field(
        default_factory=data_home,
        description="Database and checkpoints: $FRONTIER_SIGNAL_HOME, else ~/.frontier-signal.",
    )
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in data_dir.")
    storage_url: str = Field(
        "",
        description="Where checkpoints are shared (fsspec URL: a path, file://, s3:// with "
        "s3fs); default: only the data folder (docs/storage.md).",
    )
    models: list[str] = Field(default_factory=list, description="Base models loaded at start.")
    model_dirs: list[Path] = Field(
        default_factory=list,
        description="Extra base-model folders (transformers format) callers may name by path; "
        "no other folder is a base model (see docs/server.md, registered models).",
    )
    no_auth: bool = Field(False, description="No API keys: local development only.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field("auto", description="Base weights: auto | bfloat16 | float32")
    checkpoint_every: int = Field(10, ge=0, description="Training checkpoint every N steps.")
    sampler_keep_last: int = Field(5, ge=1, description="Sampler weights kept: the last N steps")
    sampler_keep_every: int = Field(10, ge=0, description="... and every N-th step (0: none).")
    max_queued_per_tenant: int = Field(64, ge=1, description="Requests in flight per key.")
    max_runs_per_tenant: int = Field(32, ge=1, description="Active runs per tenant.")
    run_memory_budget_mib: float = Field(
        0,
        ge=0,
        description="Memory all runs' adapters, gradients and optimizer state may take, in MiB "
        "(0: half of this machine's RAM).",
    )
    run_memory_per_tenant_mib: float = Field(
        0,
        ge=0,
        description="... and the runs of one key (0: a quarter of this machine's RAM).",
    )
    decode_slice_tokens: int = Field(
        16,
        ge=1,
        le=4096,
        description="A generation decodes this many tokens, then lets waiting work run.",
    )
    request_retention_hours: float = Field(
        24.0,
        gt=0,
        description="Finished Signal requests (results, idempotency keys) kept this long.",
    )
    decode_4bit: bool = Field(
        True, description="Decode a Q4_1 GGUF model with its own 4-bit codes (CPU, bf16)."
    )
    activation_budget_mib: int | None = Field(
        None,
        ge=0,
        description="Training batches above this much activation memory use gradient "
        "checkpointing even if no run asked; default a quarter of the memory free at start.",
    )
    sample_gather_ms: float = Field(
        20.0, ge=0, le=1000, description="A sample waits this long for more to batch with."
    )
    adapters: list[str] = Field(
        default_factory=list,
        description="Named PEFT LoRA folders served by name: NAME=PATH.",
    )
    adapter_cache_mib: float = Field(
        1024.0, gt=0, description="Frozen adapters kept in memory (LRU): at most this many MiB..."
    )
    adapter_cache_count: int = Field(64, ge=1, description="... and at most this many.")
    prefix_cache_mib: float = Field(
        256.0, ge=0, description="Prompt-prefix KV cache per base model, MiB (0: off)."
    )
    keep_auto_checkpoints: int = Field(
        3,
        ge=1,
        description="Automatic training checkpoints (auto-step-N) kept per run: the newest N; "
        "checkpoints a caller saved are never pruned.",
    )
    ray_address: str | None = Field(
        None,
        description="Run the engine in Ray actors (docs/scale-out.md): 'local' starts Ray in this "
        "process; 'auto', 'ray://HOST:PORT' or 'HOST:PORT' joins a cluster. Unset: one engine in "
        "this process. Needs `pip install frontier-signal[ray]`.",
    )
    workers: int = Field(1, ge=1, le=1024, description="Engine workers (Ray actors) with --ray.")
    worker_cpus: float = Field(
        0,
        ge=0,
        description="CPUs (and torch threads) per engine worker without GPUs, with --ray "
        "(0: the cluster's CPUs / workers). With GPUs each worker takes one GPU.",
    )
    log_level: str = Field("info", description="debug | info | warning | error")

    @field_validator("adapters")
    @classmethod
    def _check_adapters(cls, options: list[str]) -> list[str]:
        for option in options:
            parse_adapter_option(option)  # ValueError → a validation error naming the option
        return options

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'frontier-signal.db'}"
