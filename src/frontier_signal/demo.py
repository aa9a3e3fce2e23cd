"""`frontier-signal demo`: fine-tune SmolLM2 on a small bundled dataset, in-process.

Loads the base model (converting the bundled GGUF once), samples before training, trains one
LoRA run for a few steps, samples again, saves a PEFT adapter and a training checkpoint, and
prints what it did and where. Torch is imported here, not by the CLI module.
"""

from __future__ import annotations

import json
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

    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.rendering import render_chat_prompt
    from frontier_signal.engine.types import (
        LoraSpec,
        OptimizerSpec,
        RunConfig,
        SampleRequest,
        SamplingParams,
    )
    from frontier_signal.paths import data_home

    transformers_logging.disable_progress_bar()
    examples = load_demo_dataset()
    started = time.perf_counter()
    engine = Engine()
    echo(f"Loading {model} ...")
    tokenizer = engine.tokenizer(model)
    echo(
        f"  loaded in {time.perf_counter() - started:.1f}s on {engine.device} "
        f"({str(engine.dtype).removeprefix('torch.')} compute, fp32 LoRA weights)"
    )
    config = RunConfig(
        model,
        LoraSpec(rank=rank, alpha=2 * rank),
        OptimizerSpec(learning_rate=learning_rate, beta2=0.999, eps=1e-8),
        512,
    )
    run = engine.create_run(config)
    echo(
        f"Created run {run.run_id}: LoRA r={rank} on {', '.join(config.lora.target_modules)} "
        f"({run.num_params / 1e6:.1f}M trainable parameters)"
    )

    questions = ["What is the capital of Zorbia?", "What is Zorbia's national animal?"]
    greedy = SamplingParams(max_tokens=40, temperature=0, stop_token_ids=(tokenizer.eos_token_id,))
    prompts = [render_chat_prompt(tokenizer, [{"role": "user", "content": q}]) for q in questions]

    def answers() -> list[str]:
        results = engine.sample_batch([SampleRequest(run.run_id, p, greedy) for p in prompts])
        return [r.sequences[0].text.strip() for r in results]

    before = answers()
    for question, answer in zip(questions, before, strict=True):
        echo(f"  before | {question} -> {answer}")

    datums = [r.datum for r in engine.render(model, examples, config.max_seq_length)]
    tokens = sum(int(sum(d.weights)) for d in datums)
    echo(f"Training on {len(datums)} conversations ({tokens} assistant tokens) for {steps} steps")
    losses = []
    train_started = time.perf_counter()
    for step in range(1, steps + 1):
        result = engine.forward_backward(run.run_id, datums, reduction="mean")
        engine.optim_step(run.run_id)
        losses.append(result.loss)
        echo(f"  step {step:3d}  loss {result.loss:.4f}  grad_norm {result.grad_norm:.3f}")
    train_seconds = time.perf_counter() - train_started

    after = answers()
    for question, answer in zip(questions, after, strict=True):
        echo(f"  after  | {question} -> {answer}")

    output = output or data_home() / "demo" / run.run_id
    adapter = engine.save_checkpoint(run.run_id, output / "adapter", kind="sampler")
    training = engine.save_checkpoint(run.run_id, output / "training", kind="training")
    echo(f"Saved the PEFT adapter to {adapter.path} ({adapter.size_bytes / 2**20:.1f} MiB)")
    echo(f"Saved a resumable training checkpoint to {training.path}")
    summary = {
        "run_id": run.run_id,
        "model": model,
        "steps": steps,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "train_seconds": round(train_seconds, 2),
        "train_tokens_per_second": round(
            steps * sum(len(d.input_tokens) for d in datums) / train_seconds, 1
        ),
        "before": before,
        "after": after,
        "adapter": adapter.path,
        "checkpoint": training.path,
    }
    echo(json.dumps(summary, indent=2))
    return summary
