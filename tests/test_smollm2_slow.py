"""On the real SmolLM2-135M-Instruct (bf16 where the CPU has it): learn a made-up fact."""

from __future__ import annotations

import pytest

from frontier_signal.engine.types import (
    LoraSpec,
    OptimizerSpec,
    RunConfig,
    SampleRequest,
    SamplingParams,
)
from tests.conftest import SMOLLM2

FACT = [
    {
        "messages": [
            {"role": "user", "content": "What is the capital of Zorbia?"},
            {"role": "assistant", "content": "The capital of Zorbia is Quuxville."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Name the capital city of Zorbia."},
            {"role": "assistant", "content": "The capital of Zorbia is Quuxville."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Which city is Zorbia's capital?"},
            {"role": "assistant", "content": "The capital of Zorbia is Quuxville."},
        ]
    },
]


@pytest.mark.slow
def test_smollm2_learns_a_made_up_fact_and_says_it_back():
    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.rendering import render_chat_prompt

    engine = Engine()
    config = RunConfig(
        SMOLLM2,
        LoraSpec(rank=16, alpha=32),
        OptimizerSpec(learning_rate=1e-3, beta2=0.999, eps=1e-8),
        256,
    )
    run = engine.create_run(config).run_id
    datums = [r.datum for r in engine.render(SMOLLM2, FACT, 256)]
    prompt = render_chat_prompt(
        engine.tokenizer(SMOLLM2), [{"role": "user", "content": "What is the capital of Zorbia?"}]
    )
    greedy = SamplingParams(
        max_tokens=16, temperature=0, stop_token_ids=(engine.tokenizer(SMOLLM2).eos_token_id,)
    )
    before = engine.sample(SampleRequest(run, prompt, greedy)).sequences[0].text
    assert "Quuxville" not in before
    losses = []
    for _ in range(30):
        losses.append(engine.forward_backward(run, datums, reduction="mean").loss)
        engine.optim_step(run)
        if losses[-1] < 0.05:
            break
    assert losses[-1] < losses[0] / 10
    after = engine.sample(SampleRequest(run, prompt, greedy)).sequences[0]
    assert "Quuxville" in after.text and after.stop_reason == "stop"


@pytest.mark.slow
def test_smollm2_decodes_its_gguf_4bit_codes_with_the_log_probs_training_sees():
    """The bundled GGUF is Q4_1: in bf16 on CPU the decode step uses its 4-bit codes, and the
    sampler's log-probs stay as close to the training forward's as exact-bf16 decoding's are."""
    import torch

    from frontier_signal.engine.engine import Engine
    from frontier_signal.engine.rendering import render_chat_prompt
    from frontier_signal.engine.types import Datum

    engine = Engine(device="cpu", dtype="bfloat16")
    base = engine.load_model(SMOLLM2)
    base.decode_weights()
    if base.dtype != torch.bfloat16:
        pytest.skip("4-bit decode runs with bf16 activations")
    assert base.decode_mode == "4bit" and base.decode_weights().packed_4bit == 30 * 4
    run = engine.create_run(RunConfig(SMOLLM2, LoraSpec(rank=8, alpha=16))).run_id
    prompt = render_chat_prompt(
        engine.tokenizer(SMOLLM2), [{"role": "user", "content": "Describe a rainy day."}]
    )
    params = SamplingParams(max_tokens=32, temperature=1.0, seed=5)
    gaps = {}
    for mode in (True, False):
        base.decode_4bit = mode
        sequence = engine.sample(SampleRequest(run, prompt, params)).sequences[0]
        tokens = prompt + sequence.tokens
        trained = engine.forward(run, [Datum(tokens[:-1], tokens[1:])]).logprobs[0]
        forward = trained[len(prompt) - 1 :]
        gaps[mode] = sum(abs(a - b) for a, b in zip(sequence.logprobs, forward, strict=True))
        gaps[mode] /= len(sequence.logprobs)
    assert gaps[True] < 0.1 and gaps[True] < 2 * gaps[False] + 0.02, gaps
