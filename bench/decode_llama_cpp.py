"""Batch-1 decode: llama.cpp (llama-cpp-python) vs our engine, on the same GGUF, alternating.

Both decode SmolLM2-135M-Instruct from the bundled GGUF file (Q4_1) with the same number of
threads, greedy, the same chat prompts and token counts, in one process and in alternating
rounds, so the ratio is honest on a shared machine. Then the same with one r=32 LoRA run
(attention + MLP, moved off its zero init by a training step): our engine decodes the run;
llama.cpp decodes the same adapter written as a llama.cpp LoRA GGUF by our exporter
(`Engine.export_gguf`) on top of the same base file.

Decode tok/s is (N - 1) / (time for N tokens - time for 1 token), best of `--repeats` per round.
llama-cpp-python is built by scripts/setup with GGML_NATIVE=OFF (this VM reports AMX but kills
it with SIGILL), so its kernels are the portable build's: say so when quoting the figure.

    .venv/bin/python bench/decode_llama_cpp.py [--tokens 64] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from decode import (  # noqa: E402
    MODEL,
    QUESTIONS,
    _engine_runner,
    _figures,
    _load_average,
    _trained_run,
    models_prompt,
)


def _llama_runner(llama):
    def run(prompt: list[int], n: int) -> list[int]:
        llama.reset()
        out = []
        for token in llama.generate(prompt, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) >= n:
                break
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="questions used")
    args = parser.parse_args()

    import torch
    from llama_cpp import Llama

    from frontier_signal.backend import models
    from frontier_signal.engine.engine import Engine

    torch.set_num_threads(args.threads)
    gguf = models.source_gguf(MODEL)
    engine = Engine(dtype="bfloat16")
    base = engine.load_model(MODEL)
    base.decode_weights()  # pack the 4-bit codes outside timing
    prompts = [models_prompt(engine.tokenizer(MODEL), q) for q in QUESTIONS[: args.prompts]]
    run = _trained_run(engine, seed=1)
    folder = Path(tempfile.mkdtemp(prefix="fs-bench-gguf-"))
    files = engine.export_gguf(run, folder, "f16")
    adapter_file = folder / next(name for name in files if name.startswith("adapter"))

    common = {"n_ctx": 1024, "n_threads": args.threads, "n_batch": 512, "verbose": False}
    llama_bare = Llama(model_path=str(gguf), **common)
    llama_lora = Llama(model_path=str(gguf), lora_path=str(adapter_file), **common)
    pairs = {
        "bare": (_engine_runner(engine, MODEL), _llama_runner(llama_bare)),
        "lora_r32": (_engine_runner(engine, run), _llama_runner(llama_lora)),
    }
    rounds: dict[str, dict[str, list[float]]] = {
        name: {"ours": [], "llama_cpp": []} for name in pairs
    }
    for _ in range(args.rounds):
        for name, (ours, theirs) in pairs.items():
            for side, runner in (("ours", ours), ("llama_cpp", theirs)):
                figures = _figures(runner, prompts, args.tokens, args.repeats)
                rounds[name][side].append(figures["decode_tokens_per_second"])
    report: dict = {
        "model": MODEL,
        "gguf": gguf.name if gguf else None,
        "threads": args.threads,
        "tokens": args.tokens,
        "load_average_at_start": _load_average(),
        "llama_cpp_build": "llama-cpp-python 0.3.36, GGML_NATIVE=OFF",
    }
    for name, sides in rounds.items():
        ours, theirs = max(sides["ours"]), max(sides["llama_cpp"])
        report[name] = {
            "ours_decode_tokens_per_second": ours,
            "llama_cpp_decode_tokens_per_second": theirs,
            "ratio_ours_vs_llama_cpp": ours / theirs,
            "rounds": sides,
        }
    report["load_average_at_end"] = _load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
