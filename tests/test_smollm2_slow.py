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
