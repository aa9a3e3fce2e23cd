"""`frontier-signal local train | export | chat`: the local pipeline from the shell.

Flags map one to one onto the classes' arguments; heavy imports happen inside each command.
"""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

app = typer.Typer(
    help="Local pipeline: conversations → train → ONNX → chat on onnxruntime, no server.",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2) from None


def _load_data(handler, path: Path) -> None:
    loaders = {".jsonl": handler.load_from_jsonl, ".csv": handler.load_from_csv}
    loaders.get(path.suffix.lower(), handler.load_from_json)(path)


@app.command()
def train(
    data: list[Path] = typer.Option(..., help="Conversation files (.json, .jsonl, .csv)."),
    model_name: str = typer.Option(DEFAULT_MODEL, help="Base model name or local folder."),
    output_dir: Path = typer.Option(Path("./trained_model"), help="Where to save the model."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    method: str = typer.Option("lora", help="lora (default) or full fine-tuning."),
    num_epochs: int = typer.Option(3, min=1, help="Passes over the data."),
    batch_size: int = typer.Option(4, min=1, help="Conversations per optimizer step."),
    learning_rate: float | None = typer.Option(
        None, help="Default: 2e-4 for LoRA, 5e-5 for full fine-tuning."
    ),
    max_length: int = typer.Option(256, min=2, help="Tokens per conversation (truncated)."),
    dtype: str = typer.Option("auto", help="LoRA compute dtype: auto, bfloat16, float32."),
) -> None:
    """Fine-tune a model on conversation files and save a merged transformers folder."""
    from frontier_signal.local.data_handler import ConversationDataHandler
    from frontier_signal.local.trainer import LLMTrainer

    try:
        handler = ConversationDataHandler(model_name)
        for path in data:
            _load_data(handler, path)
        texts = handler.format_for_training()
        trainer = LLMTrainer(model_name, device, method=method, dtype=dtype)
        losses = trainer.train(texts, num_epochs, batch_size, learning_rate, max_length)
        saved = trainer.save_model(output_dir)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    for epoch, loss in enumerate(losses, 1):
        typer.echo(f"epoch {epoch}: loss {loss:.4f}")
    typer.echo(f"saved {saved}")


@app.command()
def export(
    model_path: Path = typer.Option(Path("./trained_model"), help="A transformers folder."),
    output_dir: Path = typer.Option(Path("./onnx_model"), help="The ONNX folder to write."),
    opset_version: int = typer.Option(14, help="ONNX opset (14-20)."),
    verify: bool = typer.Option(True, help="Check the graph and logits parity with PyTorch."),
) -> None:
    """Export a trained model to a standalone ONNX folder (decoder with KV cache)."""
    from frontier_signal.local.onnx_converter import ONNXConverter

    try:
        converter = ONNXConverter(model_path)
        folder = converter.convert_to_onnx(output_dir, opset_version)
        ok = converter.verify_onnx_model(folder) if verify else True
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    info = converter.get_model_info(folder)
    typer.echo(
        f"exported {folder} (opset {info['opset_version']}, "
        f"{info['onnx_size_bytes'] / 2**20:.1f} MiB, {info['export_seconds']} s)"
    )
    if verify:
        difference = converter.last_max_logit_difference
        typer.echo(f"parity: max |Δlogit| {difference:.2e} ({'ok' if ok else 'FAILED'})")
        if not ok:
            raise typer.Exit(1)


@app.command()
def chat(
    model_path: Path = typer.Option(Path("./onnx_model"), help="The ONNX folder."),
    device: str = typer.Option("cpu", help="Only cpu."),
    max_length: int = typer.Option(256, min=2, help="Bound on prompt + reply tokens."),
    max_new_tokens: int = typer.Option(50, min=1, help="Tokens per reply."),
    temperature: float = typer.Option(0.7, min=0.0, help="0 is greedy."),
    top_p: float = typer.Option(0.9, help="Nucleus sampling threshold."),
    repetition_penalty: float = typer.Option(1.2, help="1.0 is off."),
    log_conversations: bool = typer.Option(False, help="Append every turn to --log-file."),
    log_file: Path = typer.Option(Path("conversation_log.json"), help="The conversation log."),
    prompt: list[str] | None = typer.Option(
        None, help="Answer these prompts (batched) and exit instead of chatting."
    ),
) -> None:
    """Chat with an exported model on onnxruntime (interactive unless --prompt is given)."""
    from frontier_signal.local.chat_interface import ChatInterface

    try:
        interface = ChatInterface(model_path, device, max_length, log_conversations, log_file)
        if prompt:
            replies = interface.batch_generate(
                prompt, max_new_tokens, temperature, top_p, repetition_penalty
            )
            for reply in replies:
                typer.echo(reply)
            return
        interface.chat(max_new_tokens, temperature, top_p, repetition_penalty)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
