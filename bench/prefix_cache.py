"""The prefix cache through the OpenAI face: TTFT of a long shared prefix cold vs warm, and
tokens/s of n samples of one prompt with the cache on vs off, ratios in the same run.

Two real `frontier-signal serve` processes in turn (SmolLM2-135M-Instruct, defaults), one with
the prefix cache (`FRONTIER_SIGNAL_PREFIX_CACHE_MIB=256`, the default) and one without (`0`:
no prompt reuse at all, as before the cache), driven by the official `openai` SDK:

- shared prefix: a system prompt of about `--prefix-tokens` tokens (different for every trial,
  so the first request on it is cold) and a short user question; the first request on it is
  cold, a second with another question is warm (it shares every whole 16-token block of the
  system part). TTFT is request sent → first streamed token (streaming helper of
  bench/serving.py), best of `--repeats` trials;
- n samples: one completion request with `n=--n` samples (temperature 1) of a fresh prompt of
  about `--prefix-tokens` tokens, `--tokens` tokens each; tokens/s = n x tokens / wall time,
  best of `--repeats`. With the cache the prompt is prefilled once for all n rows.

Prints one JSON object.

    .venv/bin/python bench/prefix_cache.py [--prefix-tokens 1000] [--n 8] [--tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serving import MODEL, start_server, stream_once  # noqa: E402

SENTENCE = "The harbour master of town {t} keeps a ledger of ships, tides and cargo for the year. "


def long_text(trial: int, tokens: int) -> str:
    """About `tokens` tokens of text, distinct per `trial` from its first token on."""
    return f"Trial {trial}. " + "".join(SENTENCE.format(t=trial) for _ in range(tokens // 18))


async def shared_prefix(client, trial: int, tokens: int) -> dict:
    system = long_text(trial, tokens)

    async def ask(question: str) -> float:
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=4,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        return first - start

    cold = await ask("Which ship came in first?")
    warm = await ask("What was the cargo of the last ship?")
    return {"cold_ttft_s": cold, "warm_ttft_s": warm}


async def n_samples(client, trial: int, tokens: int, n: int, new_tokens: int) -> float:
    start = time.perf_counter()
    answer = await client.completions.create(
        model=MODEL,
        prompt=long_text(1000 + trial, tokens),
        n=n,
        max_tokens=new_tokens,
        temperature=1.0,
        seed=trial,
        extra_body={"ignore_eos": True},
    )
    wall = time.perf_counter() - start
    assert answer.usage.completion_tokens == n * new_tokens, answer.usage
    return n * new_tokens / wall


async def figures(url: str, args) -> dict:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(
        base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600
    ) as client:
        await stream_once(client, MODEL, "Hello", 4)  # warm-up
        trials = [await shared_prefix(client, t, args.prefix_tokens) for t in range(args.repeats)]
        rates = [
            await n_samples(client, t, args.prefix_tokens, args.n, args.tokens)
            for t in range(args.repeats)
        ]
        prompt = long_text(0, args.prefix_tokens)
        counted = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    return {
        "prefix_prompt_tokens": counted.usage.prompt_tokens,
        "cold_ttft_s": min(t["cold_ttft_s"] for t in trials),
        "warm_ttft_s": min(t["warm_ttft_s"] for t in trials),
        "n_samples_tokens_per_second": max(rates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--n", type=int, default=8, help="samples of one prompt")
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per sample")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many trials")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]
    report: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, mib in (("cache_on", "256"), ("cache_off", "0")):
            env = {"FRONTIER_SIGNAL_PREFIX_CACHE_MIB": mib}
            process, url = start_server(Path(folder) / name, extra_env=env)
            try:
                report[name] = asyncio.run(figures(url, args))
            finally:
                process.terminate()
                process.wait(timeout=120)
    on, off = report["cache_on"], report["cache_off"]
    report["ratios"] = {
        "warm_vs_cold_ttft_speedup": on["cold_ttft_s"] / on["warm_ttft_s"],
        "warm_vs_cache_off_ttft_speedup": off["warm_ttft_s"] / on["warm_ttft_s"],
        "n_samples_tokens_per_second_vs_cache_off": (
            on["n_samples_tokens_per_second"] / off["n_samples_tokens_per_second"]
        ),
    }
    report |= {
        "model": MODEL,
        "n": args.n,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg()[0],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
