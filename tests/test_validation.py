"""Bad input gives a clear typed error and leaves the run usable."""

from __future__ import annotations

import math

import pytest

from frontier_signal.engine.errors import InvalidInputError, ModelNotFoundError, RunNotFoundError
from frontier_signal.engine.types import Datum, SampleRequest, SamplingParams
from tests.conftest import TINY, make_config


def _still_trains(engine, run, datums):
    before = engine.get_run(run).step
    engine.forward_backward(run, datums)
    engine.optim_step(run)
    assert engine.get_run(run).step == before + 1


def test_unknown_base_model_lists_the_available_ones(engine):
    from dataclasses import replace

    with pytest.raises(ModelNotFoundError) as error:
        engine.create_run(replace(make_config(), base_model="meta-llama/Llama-3.2-3B"))
    assert "meta-llama/Llama-3.2-3B" in str(error.value) and TINY in str(error.value)
    assert isinstance(error.value, LookupError)


@pytest.mark.parametrize(
    "lora, message",
    [
        ({"rank": 0}, "rank must be a positive integer"),
        ({"rank": -4}, "rank must be a positive integer"),
        ({"dropout": 1.5}, "dropout"),
        ({"target_modules": ("q_proj", "attention")}, "unknown LoRA target module 'attention'"),
        ({"target_modules": ()}, "no LoRA target modules"),
        ({"learning_rate": float("nan")}, "learning_rate"),
    ],
)
def test_bad_run_configs_are_rejected_with_the_field_named(engine, lora, message):
    with pytest.raises(InvalidInputError, match=message):
        engine.create_run(make_config(**lora))


@pytest.mark.parametrize(
    "case, message",
    [
        ("token_over_vocab", "outside the vocabulary"),
        ("too_long", "exceed the run's max_seq_length 256"),
        ("empty_batch", "empty batch"),
        ("unknown_loss", "unknown loss_fn 'hinge'"),
        ("missing_advantages", "needs loss_fn_inputs 'advantages'"),
        ("nan_advantages", r"advantages\[1\] is nan"),
        ("target_length", "target_tokens is required"),
        ("bad_loss_config", "not used by 'cross_entropy'"),
    ],
)
def test_bad_batches_are_rejected_and_the_run_stays_usable(engine, make_run, datums, case, message):
    run = make_run()
    d = datums[0]
    n = len(d.input_tokens)
    loss_fn, config = "cross_entropy", {}
    if case == "token_over_vocab":
        batch = [Datum(d.input_tokens[:-1] + [49152], d.target_tokens)]
    elif case == "too_long":
        batch = [Datum([5] * 300, [5] * 300)]
    elif case == "empty_batch":
        batch = []
    elif case == "unknown_loss":
        batch, loss_fn = [d], "hinge"
    elif case == "missing_advantages":
        batch, loss_fn = (
            [Datum(d.input_tokens, d.target_tokens, sampler_logprobs=[-1.0] * n)],
            "ppo",
        )
    elif case == "nan_advantages":
        advantages = [1.0, math.nan] + [1.0] * (n - 2)
        batch = [
            Datum(
                d.input_tokens, d.target_tokens, sampler_logprobs=[-1.0] * n, advantages=advantages
            )
        ]
        loss_fn = "importance_sampling"
    elif case == "target_length":
        batch = [Datum(d.input_tokens, d.target_tokens[:-1])]
    else:
        batch, config = [d], {"beta": 1.0}
    with pytest.raises(InvalidInputError, match=message):
        engine.forward_backward(run, batch, loss_fn=loss_fn, loss_fn_config=config)
    assert not engine.get_run(run).has_pending_gradient
    _still_trains(engine, run, datums)


def test_one_bad_request_in_a_mixed_batch_changes_no_run(engine, make_run, datums):
    from frontier_signal.engine.types import ForwardBackwardRequest

    good, bad = make_run(), make_run()
    with pytest.raises(InvalidInputError):
        engine.forward_backward_batch(
            [ForwardBackwardRequest(good, datums), ForwardBackwardRequest(bad, [], "cross_entropy")]
        )
    assert not engine.get_run(good).has_pending_gradient


def test_optim_step_without_a_gradient_says_what_to_do(engine, make_run):
    with pytest.raises(InvalidInputError, match="call forward_backward first"):
        engine.optim_step(make_run())


def test_a_non_finite_gradient_is_dropped_and_the_weights_stay(engine, make_run, datums):
    run = make_run()
    huge = [
        Datum(d.input_tokens, d.target_tokens, weights=[3e38] * len(d.input_tokens)) for d in datums
    ]
    engine.forward_backward(run, huge)
    before = engine.forward(run, datums).loss_sum
    with pytest.raises(InvalidInputError, match="not finite"):
        engine.optim_step(run)
    assert engine.forward(run, datums).loss_sum == before
    _still_trains(engine, run, datums)


def test_unknown_run_and_bad_sampling_settings_are_typed_errors(engine, make_run):
    with pytest.raises(RunNotFoundError, match="no run 'ghost'"):
        engine.forward_backward("ghost", [])
    run = make_run()
    for params, message in [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(top_p=0), "top_p"),
        (SamplingParams(temperature=-1), "temperature"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            engine.sample(SampleRequest(run, [1, 2, 3], params))
    with pytest.raises(InvalidInputError, match="outside the vocabulary"):
        engine.sample(SampleRequest(run, [1, 10**6], SamplingParams()))
    with pytest.raises(ModelNotFoundError, match="'run_gone' is neither a loaded run") as error:
        engine.sample(SampleRequest("run_gone", [1, 2], SamplingParams()))
    assert TINY in str(error.value)
