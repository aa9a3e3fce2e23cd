"""Many adapters through the OpenAI face: throughput and TTFT as the number of distinct adapters
grows (the S-LoRA measurement), ratios against one adapter in the same run.

A real `frontier-signal serve` (SmolLM2-135M-Instruct, defaults: bf16 where the CPU has it, the
adapter LRU at 1024 MiB / 64 adapters unless `--cache-count` / `--cache-mib` say otherwise) gets
`--adapters` r=8 PEFT LoRA folders (q, k, v, o projections, random A and B, fp16 files) written
into a temporary folder at bench time and registered with `--adapter NAME=PATH`; nothing is
loaded before the first request names it. For each count N (1, 10, 100, 1000 by default)
`--clients` concurrent streaming clients (official `openai` SDK, the streaming helper of
bench/serving.py) send `--requests` chat requests naming the adapters round-robin (request i →
adapter i mod N, i counting on across levels), each generating exactly `--tokens` tokens
(greedy, `ignore_eos`). Reported per N: generated tokens/s over the wall time, p50/p99 time to
first token, and both as ratios to N = 1. Round-robin over more adapters than the LRU holds is
its worst case: every request then reads its adapter from disk (N = 100 and 1000 with the
default 64). Prints one JSON object.

    .venv/bin/python bench/adapters.py [--counts 1 10 100 1000] [--requests 64] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serving import MODEL, QUESTIONS, start_server, stream_once  # noqa: E402

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_adapters(folder: Path, count: int, rank: int = 8) -> list[Path]:
    """`count` distinct PEFT LoRA folders for MODEL (one random set, scaled per adapter)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    from frontier_signal.backend import models
    from frontier_signal.backend.checkpoints import peft_config
    from frontier_signal.engine.types import LoraSpec

    config = AutoConfig.from_pretrained(models.model_folder(models.resolve_model(MODEL)))
    hidden, head_dim = config.hidden_size, config.hidden_size // config.num_attention_heads
    outs = {"q_proj": hidden, "k_proj": config.num_key_value_heads * head_dim}
    outs |= {"v_proj": outs["k_proj"], "o_proj": hidden}
    generator = torch.Generator().manual_seed(0)
    base = {}
    for layer in range(config.num_hidden_layers):
        for name in TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            A = torch.randn(rank, hidden, generator=generator) * 0.04
            B = torch.randn(outs[name], rank, generator=generator) * 0.02
            base[f"{prefix}.lora_A.weight"], base[f"{prefix}.lora_B.weight"] = A, B
    spec = LoraSpec(rank=rank, alpha=2.0 * rank, target_modules=TARGETS)
    adapter_config = json.dumps(peft_config(spec, MODEL))
    folders = []
    for index in range(count):
        target = folder / f"lora-{index:04d}"
        target.mkdir(parents=True)
        scale = 1.0 + index / count
        tensors = {k: (v * scale if "lora_B" in k else v).half() for k, v in base.items()}
        save_file(tensors, str(target / "adapter_model.safetensors"))
        (target / "adapter_config.json").write_text(adapter_config)
        folders.append(target)
    return folders


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def sweep_level(
    client, count: int, first: int, requests: int, clients: int, tokens: int
) -> dict:
    """`requests` round-robin over `count` adapters from `clients` concurrent streams; the
    round-robin goes on from request number `first` (the requests of the levels before), so a
    level never starts on the adapters the previous one left in memory."""
    queue = list(range(first, first + requests))
    ttfts: list[float] = []

    async def worker() -> None:
        while queue:
            index = queue.pop(0)
            model = f"lora-{index % count:04d}"
            result = await stream_once(client, model, QUESTIONS[index % len(QUESTIONS)], tokens)
            ttfts.append(result["time_to_first_token_s"])

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {
        "adapters": count,
        "requests": requests,
        "tokens_per_second": requests * tokens / wall,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p99_s": _percentile(ttfts, 0.99),
        "wall_s": wall,
    }


async def sweep(url: str, counts: list[int], requests: int, clients: int, tokens: int) -> list:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(
        base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600
    ) as client:
        await stream_once(client, "lora-0000", QUESTIONS[0], 4)  # warm-up (load, compile)
        return [
            await sweep_level(client, n, level * requests, requests, clients, tokens)
            for level, n in enumerate(counts)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--requests", type=int, default=64, help="requests per adapter count")
    parser.add_argument("--clients", type=int, default=8, help="concurrent streaming clients")
    parser.add_argument("--tokens", type=int, default=16, help="generated tokens per request")
    parser.add_argument("--cache-count", type=int, default=0, help="LRU count (0: default)")
    parser.add_argument("--cache-mib", type=float, default=0, help="LRU MiB (0: default)")
    args = parser.parse_args()

    env = {}
    if args.cache_count:
        env["FRONTIER_SIGNAL_ADAPTER_CACHE_COUNT"] = str(args.cache_count)
    if args.cache_mib:
        env["FRONTIER_SIGNAL_ADAPTER_CACHE_MIB"] = str(args.cache_mib)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        adapters = write_adapters(Path(folder) / "adapters", max(args.counts))
        written_s = time.perf_counter() - started
        options = [f"--adapter={path.name}={path}" for path in adapters]
        process, url = start_server(Path(folder) / "data", extra_args=options, extra_env=env)
        try:
            levels = asyncio.run(sweep(url, args.counts, args.requests, args.clients, args.tokens))
            with httpx.Client(base_url=url, timeout=60) as http:
                listed = len(http.get("/v1/models").json()["data"])
        finally:
            process.terminate()
            process.wait(timeout=120)
    one = levels[0]
    for level in levels:
        level["throughput_vs_1"] = level["tokens_per_second"] / one["tokens_per_second"]
        level["ttft_p50_vs_1"] = level["ttft_p50_s"] / one["ttft_p50_s"]
        level["ttft_p99_vs_1"] = level["ttft_p99_s"] / one["ttft_p99_s"]
    report = {
        "model": MODEL,
        "adapter": {"rank": 8, "targets": list(TARGETS), "file_dtype": "float16"},
        "adapters_written_s": written_s,
        "models_listed": listed,
        "clients": args.clients,
        "tokens": args.tokens,
        "cache": {"count": args.cache_count or 64, "mib": args.cache_mib or 1024},
        "cpu_count": os.cpu_count(),
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg()[0],
        "levels": levels,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
