"""An RL loop in the style of tinker-cookbook's `recipes/rl_loop.py`, through the official tinker
0.38 SDK on SmolLM2 (slow): sample a group per prompt from the current weights, score each
completion with a reward computed here, centre the rewards per group into advantages, train
with `importance_sampling` on the sampler's logprobs, repeat. The mean reward must rise."""

from __future__ import annotations

import statistics

import pytest

from tests.conftest import SMOLLM2
from tests.integration.conftest import server_settings
from tests.live_server import LiveServer

tinker = pytest.importorskip("tinker")
types = tinker.types

pytestmark = pytest.mark.slow
MAX_TOKENS = 8
GROUP = 12
ITERATIONS = 10


def reward(tokens: list[int], newline: int) -> float:
    """Short answers win: 1.0 for an answer that ends at once, 0.0 for one that runs to the end."""
    length = tokens.index(newline) if newline in tokens else len(tokens)
    return 1.0 - length / MAX_TOKENS


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    settings = server_settings(tmp_path_factory.mktemp("rl"), models=[SMOLLM2], no_auth=True)
    live = LiveServer(settings).start()
    live.wait_ready()
    yield live
    live.stop()


def test_importance_sampling_raises_the_mean_reward(smol_server, monkeypatch):
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    service = tinker.ServiceClient(base_url=smol_server.base_url, api_key="tml-local")
    training = service.create_lora_training_client(base_model=SMOLLM2, rank=16).result()
    tokenizer = smol_server.state.runs.tokenizer(SMOLLM2)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    prompt_tokens = tokenizer("Q: Name a colour.\nA:", add_special_tokens=False)["input_ids"]
    prompt = types.ModelInput.from_ints(prompt_tokens)
    params = types.SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, stop=[newline])

    means = []
    for _ in range(ITERATIONS):  # bounded
        sampler = training.save_weights_and_get_sampling_client()
        result = sampler.sample(prompt, num_samples=GROUP, sampling_params=params).result()
        rewards = [reward(list(s.tokens), newline) for s in result.sequences]
        means.append(statistics.fmean(rewards))
        baseline = statistics.fmean(rewards)
        data = []
        for sequence, value in zip(result.sequences, rewards, strict=True):
            tokens, logprobs = list(sequence.tokens), list(sequence.logprobs)
            n_prompt = len(prompt_tokens) - 1
            full = prompt_tokens + tokens
            data.append(
                types.Datum(
                    model_input=types.ModelInput.from_ints(full[:-1]),
                    loss_fn_inputs={
                        "target_tokens": full[1:],
                        "logprobs": [0.0] * n_prompt + logprobs,
                        "advantages": [0.0] * n_prompt + [value - baseline] * len(tokens),
                    },
                )
            )
        training.forward_backward(data, "importance_sampling").result()
        training.optim_step(types.AdamParams(learning_rate=1e-3)).result()
    service.close("success").result()
    early, late = statistics.fmean(means[:3]), statistics.fmean(means[-3:])
    assert late > early + 0.1, means
