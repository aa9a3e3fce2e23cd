"""Sampling speed: the engine's decode vs HF `generate`, at batch 1 and for 8 runs at once.

On SmolLM2-135M-Instruct, greedy, the same chat prompts and token counts for everyone, all in
one process so the baselines share the machine's state with what they are compared to:

- batch 1: time to first token and decode tok/s of the engine (exact weights, the GGUF's own
  4-bit codes with the 8-bit lm_head -- the default in bf16 -- and the opt-in int8 decode
  weights) vs
  `model.generate` in bf16 and fp32, without an adapter and with one
  (a trained r=32 LoRA run; HF runs the same adapter through PEFT, unmerged);
- 8 requests on 8 different runs in one `sample_batch` vs the same 8 one after another;
- greedy agreement: the share of generated tokens equal to HF's in the same dtype.

Decode tok/s is (N - 1) / (time for N tokens - time for 1 token); best of `--repeats`, since
the machine is shared.

    .venv/bin/python bench/decode.py [--tokens 64] [--repeats 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

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


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _figures(run_tokens, prompts: list[list[int]], tokens: int, repeats: int) -> dict:
    """TTFT and decode tok/s of `run_tokens(prompt, n)`, averaged over prompts."""
    run_tokens(prompts[0], 2)  # warm-up: allocators, kernels, LoRA plans
    first = sum(_best(lambda p=p: run_tokens(p, 1), repeats) for p in prompts) / len(prompts)
    full = sum(_best(lambda p=p: run_tokens(p, tokens), repeats) for p in prompts) / len(prompts)
    return {
        "time_to_first_token_s": first,
        "decode_tokens_per_second": (tokens - 1) / (full - first),
        "end_to_end_tokens_per_second": tokens / full,
    }


def _hf_runner(model):
    import torch

    def run(prompt: list[int], n: int) -> list[int]:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=2,
            )
        return out[0, len(prompt) :].tolist()

    return run


def _engine_runner(engine, model: str):
    from frontier_signal.engine.types import SampleRequest, SamplingParams

    def run(prompt: list[int], n: int) -> list[int]:
        params = SamplingParams(max_tokens=n, temperature=0)
        return engine.sample(SampleRequest(model, prompt, params)).sequences[0].tokens

    return run


def _agreement(ours, theirs, prompts, tokens: int) -> dict:
    """Greedy agreement: the share of equal tokens, and the mean length of the common prefix
    (after a first difference the two continuations follow different texts)."""
    same = prefix = 0
    for prompt in prompts:
        a, b = ours(prompt, tokens), theirs(prompt, tokens)
        same += sum(x == y for x, y in zip(a, b, strict=True))
        prefix += next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), tokens)
    return {"equal_tokens": same / (tokens * len(prompts)), "common_prefix": prefix / len(prompts)}


def _trained_run(engine, seed: int) -> str:
    """A LoRA run moved off its zero init by one step, so the adapter changes outputs."""
    from frontier_signal.engine.types import Datum, LoraSpec, OptimizerSpec, RunConfig

    config = RunConfig(
        MODEL, LoraSpec(rank=32, alpha=64, seed=seed), OptimizerSpec(learning_rate=1e-3)
    )
    run = engine.create_run(config).run_id
    text = engine.tokenizer(MODEL)(f"Run {seed} says hello.")["input_ids"]
    engine.forward_backward(run, [Datum(text[:-1], text[1:])])
    engine.optim_step(run)
    return run


def _load_average() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def batch_one(tokens: int, repeats: int) -> dict:
    import torch
    from peft import PeftModel

    from frontier_signal.backend import models
    from frontier_signal.engine.engine import Engine

    report: dict = {}
    for dtype_name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        engine = Engine(dtype="bfloat16" if dtype_name == "bf16" else "float32")
        base = engine.load_model(MODEL)
        base.decode_weights()  # pack the 4-bit codes (bf16 on CPU) outside timing
        every = [models_prompt(engine.tokenizer(MODEL), question) for question in QUESTIONS]
        prompts = every[:3]  # timed; agreement is measured on all 8
        run = _trained_run(engine, seed=1)
        hf = models.load_hf_model(MODEL, dtype=dtype)
        figures = {"hf_generate": _figures(_hf_runner(hf), prompts, tokens, repeats)}
        agreement = {}
        if base.decode_mode == "4bit":  # bf16 on CPU: the default decode weights
            figures["engine_4bit"] = _figures(
                _engine_runner(engine, MODEL), prompts, tokens, repeats
            )
            agreement["engine_4bit"] = _agreement(
                _engine_runner(engine, MODEL), _hf_runner(hf), every, tokens
            )
            base.decode_weights().head_8bit = False  # the 8-bit lm_head's share of the gap
            agreement["engine_4bit_bf16_head"] = _agreement(
                _engine_runner(engine, MODEL), _hf_runner(hf), every, tokens
            )
            base.decode_weights().head_8bit = True
            figures["engine_4bit_lora"] = _figures(
                _engine_runner(engine, run), prompts, tokens, repeats
            )
        base.decode_4bit = False  # the rest: exact weights unless said otherwise
        figures["engine"] = _figures(_engine_runner(engine, MODEL), prompts, tokens, repeats)
        agreement["engine"] = _agreement(
            _engine_runner(engine, MODEL), _hf_runner(hf), every, tokens
        )
        if dtype_name == "bf16":
            base.decode_int8 = True
            figures["engine_int8"] = _figures(
                _engine_runner(engine, MODEL), prompts, tokens, repeats
            )
            agreement["engine_int8"] = _agreement(
                _engine_runner(engine, MODEL), _hf_runner(hf), every, tokens
            )
            base.decode_int8 = False
        base.fast_decode = False
        figures["engine_hf_forward"] = _figures(
            _engine_runner(engine, MODEL), prompts, tokens, repeats
        )
        # The same math through the HF forward: how much bf16 disagreement any re-batching gives.
        agreement["engine_hf_forward"] = _agreement(
            _engine_runner(engine, MODEL), _hf_runner(hf), every, tokens
        )
        base.fast_decode = True
        with tempfile.TemporaryDirectory() as folder:
            engine.save_checkpoint(run, folder, kind="sampler")
            peft_model = PeftModel.from_pretrained(hf, folder).eval()
            figures["hf_generate_peft_lora"] = _figures(
                _hf_runner(peft_model), every, tokens, repeats
            )
            figures["engine_lora"] = _figures(_engine_runner(engine, run), prompts, tokens, repeats)
            agreement["engine_lora_vs_peft"] = _agreement(
                _engine_runner(engine, run), _hf_runner(peft_model), every, tokens
            )
        for name in list(figures):
            if name.startswith("engine"):
                baseline = figures["hf_generate_peft_lora" if "lora" in name else "hf_generate"]
                figures[name]["decode_speedup_vs_hf"] = (
                    figures[name]["decode_tokens_per_second"] / baseline["decode_tokens_per_second"]
                )
        figures["greedy_agreement_with_hf"] = agreement
        report[dtype_name] = figures
        print(json.dumps({dtype_name: figures}), file=sys.stderr)
        del engine, hf, peft_model
    return report


def models_prompt(tokenizer, question: str) -> list[int]:
    from frontier_signal.engine.rendering import render_chat_prompt

    return render_chat_prompt(tokenizer, [{"role": "user", "content": question}])


def eight_runs(tokens: int, repeats: int, int8: bool) -> dict:
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import SampleRequest, SamplingParams

    engine = Engine(decode_int8=int8)
    runs = [_trained_run(engine, seed) for seed in range(8)]
    tokenizer = engine.tokenizer(MODEL)
    params = SamplingParams(max_tokens=tokens, temperature=0)
    requests = [
        SampleRequest(run, models_prompt(tokenizer, question), params)
        for run, question in zip(runs, QUESTIONS, strict=True)
    ]
    engine.sample_batch(requests)  # warm-up: LoRA plans, allocators
    first_token: dict[int, float] = {}

    def batched() -> None:
        start = time.perf_counter()
        engine.sample_batch(
            requests,
            on_token=lambda r, s, t, lp: first_token.setdefault(r, time.perf_counter() - start),
        )

    def sequential() -> None:
        start = time.perf_counter()
        for index, request in enumerate(requests):
            engine.sample_batch(
                [request],
                on_token=lambda r, s, t, lp, i=index: first_token.setdefault(
                    i, time.perf_counter() - start
                ),
            )

    first_token.clear()
    batched_s = _best(batched, repeats)
    batched_ttft = sum(first_token.values()) / len(first_token)
    first_token.clear()
    sequential_s = _best(sequential, repeats)
    sequential_ttft = sum(first_token.values()) / len(first_token)
    total = tokens * len(requests)
    return {
        "requests": len(requests),
        "tokens_each": tokens,
        "batched_tokens_per_second": total / batched_s,
        "sequential_tokens_per_second": total / sequential_s,
        "speedup": sequential_s / batched_s,
        "batched_mean_time_to_first_token_s": batched_ttft,
        "sequential_mean_time_to_first_token_s": sequential_ttft,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default, one a core)"
    )
    args = parser.parse_args()

    import torch

    if args.threads:
        # On a machine other jobs load, one thread avoids OpenMP barrier stalls (see engine.md).
        torch.set_num_threads(args.threads)

    from frontier_signal.backend import models, native

    models.model_folder(models.resolve_model(MODEL))  # convert the GGUF once, outside timing
    native_ready = native.ops() is not None  # the C++ decode layers, built before timing
    report: dict = {
        "model": MODEL,
        "our_decode_layers": "C++ (backend/native.py)" if native_ready else "Python step",
        "tokens": args.tokens,
        "threads": torch.get_num_threads(),
        "load_average_at_start": _load_average(),
        "batch_1": batch_one(args.tokens, args.repeats),
        "eight_runs_bf16": eight_runs(args.tokens, args.repeats, int8=False),
        "eight_runs_bf16_int8": eight_runs(args.tokens, args.repeats, int8=True),
    }
    report["load_average_at_end"] = _load_average()
    bf16 = report["batch_1"]["bf16"]
    report["targets"] = {
        "decode_vs_hf_bf16 (>= 1.5)": bf16["engine"]["decode_speedup_vs_hf"],
        "decode_int8_vs_hf_bf16 (>= 1.5)": bf16["engine_int8"]["decode_speedup_vs_hf"],
        "eight_runs_batched_vs_sequential (>= 3)": report["eight_runs_bf16"]["speedup"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
