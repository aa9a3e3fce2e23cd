"""Serving speed through the OpenAI-compatible API vs HF `generate`, in the same run.

A real `frontier-signal serve` process (SmolLM2-135M-Instruct, the default dtype: bf16 where the
CPU has it, and the default decode weights: the GGUF's own 4-bit codes there; `--exact` serves
the exact bf16 weights instead) is driven by the official `openai` SDK over HTTP on 127.0.0.1,
streaming:

- batch 1: time to first token (request sent → first content chunk, so HTTP, chat rendering
  and prefill included) and decode tok/s ((N - 1) tokens / time from the first to the last
  chunk) of a trained LoRA run and of the bare base model, vs `model.generate` on the same
  prompt tokens in this process (bf16, greedy, batch 1; with the same adapter through PEFT);
- 8 concurrent streaming requests on 8 different runs vs the same 8 one after another.

Everyone generates exactly `--tokens` tokens (`ignore_eos`, greedy). Best of `--repeats` per
prompt, since the machine may be shared. Prints one JSON object.

    .venv/bin/python bench/serving.py [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "List three uses of baking soda.",
    "What is the capital of France, and why?",
    "Describe a rainy day in a city.",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
    "Tell me a fun fact about octopuses.",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    data_dir: Path,
    exact: bool = False,
    extra_args: list[str] | tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str]:
    """`frontier-signal serve` in its own process; its log goes to a file in `data_dir` (a
    pipe nobody reads would block the server once full). bench/adapters.py and
    bench/prefix_cache.py start theirs here too, with their options and settings."""
    port = _free_port()
    command = [
        sys.executable, "-m", "frontier_signal.cli", "serve", "--no-auth", "--port", str(port),
        "--models", MODEL, "--data-dir", str(data_dir), *extra_args,
    ]  # fmt: skip
    env = os.environ | {"FRONTIER_SIGNAL_LOG_LEVEL": "warning"} | (extra_env or {})
    if exact:
        env["FRONTIER_SIGNAL_DECODE_4BIT"] = "false"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):  # bounded: 10 minutes (a cold start converts the GGUF)
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise TimeoutError("the server did not become ready")


def trained_run(http: httpx.Client, seed: int) -> str:
    """A LoRA run moved off its zero init by one step, so its adapter changes outputs."""
    run = http.post("/v1/runs", json={"base_model": MODEL, "lora_r": 32, "seed": seed})
    run.raise_for_status()
    run_id = run.json()["run_id"]
    batch = [{"text": f"Run {seed} says hello to everyone it meets."}]
    http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": batch}).raise_for_status()
    http.post(f"/v1/runs/{run_id}/optim_step", json={"learning_rate": 1e-3}).raise_for_status()
    return run_id


async def stream_once(client, model: str, question: str, tokens: int) -> dict:
    """One streaming chat completion: TTFT, decode tok/s and the text."""
    start = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    first = last = None
    usage = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    assert usage is not None and usage.completion_tokens == tokens, usage
    return {
        "time_to_first_token_s": first - start,
        "decode_tokens_per_second": (tokens - 1) / (last - first),
        "total_s": end - start,
    }


def _best_mean(samples: list[list[dict]]) -> dict:
    """Per prompt the best of the repeats, then the mean over prompts."""
    best = [
        {
            "time_to_first_token_s": min(r["time_to_first_token_s"] for r in runs),
            "decode_tokens_per_second": max(r["decode_tokens_per_second"] for r in runs),
        }
        for runs in samples
    ]
    return {key: sum(b[key] for b in best) / len(best) for key in best[0]}


async def serving_figures(url: str, runs: list[str], tokens: int, repeats: int) -> dict:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0) as client:
        await stream_once(client, runs[0], QUESTIONS[0], 4)  # warm-up
        await stream_once(client, MODEL, QUESTIONS[0], 4)
        report = {}
        for name, model in (("run_lora", runs[0]), ("base_model", MODEL)):
            samples = [
                [await stream_once(client, model, q, tokens) for _ in range(repeats)]
                for q in QUESTIONS[:3]
            ]
            report[name] = _best_mean(samples)

        async def eight_concurrent() -> float:
            start = time.perf_counter()
            await asyncio.gather(
                *(stream_once(client, r, q, tokens) for r, q in zip(runs, QUESTIONS, strict=True))
            )
            return time.perf_counter() - start

        async def eight_sequential() -> float:
            start = time.perf_counter()
            for run, question in zip(runs, QUESTIONS, strict=True):
                await stream_once(client, run, question, tokens)
            return time.perf_counter() - start

        concurrent = min([await eight_concurrent() for _ in range(repeats)])
        sequential = min([await eight_sequential() for _ in range(repeats)])
        total = tokens * len(runs)
        report["eight_runs"] = {
            "concurrent_tokens_per_second": total / concurrent,
            "sequential_tokens_per_second": total / sequential,
            "speedup": sequential / concurrent,
        }
        return report


def hf_figures(prompts: list[list[int]], tokens: int, repeats: int, adapter: Path | None) -> dict:
    """HF `generate` (bf16, greedy, batch 1) on the same prompt tokens, timed like the server:
    decode tok/s = (N - 1) / (time for N tokens - time for 1 token)."""
    import torch

    from frontier_signal.backend import models

    model = models.load_hf_model(MODEL, dtype=torch.bfloat16)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).eval()

    def generate(prompt: list[int], n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=2,
            )
        return time.perf_counter() - start

    generate(prompts[0], 4)  # warm-up
    first = [min(generate(p, 1) for _ in range(repeats)) for p in prompts]
    full = [min(generate(p, tokens) for _ in range(repeats)) for p in prompts]
    return {
        "time_to_first_token_s": sum(first) / len(first),
        "decode_tokens_per_second": sum(
            (tokens - 1) / (f - t) for f, t in zip(full, first, strict=True)
        )
        / len(prompts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--exact", action="store_true", help="serve exact bf16 decode weights")
    args = parser.parse_args()

    from frontier_signal.backend import models
    from frontier_signal.engine.rendering import render_chat_prompt
    from frontier_signal.service import files

    models.model_folder(models.resolve_model(MODEL))  # convert the GGUF once, outside timing
    tokenizer = models.load_tokenizer(MODEL)
    prompts = [
        render_chat_prompt(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS[:3]
    ]
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder) / "data", args.exact)
        try:
            with httpx.Client(base_url=url, timeout=600) as http:
                runs = [trained_run(http, seed) for seed in range(8)]
                saved = http.post(f"/v1/runs/{runs[0]}/save_state", json={}).json()
            serving = asyncio.run(serving_figures(url, runs, args.tokens, args.repeats))
        finally:
            process.terminate()
            process.wait(timeout=120)
        # The saved adapter's folder in the server's data folder.
        adapter = files.checkpoint_folder(Path(folder) / "data", runs[0], saved["checkpoint_id"])
        hf_base = hf_figures(prompts, args.tokens, args.repeats, None)
        hf_lora = hf_figures(prompts, args.tokens, args.repeats, adapter)

    for name, baseline in (("base_model", hf_base), ("run_lora", hf_lora)):
        serving[name]["decode_speedup_vs_hf_generate"] = (
            serving[name]["decode_tokens_per_second"] / baseline["decode_tokens_per_second"]
        )
    report = {
        "model": MODEL,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "decode_weights": "exact bf16" if args.exact else "default (GGUF 4-bit codes on CPU bf16)",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "server": serving,
        "hf_generate_bf16": hf_base,
        "hf_generate_bf16_peft_lora": hf_lora,
        "targets": {  # the 8-stream figure: issue 16 asks for 4x (an earlier issue for 3x)
            "decode_vs_hf_generate_batch_1": {
                "target": 1.5,
                "measured": serving["run_lora"]["decode_speedup_vs_hf_generate"],
            },
            "eight_runs_concurrent_vs_sequential": {
                "target": 4.0,
                "measured": serving["eight_runs"]["speedup"],
            },
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
