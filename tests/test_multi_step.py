"""Optimizer steps of many runs at once (backend/multi_step.py, Engine.optim_step_batch): the
same weights, bit for bit, as the same steps one run after another, for both optimizers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from frontier_signal.engine.errors import InvalidInputError
from frontier_signal.engine.types import ForwardBackwardRequest
from tests.conftest import make_config

# Per run: optimizer kind and its own settings (two runs share settings, so they step in one
# multi-tensor call; the others differ in lr, betas, weight decay and clipping).
SETTINGS = [
    ("adamw", {"learning_rate": 1e-2}),
    ("adamw", {"learning_rate": 1e-2}),
    ("adamw", {"learning_rate": 3e-3, "beta1": 0.8, "weight_decay": 0.1, "grad_clip_norm": 0.5}),
    ("adamw_8bit", {"learning_rate": 1e-2}),
    ("adamw_8bit", {"learning_rate": 1e-2}),
    ("adamw_8bit", {"learning_rate": 2e-3, "beta2": 0.99, "weight_decay": 0.05}),
    ("sgd", {"learning_rate": 1e-2}),
]


def _runs(engine, rank=4):
    ids = []
    for index, (kind, settings) in enumerate(SETTINGS):
        config = make_config(rank=rank + index % 2)
        optimizer = replace(config.optimizer, kind=kind, **settings)
        torch.manual_seed(index)
        ids.append(engine.create_run(replace(config, optimizer=optimizer)).run_id)
    return ids


def _train(engine, datums, batched: bool, steps: int = 3) -> list[dict[str, torch.Tensor]]:
    ids = _runs(engine)
    try:
        for step in range(steps):
            for offset, run_id in enumerate(ids):
                if step == 1 and offset == 1:
                    continue  # run 1 skips a step: runs at different step counts share a call
                rows = [datums[(offset + step) % len(datums)]]
                engine.forward_backward_batch([ForwardBackwardRequest(run_id, rows)])
            stepping = [r for i, r in enumerate(ids) if not (step == 1 and i == 1)]
            if batched:
                outcomes = engine.optim_step_batch([(r, {}) for r in stepping])
                assert all(not isinstance(o, Exception) for o in outcomes), outcomes
            else:
                for run_id in stepping:
                    engine.optim_step(run_id)
        return [
            {n: p.detach().clone() for n, p in engine._run(r).adapter.named_parameters()}
            for r in ids
        ]
    finally:
        for run_id in ids:
            engine.delete_run(run_id)


def test_batched_steps_give_the_same_weights_as_one_after_another(engine, datums):
    alone = _train(engine, datums, batched=False)
    together = _train(engine, datums, batched=True)
    moved = 0
    for one, other in zip(alone, together, strict=True):
        assert one.keys() == other.keys()
        for name in one:
            assert torch.equal(one[name], other[name]), name
            moved += int(one[name].abs().sum() > 0)
    assert moved > len(SETTINGS)  # the weights did move


def test_a_bad_step_fails_alone(engine, make_run, datums):
    good, idle, broken = make_run(), make_run(), make_run()
    for run_id in (good, broken):
        engine.forward_backward_batch([ForwardBackwardRequest(run_id, datums[:1])])
    for p in engine._run(broken).parameters():
        if p.grad is not None:
            p.grad.fill_(float("nan"))
    before = [p.detach().clone() for p in engine._run(broken).parameters()]
    outcomes = engine.optim_step_batch([(good, {}), (idle, {}), (broken, {}), ("nope", {})])
    assert outcomes[0].step == 1 and engine.get_run(good).step == 1
    assert isinstance(outcomes[1], InvalidInputError) and "forward_backward" in str(outcomes[1])
    assert isinstance(outcomes[2], InvalidInputError) and "not finite" in str(outcomes[2])
    assert engine.get_run(broken).step == 0 and not engine._run(broken).has_pending_gradient()
    after = engine._run(broken).parameters()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert type(outcomes[3]).__name__ == "RunNotFoundError"
    with pytest.raises(InvalidInputError, match="at most once"):
        engine.optim_step_batch([(good, {}), (good, {})])
