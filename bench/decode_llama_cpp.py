"""Batch-1 decode: llama.cpp (llama-cpp-python) vs our engine, on the same GGUF, alternating.

Both decode SmolLM2-135M-Instruct from the bundled GGUF file (Q4_1) with the same number of
threads, greedy, the same chat prompts and token counts, in one process and in alternating
rounds, so the ratio is honest on a shared machine. Then the same with one r=32 LoRA run
(attention + MLP, moved off its zero init by a training step): our engine decodes the run;
llama.cpp decodes the same adapter written as a llama.cpp LoRA GGUF by our exporter
(`Engine.export_gguf`) on top of the same base file.

Decode tok/s is (N - 1) / (time from the first generated token to the N-th), each side timed
by its own token callback / iterator, best over prompts and `--repeats` per round (a difference
of two timings, as bench/decode.py takes, can blow up on a loaded machine).
llama-cpp-python is built by scripts/setup with GGML_NATIVE=OFF (this VM reports AMX but kills
it with SIGILL), so its kernels are the portable build's: say so when quoting the figure.

Our decode layers run in C++ (`backend/native.py`, built before timing) unless `--python-step`.

`--long-prompt N` adds a long-context figure, bare model: the time to the first token (the
prompt pass) and the decode rate after an N-token prompt, ours vs llama.cpp, alternating (our
prefix cache off, so each pass computes the whole prompt).

`--compete` adds the contention figure: exact-bf16 decode (no 4-bit codes) quiet, then with one
CPU-bound process (a Python busy loop) beside it, alternating, with the decode thread governor
(backend/decode_threads.py) on and, for reference, off.

    .venv/bin/python bench/decode_llama_cpp.py [--tokens 64] [--rounds 3] [--threads 2]
        [--long-prompt 1500] [--compete] [--no-llama-cpp] [--python-step]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from decode import (  # noqa: E402
    MODEL,
    QUESTIONS,
    _load_average,
    _trained_run,
    models_prompt,
)


def _llama_stamps(llama):
    def run(prompt: list[int], n: int) -> list[float]:
        llama.reset()
        stamps: list[float] = []
        for _ in llama.generate(prompt, temp=0.0, top_k=1, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) >= n:
                break
        return stamps

    return run


def _engine_stamps(engine, model: str):
    from frontier_signal.engine.types import SampleRequest, SamplingParams

    def run(prompt: list[int], n: int) -> list[float]:
        stamps: list[float] = []
        params = SamplingParams(max_tokens=n, temperature=0)
        engine.sample_batch(
            [SampleRequest(model, prompt, params)],
            on_token=lambda *_: stamps.append(time.perf_counter()),
        )
        return stamps

    return run


def _decode_rate(run, prompts: list[list[int]], tokens: int, repeats: int) -> float:
    """Best decode tok/s over prompts and repeats: (N - 1) / (last stamp - first stamp)."""
    run(prompts[0], 4)  # warm-up: allocators, kernels, LoRA plans
    best = 0.0
    for prompt in prompts:
        for _ in range(repeats):
            stamps = run(prompt, tokens)
            if len(stamps) == tokens:
                best = max(best, (tokens - 1) / (stamps[-1] - stamps[0]))
    return best


def _side_by_side(args, engine, gguf, run, prompts) -> dict:
    from llama_cpp import Llama

    folder = Path(tempfile.mkdtemp(prefix="fs-bench-gguf-"))
    files = engine.export_gguf(run, folder, "f16")
    adapter_file = folder / next(name for name in files if name.startswith("adapter"))
    common = {"n_ctx": 1024, "n_threads": args.threads, "n_batch": 512, "verbose": False}
    llama_bare = Llama(model_path=str(gguf), **common)
    llama_lora = Llama(model_path=str(gguf), lora_path=str(adapter_file), **common)
    pairs = {
        "bare": (_engine_stamps(engine, MODEL), _llama_stamps(llama_bare)),
        "lora_r32": (_engine_stamps(engine, run), _llama_stamps(llama_lora)),
    }
    rounds: dict[str, dict[str, list[float]]] = {
        name: {"ours": [], "llama_cpp": []} for name in pairs
    }
    for _ in range(args.rounds):
        for name, (ours, theirs) in pairs.items():
            for side, runner in (("ours", ours), ("llama_cpp", theirs)):
                rate = _decode_rate(runner, prompts, args.tokens, args.repeats)
                rounds[name][side].append(rate)
    report = {}
    for name, sides in rounds.items():
        ours, theirs = max(sides["ours"]), max(sides["llama_cpp"])
        report[name] = {
            "ours_decode_tokens_per_second": ours,
            "llama_cpp_decode_tokens_per_second": theirs,
            "ratio_ours_vs_llama_cpp": ours / theirs,
            "rounds": sides,
        }
    return report


def _long_prompt(args, engine, gguf) -> dict:
    """Time to the first token and decode tok/s after one `--long-prompt`-token prompt (random
    tokens), bare model, ours vs llama.cpp in alternating rounds; best of the rounds."""
    from llama_cpp import Llama

    rng = random.Random(0)
    prompt = [rng.randrange(1000, 40000) for _ in range(args.long_prompt)]
    llama = Llama(
        model_path=str(gguf),
        n_ctx=args.long_prompt + args.tokens + 16,
        n_threads=args.threads,
        n_batch=512,
        verbose=False,
    )
    sides = {"ours": _engine_stamps(engine, MODEL), "llama_cpp": _llama_stamps(llama)}
    rounds: dict[str, dict[str, list[float]]] = {
        side: {"first_token_s": [], "decode_tokens_per_second": []} for side in sides
    }
    cache = engine.prefix_cache(MODEL)
    budget = cache.max_bytes
    cache.configure(0)
    try:
        for _ in range(args.rounds):
            for side, run in sides.items():
                start = time.perf_counter()
                stamps = run(prompt, args.tokens)
                rounds[side]["first_token_s"].append(stamps[0] - start)
                rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
                rounds[side]["decode_tokens_per_second"].append(rate)
    finally:
        cache.configure(budget)
    ours, theirs = rounds["ours"], rounds["llama_cpp"]
    return {
        "prompt_tokens": args.long_prompt,
        "first_token_s": {
            "ours": min(ours["first_token_s"]),
            "llama_cpp": min(theirs["first_token_s"]),
        },
        "ratio_first_token_llama_cpp_vs_ours": min(theirs["first_token_s"])
        / min(ours["first_token_s"]),
        "decode_tokens_per_second": {
            "ours": max(ours["decode_tokens_per_second"]),
            "llama_cpp": max(theirs["decode_tokens_per_second"]),
        },
        "ratio_decode_ours_vs_llama_cpp": max(ours["decode_tokens_per_second"])
        / max(theirs["decode_tokens_per_second"]),
        "rounds": rounds,
    }


def _busy_process() -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let it reach the CPU
    return process


def _contention(args, engine, prompts) -> dict:
    """Exact-bf16 decode quiet vs beside one CPU-bound process, governor on and off."""
    base = engine.load_model(MODEL)
    governor = base.decode_weights().threads
    base.decode_4bit = False  # exact weights: oneDNN's bf16 kernels
    run = _engine_stamps(engine, MODEL)
    rates: dict[str, list[float]] = {}
    try:
        for _ in range(args.rounds):
            for governed in (True, False):
                governor.enabled = governed
                label = "governor_on" if governed else "governor_off"
                rate = _decode_rate(run, prompts, args.tokens, args.repeats)
                rates.setdefault(f"quiet_{label}", []).append(rate)
                busy = _busy_process()
                try:
                    rate = _decode_rate(run, prompts, args.tokens, args.repeats)
                finally:
                    busy.kill()
                    busy.wait()
                rates.setdefault(f"compete_{label}", []).append(rate)
    finally:
        base.decode_4bit, governor.enabled = True, True
    best = {name: max(values) for name, values in rates.items()}
    return {
        "exact_bf16_decode_tokens_per_second": best,
        "ratio_compete_vs_quiet_governor_on": best["compete_governor_on"]
        / best["quiet_governor_on"],
        "ratio_compete_vs_quiet_governor_off": best["compete_governor_off"]
        / best["quiet_governor_off"],
        "governor_ms_per_step": governor.describe(),
        "rounds": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many per prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="questions used")
    parser.add_argument(
        "--long-prompt", type=int, default=0, help="add the long-context figure at this length"
    )
    parser.add_argument("--compete", action="store_true", help="add the contention figure")
    parser.add_argument("--no-llama-cpp", action="store_true", help="only the contention figure")
    parser.add_argument(
        "--python-step", action="store_true", help="decode with the Python step, not the C++ one"
    )
    args = parser.parse_args()

    import torch

    from frontier_signal.backend import models, native
    from frontier_signal.engine.engine import Engine

    torch.set_num_threads(args.threads)
    if args.python_step:
        os.environ["FRONTIER_SIGNAL_NATIVE"] = "0"  # native.enabled() reads it at each call
    native_ready = native.ops() is not None  # built or loaded before timing
    gguf = models.source_gguf(MODEL)
    engine = Engine(dtype="bfloat16")
    base = engine.load_model(MODEL)
    base.decode_weights()  # pack the 4-bit codes (and the 8-bit lm_head) outside timing
    prompts = [models_prompt(engine.tokenizer(MODEL), q) for q in QUESTIONS[: args.prompts]]
    report: dict = {
        "model": MODEL,
        "gguf": gguf.name if gguf else None,
        "threads": args.threads,
        "tokens": args.tokens,
        "load_average_at_start": _load_average(),
        "llama_cpp_build": "llama-cpp-python 0.3.36, GGML_NATIVE=OFF",
        "our_decode_layers": "C++ (backend/native.py)" if native_ready else "Python step",
    }
    if not args.no_llama_cpp:
        run = _trained_run(engine, seed=1)
        report.update(_side_by_side(args, engine, gguf, run, prompts))
    if args.long_prompt and not args.no_llama_cpp:
        report["long_prompt"] = _long_prompt(args, engine, gguf)
    if args.compete:
        report["contention"] = _contention(args, engine, prompts)
    report["load_average_at_end"] = _load_average()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
