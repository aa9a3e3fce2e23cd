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
    output: Path | None = typer.Option(None, help="Where to save (default: the data folder)."),
) -> None:
    """Fine-tune a base model on a small bundled dataset, sample before/after, save the adapter."""
    from frontier_signal.demo import run_demo
    from frontier_signal.engine.errors import EngineError

    try:
        run_demo(model, steps, learning_rate, rank, output, echo=typer.echo)
    except EngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("models")
def list_models() -> None:
    """List the base models this machine can load."""
    from frontier_signal.backend.models import registered_models

    for name, source in registered_models().items():
        where = source.path / source.gguf_file if source.gguf_file else source.path or "built-in"
        typer.echo(f"{name}\t{where}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
