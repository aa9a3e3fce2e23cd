"""The `frontier-signal` command line. Subcommands import torch only when they need it."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

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
        file = source.path / source.gguf_file if source.gguf_file and source.path else None
        where = file or source.path or "built-in"
        typer.echo(f"{name}\t{where}")


# `serve`'s options are generated from the typed settings (service/settings.py), so a setting has
# one name, one type, one default and one validation: a flag left out is None here and the setting
# then comes from its FRONTIER_SIGNAL_* environment variable, `.env` or its default, in that order.
# Legacy spellings of the repeatable options; every other flag is the field's name in kebab case.
SERVE_FLAGS = {
    "model_dirs": "--model-dir",
    "adapters": "--adapter",
    "no_auth": "--no-auth/--auth",
    "ray_address": "--ray",
}


def _serve_parameters(settings_type: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword-only typer option per settings field, default None (left to the settings)."""
    parameters = []
    for name, field in settings_type.model_fields.items():
        kind: Any = field.annotation
        if typing.get_origin(kind) in (types.UnionType, typing.Union):  # `int | None` → int
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        flag = SERVE_FLAGS.get(name, "--" + name.replace("_", "-"))
        default = field.get_default(call_default_factory=False)
        if field.default_factory is list:
            shown = "none"
        elif field.default_factory:
            shown = "computed at start"
        else:
            shown = repr(default)
        env = f"FRONTIER_SIGNAL_{name.upper()}"
        element = (typing.get_args(kind) or (kind,))[0]
        repeat = " Repeatable; the env var takes a JSON list." if typing.get_origin(kind) else ""
        text = f"{field.description}{repeat} (env {env}; default {shown})"
        metavar = None if kind is bool else element.__name__.upper()
        option = typer.Option(None, flag, help=text, show_default=False, metavar=metavar)
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )
    return parameters


def serve(**options: Any) -> None:
    """Run the API server (Signal, Tinker, OpenAI, Anthropic faces). Every option is a setting
    that may also come from its FRONTIER_SIGNAL_* environment variable or `.env`; a flag wins."""
    import uvicorn

    from frontier_signal.server import logs
    from frontier_signal.server.app import create_app
    from frontier_signal.service.settings import ServiceSettings

    overrides = {name: value for name, value in options.items() if value is not None}
    try:
        settings = ServiceSettings(**overrides)
        logs.configure(settings.log_level)
        application = create_app(settings)
    except ValueError as exc:  # pydantic's ValidationError included: it names the setting
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        application, host=settings.host, port=settings.port, log_config=None, access_log=False
    )


def _register_serve() -> None:
    try:
        from frontier_signal.service.settings import ServiceSettings
    except ImportError as exc:  # the SDK-only install: no pydantic-settings
        missing = str(exc)

        @app.command("serve")
        def serve_missing() -> None:
            """Run the API server: needs `pip install frontier-signal[server]`."""
            typer.echo(f"error: {missing}: install frontier-signal[server]", err=True)
            raise typer.Exit(2)

        return
    parameters = _serve_parameters(ServiceSettings)
    serve.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    serve.__annotations__ = {p.name: p.annotation for p in parameters}
    app.command("serve")(serve)


_register_serve()


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

    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
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
