"""The quantized decode's lm_head against the exact bf16 one, on SmolLM2's real hidden states.

The hidden states are the final norm's outputs of HF bf16 greedy `generate` over the chat
prompts of bench/decode.py. On each, the bf16 head (`ops.linear`, the exact decode's kernel)
gives the reference logits; then for the checked 8-bit head (`decode_head.CheckedHead`) and
fbgemm's dynamic int8 head (`decode_head.Int8Head`):

- `argmax_equal`: the share of steps whose greedy token is the bf16 head's;
- `max_logit_equal`: whether the greedy token's logit is the bf16 head's bit for bit, every step;
- `max_abs_logit_error`: the largest |logit - bf16 logit| over the vocabulary and steps;
- the sampling distribution at temperature 1 against the bf16 head's, mean and max over steps:
  total variation, |log-normaliser error|, and the expected |log p error| of a sampled token;
- `ms_per_call` at 1 and 8 rows, alternating the heads, best of `--repeats`.

Prints JSON. The checked head needs our ops' AVX512-BF16 build; fbgemm's needs its engine.

    .venv/bin/python bench/decode_head.py [--tokens 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from decode import MODEL, QUESTIONS, models_prompt  # noqa: E402


def hidden_states(tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the final norm's output at each generated token [steps, D], the lm_head weight)."""
    from frontier_signal.backend import models

    model = models.load_hf_model(MODEL, dtype=torch.bfloat16)
    tokenizer = models.load_tokenizer(MODEL)
    states = []
    for question in QUESTIONS:
        prompt = torch.tensor([models_prompt(tokenizer, question)])
        with torch.no_grad():
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=tokens,
                do_sample=False,
                output_hidden_states=True,
                return_dict_in_generate=True,
                pad_token_id=2,
            )
        states += [step[-1][0, -1] for step in out.hidden_states]  # after the final norm
    return torch.stack(states).contiguous(), model.lm_head.weight.detach()


def fidelity(got: torch.Tensor, exact: torch.Tensor) -> dict:
    logp, ref = torch.log_softmax(got, -1), torch.log_softmax(exact, -1)
    p = ref.exp()
    variation = 0.5 * (logp.exp() - p).abs().sum(-1)
    normaliser = (torch.logsumexp(got, -1) - torch.logsumexp(exact, -1)).abs()
    sampled = (p * (logp - ref).abs()).sum(-1)
    return {
        "argmax_equal": (got.argmax(-1) == exact.argmax(-1)).float().mean().item(),
        "max_logit_equal": torch.equal(got.max(-1).values, exact.max(-1).values),
        "max_abs_logit_error": (got - exact).abs().max().item(),
        "total_variation": {"mean": variation.mean().item(), "max": variation.max().item()},
        "log_normaliser_error": {"mean": normaliser.mean().item(), "max": normaliser.max().item()},
        "sampled_logprob_error": {"mean": sampled.mean().item(), "max": sampled.max().item()},
    }


def timings(heads: dict, states: torch.Tensor, repeats: int) -> dict:
    def once(head, x, calls: int = 20) -> float:
        head(x)
        start = time.perf_counter()
        for _ in range(calls):
            head(x)
        return (time.perf_counter() - start) / calls * 1e3

    best: dict[str, dict[str, float]] = {name: {} for name in heads}
    for rows in (1, 8):
        x = states[:rows].contiguous()
        for _ in range(repeats):
            for name, head in heads.items():
                ms = once(head, x)
                best[name][f"{rows}_rows"] = min(best[name].get(f"{rows}_rows", ms), ms)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per prompt")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from frontier_signal.backend import decode_head, native

    ops = native.with_bf16_kernels(native.ops())
    if ops is None:
        sys.exit("the checked head needs our ops' AVX512-BF16 build (this CPU or build lacks it)")
    states, weight = hidden_states(args.tokens)
    exact = ops.linear(states, weight, None).float()
    heads = {
        "bf16_exact": lambda x: ops.linear(x, weight, None),
        "checked_8bit": decode_head.CheckedHead(ops, weight, None),
    }
    if decode_head.available():
        heads["fbgemm_int8"] = decode_head.Int8Head(weight, None)
    report = {
        "model": MODEL,
        "steps": states.shape[0],
        "fidelity_vs_bf16_head": {
            name: fidelity(torch.cat([head(row[None]).float() for row in states]), exact)
            for name, head in heads.items()
            if name != "bf16_exact"
        },
        "ms_per_call": timings(heads, states, args.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
