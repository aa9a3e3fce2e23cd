"""A step that would make weights non-finite changes nothing (backend/step_guard.py), and
settings that make every step blow up are refused up front. Found by the schemathesis run: one
fuzzed `optim_step` (eps 0, or a learning rate of 1e38) turned a run's weights into NaN, and
every later answer of that run with them."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import ForwardBackwardRequest

# (optimizer, a step's settings that overflow or divide 0 by 0 on the tiny model's adapter,
# good steps before it: a bad step must also undo the optimizer state a step built)
BAD_STEPS = [
    ("adamw", {"eps": 0.0}, 0),  # a fresh LoRA's A gets zero gradients: 0 / (sqrt(0) + 0)
    ("adamw", {"learning_rate": 1e38}, 1),
    ("adamw_8bit", {"eps": 0.0}, 0),
    ("adamw_8bit", {"learning_rate": 1e38}, 0),
    ("adamw_8bit", {"learning_rate": 1e38}, 1),
]


def _state(engine, run_id) -> list[torch.Tensor]:
    """The run's weights and every tensor of its optimizer state, copied."""
    run = engine._run(run_id)
    tensors = [p.detach().clone() for p in run.parameters()]
    for state in run.optimizer.state.values():
        tensors += [v.clone() for v in state.values() if torch.is_tensor(v)]
    return tensors


def _step(engine, run_id, datums, **overrides):
    engine.forward_backward(run_id, datums)
    return engine.optim_step(run_id, **overrides)


@pytest.mark.parametrize(("kind", "bad", "good_steps_first"), BAD_STEPS, ids=str)
def test_a_step_that_would_make_weights_non_finite_changes_nothing(
    engine, make_run, datums, kind, bad, good_steps_first
):
    hit, twin = make_run(optimizer=kind, seed=7), make_run(optimizer=kind, seed=7)
    for _ in range(good_steps_first):
        _step(engine, hit, datums)
        _step(engine, twin, datums)
    before = _state(engine, hit)
    with pytest.raises(InvalidInputError, match="non-finite; it was not applied"):
        _step(engine, hit, datums, **bad)
    after = _state(engine, hit)
    assert len(after) == len(before) and all(map(torch.equal, before, after))
    assert engine.get_run(hit).step == good_steps_first
    assert not engine._run(hit).has_pending_gradient()
    # Then it trains on exactly as the run that never saw the bad step (state and all).
    for _ in range(2):
        assert _step(engine, hit, datums[:2]).step == _step(engine, twin, datums[:2]).step
    assert all(map(torch.equal, _state(engine, hit), _state(engine, twin)))


def test_in_a_batch_of_steps_the_bad_one_fails_alone(engine, make_run, datums):
    good, bad = make_run(optimizer="adamw_8bit"), make_run(optimizer="adamw_8bit")
    for run_id in (good, bad):
        engine.forward_backward_batch([ForwardBackwardRequest(run_id, datums[:1])])
    before = _state(engine, bad)
    outcomes = engine.optim_step_batch([(good, {}), (bad, {"eps": 0.0})])
    assert outcomes[0].step == 1 and engine.get_run(good).step == 1
    assert isinstance(outcomes[1], InvalidInputError) and "non-finite" in str(outcomes[1])
    assert engine.get_run(bad).step == 0 and all(map(torch.equal, before, _state(engine, bad)))


def test_a_weight_decay_that_flips_the_weights_is_refused(engine, make_run, datums):
    run = make_run()
    engine.forward_backward(run, datums)
    with pytest.raises(InvalidInputError, match="learning_rate x weight_decay is 2"):
        engine.optim_step(run, learning_rate=0.5, weight_decay=4.0)
    assert engine.optim_step(run, learning_rate=0.5, weight_decay=2.0).step == 1


def test_embeddings_of_a_diverged_run_are_an_error_not_nan(engine, make_run, datums):
    run = make_run()
    _step(engine, run, datums, learning_rate=1e30)  # finite weights, non-finite forward
    with pytest.raises(InvalidInputError, match="texts\\[0\\].*non-finite hidden states"):
        engine.embed(run, ["hello"])


@pytest.mark.parametrize("kind", ["adamw", "adamw_8bit", "sgd"])
def test_ordinary_steps_are_proven_finite_without_a_copy(engine, make_run, datums, kind):
    from dataclasses import replace

    from frontier_signal.backend import step_guard

    run_id = make_run(optimizer=kind)
    for _ in range(2):
        engine.forward_backward(run_id, datums)
        run = engine._run(run_id)
        spec = run.config.optimizer
        assert step_guard.guard(run, spec, grad_norm=10.0) is None
        assert step_guard.guard(run, replace(spec, learning_rate=1e38), grad_norm=10.0)
        engine.optim_step(run_id)
