"""The `frontier-signal` command line. Subcommands import torch only when they need it."""

from __future__ import annotations

from pathlib import Path

import typer

from frontier_signal.local.cli import app as local_app  # typer only: no torch

app = typer.Typer(
    help="Frontier Signal: LoRA fine-tuning and serving.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

app.add_typer(local_app, name="local")


@app.command()
def demo(
    model: str = typer.Option(DEFAULT_MODEL, help="Base model name or local folder."),
    steps: int = typer.Option(12, min=1, help="Optimizer steps."),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate."),
    rank: int = typer.Option(16, min=1, help="LoRA rank."),
    output: Path | None = typer.Option(
        None, help="Data folder of the demo's server (default: $FRONTIER_SIGNAL_HOME)."
    ),
) -> None:
    """Start a local server, then through the SDK: fine-tune on a small bundled dataset, sample
    before and after, save the adapter, stop the server."""
    from frontier_signal import SignalAPIError
    from frontier_signal.demo import run_demo

    try:
        run_demo(model, steps, learning_rate, rank, output, echo=typer.echo)
    except (SignalAPIError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("models")
def list_models() -> None:
    """List the base models this machine can load."""
    from frontier_signal.backend.models import registered_models

    for name, source in registered_models().items():
        where = source.path / source.gguf_file if source.gguf_file else source.path or "built-in"
        typer.echo(f"{name}\t{where}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    data_dir: Path | None = typer.Option(
        None,
        help="Database and checkpoints (default: $FRONTIER_SIGNAL_HOME or ~/.frontier-signal).",
    ),
    models: list[str] = typer.Option(
        [], "--models", help="Base models to load at start (repeatable)."
    ),
    model_dir: list[Path] = typer.Option(
        [],
        "--model-dir",
        help="A base-model folder callers may use by its path (repeatable); no other is.",
    ),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="No API keys. Local development only: binds to loopback."
    ),
    database_url: str | None = typer.Option(
        None, help="SQLAlchemy URL (default: SQLite in the data folder)."
    ),
    adapter: list[str] = typer.Option(
        [], "--adapter", help="Serve a PEFT LoRA folder by name: NAME=PATH (repeatable)."
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Engine workers as Ray actors: 'local' (start Ray here) or a cluster address "
        "('auto', 'ray://HOST:PORT', 'HOST:PORT'); docs/scale-out.md.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Engine workers with --ray (default 1)."
    ),
) -> None:
    """Run the API server (Signal, Tinker, OpenAI faces); more settings: FRONTIER_SIGNAL_* env."""
    import uvicorn

    from frontier_signal.server import logs
    from frontier_signal.server.app import create_app
    from frontier_signal.service.settings import ServiceSettings

    overrides = {"host": host, "port": port, "no_auth": no_auth}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if models:
        overrides["models"] = models
    if model_dir:
        overrides["model_dirs"] = model_dir
    if database_url:
        overrides["database_url"] = database_url
    if adapter:
        overrides["adapters"] = adapter
    if ray:
        overrides["ray_address"] = ray
    if workers is not None:
        overrides["workers"] = workers
    try:
        settings = ServiceSettings(**overrides)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level)
    try:
        application = create_app(settings)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        application, host=settings.host, port=settings.port, log_config=None, access_log=False
    )


@app.command()
def export(
    checkpoint: Path = typer.Argument(
        ..., help="An adapter checkpoint folder (adapter_config.json + adapter_model.safetensors)."
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="New folder to write (must not exist)."
    ),
    fmt: str = typer.Option(
        "gguf", "--format", help="gguf (llama.cpp / Ollama files) or merged (transformers folder)."
    ),
    gguf_type: str = typer.Option("f16", "--type", help="GGUF weight type: f16 or q8_0."),
) -> None:
    """Export a checkpoint: GGUFs (merged model, base model, LoRA adapter, Ollama Modelfile) or a
    merged transformers folder. Runs on this machine's CPU; no server needed."""
    if fmt not in ("gguf", "merged"):
        typer.echo(f"error: --format must be gguf or merged, got {fmt!r}", err=True)
        raise typer.Exit(2)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        typer.echo(f"error: {output} exists and is not an empty folder: name a new one", err=True)
        raise typer.Exit(2)
    from frontier_signal.engine import operations as ops
    from frontier_signal.engine.errors import EngineError
    from frontier_signal.engine.worker import DirectWorker

    worker = DirectWorker(device="cpu", dtype="float32")
    try:
        worker.run(ops.RestoreRun("export", None, str(checkpoint), with_optimizer=False))
        worker.run(ops.Export("export", str(output), fmt, gguf_type))  # type: ignore[arg-type]
    except EngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in sorted(output.iterdir()):
        typer.echo(f"{path}\t{path.stat().st_size} bytes")


keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys, name="keys")


def _store(data_dir: Path | None, database_url: str | None):
    from frontier_signal.service.settings import ServiceSettings
    from frontier_signal.service.store import Store

    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    if database_url:
        overrides["database_url"] = database_url
    return Store(ServiceSettings(**overrides).resolved_database_url())


DATA_DIR = typer.Option(None, help="Data folder of the server (default: $FRONTIER_SIGNAL_HOME).")
DATABASE_URL = typer.Option(None, help="SQLAlchemy URL (default: SQLite in the data folder).")


@keys.command("create")
def keys_create(
    name: str = typer.Option(..., help="Who the key is for (a new tenant of that name)."),
    data_dir: Path | None = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Create a key for a new tenant and print it once (only its hash is stored)."""
    from frontier_signal.service.store import tinker_key_form

    key, row = _store(data_dir, database_url).create_key(name)
    typer.echo(key)
    typer.echo(
        f"key id {row.id}, tenant {row.tenant_id}: store it now, it is not shown again\n"
        f"the same key for the official tinker SDK (it accepts only tml- keys): "
        f"{tinker_key_form(key)}",
        err=True,
    )


@keys.command("list")
def keys_list(data_dir: Path | None = DATA_DIR, database_url: str | None = DATABASE_URL) -> None:
    """List keys (id, name, tenant, prefix, status); never the keys themselves."""
    for row in _store(data_dir, database_url).list_keys():
        status = "revoked" if row.revoked_at is not None else "active"
        typer.echo(f"{row.id}\t{row.name}\t{row.tenant_id}\t{row.prefix}...\t{status}")


@keys.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="Key id, name or prefix."),
    data_dir: Path | None = DATA_DIR,
    database_url: str | None = DATABASE_URL,
) -> None:
    """Revoke a key: requests with it get 403 from then on."""
    count = _store(data_dir, database_url).revoke_key(key)
    if not count:
        typer.echo(f"error: no active key matches {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {count} key(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
