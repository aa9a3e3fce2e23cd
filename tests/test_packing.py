"""Packing short sequences into one row (backend/packing.py): the same losses and gradients as
unpacked, and no token sees another sequence of its row."""

from __future__ import annotations

import torch

from frontier_signal.backend.batching import build_batch
from frontier_signal.backend.packing import pack_rows, packed_inputs
from frontier_signal.backend.training import run_forward_backward
from frontier_signal.engine.types import Datum, ForwardBackwardRequest
from tests.conftest import TINY


def test_consecutive_sequences_share_a_row_while_they_fit():
    assert pack_rows([[10, 3, 4, 2, 9], [5, 5]], 10) == [[[0], [1, 2, 3], [4]], [[0, 1]]]
    ids, positions, valid = packed_inputs([[[7, 8], [9]], [[5, 6, 4]]], [[[0, 1]], [[0]]], 0)
    assert ids.tolist() == [[7, 8, 9], [5, 6, 4]]
    assert positions.tolist() == [[0, 1, 0], [0, 1, 2]]
    assert valid.all()


def _forward_backward(engine, runs, datums, pack):
    """Log-probs and each run's gradient for one mixed batch (two runs), packed or not."""
    for run_id in runs:
        engine._run(run_id).clear_gradient()
    base = engine.load_model(TINY)
    requests = [
        ForwardBackwardRequest(runs[0], datums[:3], reduction="mean"),
        ForwardBackwardRequest(runs[1], datums[3:], reduction="sum"),
    ]
    results = run_forward_backward(base, engine._runs, requests, pack=pack)
    grads = {r: [p.grad.clone() for p in engine._run(r).parameters()] for r in runs}
    return [r.logprobs for r in results], grads


def _datums(engine, texts):
    return [r.datum for r in engine.render(TINY, [{"text": t} for t in texts], 64)]


def test_packed_losses_and_gradients_equal_unpacked(engine, make_run):
    runs = [make_run(), make_run(rank=8)]
    datums = _datums(
        engine,
        [
            "Seven blue whales sang in the harbour at dawn, and nobody in the town slept.",
            "Hi.",
            "Short one here.",
            "A long line about the capital of Zorbia, which is Quux, and its old harbour.",
            "Yes.",
            "No, thanks.",
        ],
    )
    base = engine.load_model(TINY)
    request = ForwardBackwardRequest(runs[0], datums)
    packed_batch = build_batch(base, {runs[0]: runs[0]}, [request], True)
    assert packed_batch.position_ids is not None and packed_batch.input_ids.shape[0] < len(datums)
    plain_lp, plain_grads = _forward_backward(engine, runs, datums, pack=False)
    packed_lp, packed_grads = _forward_backward(engine, runs, datums, pack=True)
    for plain, packed in zip(plain_lp, packed_lp, strict=True):
        for a, b in zip(plain, packed, strict=True):
            torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-5)
    for run_id in runs:
        moved = 0
        for a, b in zip(plain_grads[run_id], packed_grads[run_id], strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
            moved += int(a.abs().sum() > 0)
        assert moved > 0


def test_a_packed_token_never_sees_the_other_sequences_of_its_row(engine, make_run):
    run_id = make_run()
    first, second = _datums(engine, ["The first sentence, long enough.", "Then a second."])
    changed = Datum(
        [t + 1 for t in first.input_tokens[:-1]] + first.input_tokens[-1:],
        first.target_tokens,
    )
    long_row = _datums(engine, ["x " * 40])[0]  # sets the row capacity: first + second fit
    base = engine.load_model(TINY)

    def second_logprobs(head: Datum) -> list[float]:
        request = ForwardBackwardRequest(run_id, [long_row, head, second], forward_only=True)
        batch_rows = run_forward_backward(base, engine._runs, [request], pack=True)
        return batch_rows[0].logprobs[2]

    request = ForwardBackwardRequest(run_id, [long_row, first, second], forward_only=True)
    assert build_batch(base, {run_id: run_id}, [request], True).input_ids.shape[0] == 2  # packed
    assert second_logprobs(first) == second_logprobs(changed)
    alone = ForwardBackwardRequest(run_id, [second], forward_only=True)
    expected = run_forward_backward(base, engine._runs, [alone], pack=False)[0].logprobs[0]
    torch.testing.assert_close(
        torch.tensor(second_logprobs(first)), torch.tensor(expected), rtol=1e-5, atol=1e-5
    )
