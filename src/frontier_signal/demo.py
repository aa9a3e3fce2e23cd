"""`frontier-signal demo`: the quickstart, end to end, through a real server and the SDK.

Starts an embedded server (SQLite and checkpoints in the data folder, the bundled SmolLM2, a
free port on 127.0.0.1, a fresh API key), then drives it with the `frontier_signal` SDK exactly as
a user would: create a run, sample before training, train on a small bundled dataset with a
progress bar, sample again, save the adapter, and stop the server cleanly.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import resources
from pathlib import Path


def load_demo_dataset() -> list[dict]:
    text = resources.files("frontier_signal.data").joinpath("demo_facts.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_demo(
    model: str, steps: int, learning_rate: float, rank: int, output: Path | None, echo=print
) -> dict:
    from transformers.utils import logging as transformers_logging

    from frontier_signal import SignalClient
    from frontier_signal.backend.models import load_tokenizer
    from frontier_signal.server.embedded import EmbeddedServer
    from frontier_signal.service.settings import ServiceSettings
    from frontier_signal.service.store import Store

    transformers_logging.disable_progress_bar()
    settings = ServiceSettings(host="127.0.0.1", port=0, models=[model])
    if output is not None:
        settings = settings.model_copy(update={"data_dir": Path(output)})
    store = Store(settings.resolved_database_url())
    api_key, _ = store.create_key("demo")
    store.close()

    started = time.perf_counter()
    echo(f"Starting a server (data in {settings.data_dir}) and loading {model} ...")
    with EmbeddedServer(settings) as server:
        server.wait_ready()
        echo(f"  ready at {server.base_url} in {time.perf_counter() - started:.1f}s")
        with SignalClient(api_key=api_key, base_url=server.base_url) as client:
            summary = _quickstart(
                client, model, steps, learning_rate, rank, load_tokenizer(model), echo
            )
            summary["openai_chat"] = _chat_through_openai(
                server.base_url, api_key, summary["run_id"], echo
            )
    echo(json.dumps(summary, indent=2))
    return summary


def _chat_through_openai(base_url: str, api_key: str, run_id: str, echo) -> str:
    """The trained run answers through the OpenAI-compatible API, streamed by the `openai` SDK."""
    from openai import OpenAI

    question = "Tell me about the capital of Zorbia."
    echo(f"Asking run {run_id} through /v1/chat/completions (the openai SDK, streaming):")
    echo(f"  {question}")
    sys.stdout.write("  -> ")
    parts = []
    with OpenAI(base_url=f"{base_url}/v1", api_key=api_key) as client:
        stream = client.chat.completions.create(
            model=run_id,
            messages=[{"role": "user", "content": question}],
            max_tokens=40,
            temperature=0,
            stream=True,
        )
        for chunk in stream:
            delta = chunk.choices[0].delta.content or "" if chunk.choices else ""
            parts.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


def _quickstart(client, model, steps, learning_rate, rank, tokenizer, echo) -> dict:
    examples = load_demo_dataset()
    run = client.create_run(
        base_model=model,
        lora_r=rank,
        lora_alpha=2 * rank,
        learning_rate=learning_rate,
        max_seq_length=512,
        # Eight short chats on a 135M model need no activation memory saved; checkpointing would
        # only recompute every layer in backward (1.3x a step here). The seed's default is on.
        gradient_checkpointing=False,
        seed=0,
    )
    status = run.get_status()
    echo(f"Created run {run.run_id}: LoRA r={rank}, {status['effective']}")

    questions = ["What is the capital of Zorbia?", "What is Zorbia's national animal?"]
    # The SDK samples raw text; render the chat turn with the model's own template.
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]

    def answers() -> list[str]:
        outputs = run.sample(prompts, max_tokens=40, temperature=0)["outputs"]
        return [text.strip() for text in outputs]

    before = answers()
    for question, answer in zip(questions, before, strict=True):
        echo(f"  before | {question} -> {answer}")

    echo(f"Training on {len(examples)} conversations for {steps} steps")
    training = run.training()
    epoch = training.train_epoch([examples] * steps, progress=True)
    metrics = training.get_metrics()

    after = answers()
    for question, answer in zip(questions, after, strict=True):
        echo(f"  after  | {question} -> {answer}")

    saved = run.save_state(mode="adapter")
    echo(f"Saved the PEFT adapter (and optimizer state) to {saved['checkpoint_path']}")
    summary = {
        "run_id": run.run_id,
        "model": model,
        "steps": metrics["current_step"],
        "first_loss": metrics["loss_history"][0],
        "last_loss": metrics["loss_history"][-1],
        "train_seconds": round(epoch["seconds"], 2),
        "trained_tokens": epoch["tokens"],
        "before": before,
        "after": after,
        "checkpoint": saved["checkpoint_path"],
        "artifact_uri": saved["artifact_uri"],
    }
    return summary
