"""A learning check in the style of an RL loop, through the real hpcai SDK on SmolLM2: sample
completions, score them with a toy reward, train with `importance_sampling`; the mean reward
rises. (The tiny test model samples almost uniformly over 49k tokens, so no toy reward gives it
a learning signal in a few steps: this check needs a real model.)"""

from __future__ import annotations

from statistics import mean

import pytest

from tests.conftest import SMOLLM2
from tests.integration.tinker_support import hpcai, types

QUESTION = "Pick a random number between 1 and 10. Answer with the number only."
GROUP = 16
STEPS = 6


def reward(tokenizer, tokens: list[int]) -> float:
    """Toy format reward: 1 when the reply starts with a digit."""
    text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return 1.0 if text[:1].isdigit() else 0.0


def rl_datum(prompt: list[int], completion, advantage: float) -> types.Datum:
    """Prompt + completion, targets shifted by one; only completion tokens carry advantages."""
    tokens = prompt + completion.tokens
    prompt_positions = len(prompt) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [0.0] * prompt_positions + list(completion.logprobs),
            "advantages": [0.0] * prompt_positions + [advantage] * len(completion.tokens),
        },
    )


@pytest.mark.slow
def test_importance_sampling_raises_the_mean_reward(hpcai_client, tiny_tokenizer):
    tokenizer = tiny_tokenizer  # the tiny model shares SmolLM2's tokenizer
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    training = hpcai_client.create_lora_training_client(base_model=SMOLLM2, rank=8, seed=0)
    params = types.SamplingParams(max_tokens=3, temperature=1.0, seed=1)
    rewards = []
    for step in range(STEPS):
        sampler = training.save_weights_and_get_sampling_client(f"rl-{step}")
        result = sampler.sample(types.ModelInput.from_ints(prompt), GROUP, params).result()
        scores = [reward(tokenizer, s.tokens) for s in result.sequences]
        rewards.append(mean(scores))
        data = [
            rl_datum(prompt, s, score - mean(scores))
            for s, score in zip(result.sequences, scores, strict=True)
            if score != mean(scores)
        ]
        if data:
            training.forward_backward(data, "importance_sampling")
            training.optim_step(hpcai.AdamParams(learning_rate=1e-3)).result()
    assert mean(rewards[-2:]) > rewards[0] + 0.3, rewards
