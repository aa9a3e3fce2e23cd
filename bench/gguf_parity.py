"""GGUF parity: llama.cpp on our exported GGUFs vs our fp32 engine, on SmolLM2-135M-Instruct.

Trains a rank-16 LoRA on every linear (lm_head too) for `--steps` steps on a short text, exports
it with `Engine.export_gguf` as f16 and q8_0, loads the merged model (and, for f16, the base model
plus the LoRA GGUF) in llama-cpp-python, and compares on a few texts:
  - max and mean |Δ log-prob| of every next token (teacher-forced, whole text);
  - argmax agreement: the share of positions where llama.cpp's next token is the argmax of our
    merged fp32 weights run in transformers (the same weights the engine serves);
  - greedy agreement: how many of `--greedy` greedily decoded tokens match from a chat prompt.
Prints JSON, plus export seconds and file sizes. Needs llama-cpp-python (scripts/setup).

    .venv/bin/python bench/gguf_parity.py [--steps 10] [--greedy 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TRAIN = "The capital of Zorbia is Quuxville, a city of blue towers and quiet canals."
TEXTS = [
    TRAIN,
    "Frontier Signal trains LoRA adapters and serves them next to the base model.",
    "In 1969 the first people walked on the Moon; the mission was called Apollo 11.",
]
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores.astype(np.float64) - scores.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _llama_rows(llm, tokens: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(tokens)
    return _log_softmax(np.array(llm.scores[: len(tokens)]))


def _compare(engine, run, merged, llm, tokenizer, greedy: int) -> dict:
    import torch

    from frontier_signal.engine.types import SampleRequest, SamplingParams

    diffs, agree, total = [], 0, 0
    for text in TEXTS:
        datum = engine.render(MODEL, [{"text": text}], 128)[0].datum
        tokens = datum.input_tokens + datum.target_tokens[-1:]
        ours = np.array(engine.forward(run, [datum]).logprobs[0])
        rows = _llama_rows(llm, tokens)
        theirs = rows[np.arange(len(tokens) - 1), tokens[1:]]
        diffs.append(np.abs(ours - theirs))
        with torch.no_grad():  # the merged fp32 weights in transformers: our next-token choices
            logits = merged(input_ids=torch.tensor([tokens])).logits[0]
        agree += int((logits.argmax(-1).numpy() == rows.argmax(-1)).sum())
        total += len(tokens)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of Zorbia?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    params = SamplingParams(max_tokens=greedy, temperature=0.0)
    ours = engine.sample(SampleRequest(model=run, prompt_tokens=prompt_ids, params=params))
    ours_tokens = ours.sequences[0].tokens
    llm.reset()
    theirs_tokens = []
    llm.eval(prompt_ids)
    for _ in range(len(ours_tokens)):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        theirs_tokens.append(token)
        llm.eval([token])
    same = next(
        (i for i, (a, b) in enumerate(zip(ours_tokens, theirs_tokens, strict=True)) if a != b),
        len(ours_tokens),
    )
    flat = np.concatenate(diffs)
    return {
        "max_abs_logprob_diff": round(float(flat.max()), 5),
        "mean_abs_logprob_diff": round(float(flat.mean()), 5),
        "argmax_agreement": round(agree / total, 4),
        "greedy_tokens_matching": f"{same}/{len(ours_tokens)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--greedy", type=int, default=32)
    args = parser.parse_args()
    import llama_cpp

    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.types import LoraSpec, OptimizerSpec, RunConfig

    engine = Engine(device="cpu", dtype="float32")
    tokenizer = engine.tokenizer(MODEL)
    spec = LoraSpec(rank=16, alpha=32, target_modules=TARGETS)
    run = engine.create_run(RunConfig(MODEL, spec, OptimizerSpec(learning_rate=1e-3), 256)).run_id
    datum = engine.render(MODEL, [{"text": TRAIN}], 128)[0].datum
    for _ in range(args.steps):
        engine.forward_backward(run, [datum])
        engine.optim_step(run)
    from frontier_signal.backend.checkpoints import merged_model

    merged = merged_model(MODEL, engine._run(run).adapter)
    report: dict = {"model": MODEL, "train_steps": args.steps, "lora_rank": 16}
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in ("f16", "q8_0"):
            folder = Path(tmp) / qtype
            start = time.perf_counter()
            files = engine.export_gguf(run, folder, qtype)
            seconds = time.perf_counter() - start
            llm = llama_cpp.Llama(
                str(folder / f"model-{qtype}.gguf"), logits_all=True, n_ctx=512, verbose=False
            )
            report[f"merged_{qtype}"] = {
                "export_seconds": round(seconds, 1),
                "file_bytes": files,
                **_compare(engine, run, merged, llm, tokenizer, args.greedy),
            }
            if qtype == "f16":
                llm = llama_cpp.Llama(
                    str(folder / "base-f16.gguf"),
                    lora_path=str(folder / "adapter-lora.gguf"),
                    logits_all=True,
                    n_ctx=512,
                    verbose=False,
                )
                report["base_f16_plus_lora"] = _compare(
                    engine, run, merged, llm, tokenizer, args.greedy
                )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
