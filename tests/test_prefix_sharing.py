"""Prefix sharing (backend/prefix_sharing.py, backend/batching.py): datums that start alike are
computed once up to where they part, with the same log-probs, losses and gradients as unshared,
and no suffix sees another."""

from __future__ import annotations

import random

import torch

from frontier_signal.backend.batching import build_batch
from frontier_signal.backend.prefix_sharing import group_datums, plan_rows, shared_layout
from frontier_signal.backend.training import run_forward_backward
from frontier_signal.engine.types import Datum, ForwardBackwardRequest
from tests.conftest import TINY

PROMPT = list(range(40, 70))  # 30 tokens every datum of a group starts with


def _datum(tokens: list[int], rng: random.Random, weighted_prompt: bool = False) -> Datum:
    weights = [rng.choice([0.0, 0.5, 1.0]) if weighted_prompt else 0.0] * (len(PROMPT) - 1)
    weights += [rng.uniform(0.2, 1.5) for _ in range(len(tokens) - len(PROMPT))]
    return Datum(
        tokens[:-1],
        tokens[1:],
        weights=weights,
        sampler_logprobs=[-rng.uniform(0.5, 4.0) for _ in tokens[1:]],
        advantages=[rng.uniform(-1.0, 1.0) for _ in tokens[1:]],
    )


def _group(rng: random.Random, n: int, weighted_prompt: bool = False) -> list[Datum]:
    """`n` completions of one prompt, of different lengths."""
    return [
        _datum(
            PROMPT + [rng.randrange(3, 250) for _ in range(rng.randrange(4, 20))],
            rng,
            weighted_prompt,
        )
        for _ in range(n)
    ]


def test_groups_share_only_where_inputs_and_targets_agree():
    a = ([1] * 12 + [2, 3], [1] * 11 + [2, 3, 4])
    b = ([1] * 12 + [5], [1] * 11 + [5, 6])
    c = ([9, 9, 9], [9, 9, 9])
    assert group_datums([a, b, c]) == [(11, [0, 1]), (0, [2])]  # position 11's targets differ
    rows = plan_rows([[a, b, c]], 14)
    assert rows == [[(11, [0, 1]), (0, [2])]]
    layout = shared_layout([[a, b, c]], rows, pad_id=0)
    flat = layout.input_ids[layout.valid_BT]
    assert flat[layout.share_N].tolist() == a[0] + b[0] + c[0]
    positions = layout.position_ids[layout.valid_BT][layout.share_N]
    assert positions.tolist() == list(range(14)) + list(range(13)) + list(range(3))
    assert layout.positions_per_request == [11 + 3 + 2 + 3]


def _run_both(engine, requests):
    base = engine.load_model(TINY)
    out = {}
    for pack in (False, True):
        for request in requests:
            engine._run(request.run_id).clear_gradient()
        results = run_forward_backward(base, engine._runs, requests, pack=pack)
        grads = {
            r.run_id: [p.grad.clone() for p in engine._run(r.run_id).parameters()]
            for r in requests
            if not r.forward_only
        }
        out[pack] = (results, grads)
    return out


def test_shared_prefixes_give_the_unshared_logprobs_losses_and_gradients(engine, make_run):
    rng = random.Random(0)
    runs = [make_run(), make_run(rank=8)]
    requests = [
        ForwardBackwardRequest(runs[0], _group(rng, 5, weighted_prompt=True), reduction="mean"),
        ForwardBackwardRequest(
            runs[1], _group(rng, 3) + _group(rng, 1), loss_fn="importance_sampling"
        ),
    ]
    base = engine.load_model(TINY)
    batch = build_batch(base, {r: r for r in runs}, requests, True)
    assert batch.share_N is not None  # the layout is really shared: fewer positions computed
    assert int(batch.valid_BT.sum()) < sum(len(d.input_tokens) for r in requests for d in r.datums)
    out = _run_both(engine, requests)
    (plain, plain_grads), (shared, shared_grads) = out[False], out[True]
    for a, b in zip(plain, shared, strict=True):
        assert abs(a.loss - b.loss) <= 1e-5 * max(1.0, abs(a.loss))
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            torch.testing.assert_close(torch.tensor(y), torch.tensor(x), rtol=1e-5, atol=1e-5)
        for x, y in zip(a.elementwise_loss, b.elementwise_loss, strict=True):
            torch.testing.assert_close(torch.tensor(y), torch.tensor(x), rtol=1e-5, atol=1e-5)
    for run_id in runs:
        for a, b in zip(plain_grads[run_id], shared_grads[run_id], strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in plain_grads[run_id])


def test_totals_only_requests_share_too(engine, make_run):
    """Signal's calls unembed only weighted tokens; a shared position is kept if any datum
    weighs it."""
    rng = random.Random(1)
    run_id = make_run()
    datums = _group(rng, 4, weighted_prompt=True)
    request = ForwardBackwardRequest(run_id, datums, reduction="mean", token_outputs=False)
    out = _run_both(engine, [request])
    (plain, plain_grads), (shared, shared_grads) = out[False], out[True]
    assert abs(plain[0].loss - shared[0].loss) <= 1e-5 * abs(plain[0].loss)
    for a, b in zip(plain_grads[run_id], shared_grads[run_id], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_a_suffix_never_sees_another(engine, make_run):
    rng = random.Random(2)
    run_id = make_run()
    first, second, third = _group(rng, 3)
    changed = Datum(
        second.input_tokens[: len(PROMPT)] + [t + 1 for t in second.input_tokens[len(PROMPT) :]],
        second.target_tokens,
    )
    base = engine.load_model(TINY)

    def first_and_third(middle: Datum) -> list[list[float]]:
        request = ForwardBackwardRequest(run_id, [first, middle, third], forward_only=True)
        assert build_batch(base, {run_id: run_id}, [request], True).share_N is not None
        result = run_forward_backward(base, engine._runs, [request], pack=True)[0]
        return [result.logprobs[0], result.logprobs[2]]

    assert first_and_third(second) == first_and_third(changed)


def test_piecewise_attention_equals_the_tree_mask():
    """backend/tree_attention.py against one dense SDPA over the rows with the tree mask it
    stands for: outputs and the gradients of q, k and v."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from frontier_signal.backend import tree_attention

    rows = [(5, [(5, 9), (9, 16), (16, 17)]), (0, [(0, 6), (6, 8)]), (3, [(3, 11)])]
    width = 17
    mask = torch.zeros(len(rows), width, width, dtype=torch.bool)
    for row, (shared, spans) in enumerate(rows):
        mask[row, :shared, :shared] = torch.ones(shared, shared, dtype=torch.bool).tril()
        for start, end in spans:
            mask[row, start:end, :shared] = True
            n = end - start
            mask[row, start:end, start:end] = torch.ones(n, n, dtype=torch.bool).tril()
    used = mask.any(-1)  # pads attend nothing in the dense reference: compare real positions
    mask |= torch.eye(width, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(len(rows), h, width, 8, generator=generator, requires_grad=True)
        for h in (4, 2, 2)
    )
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=True)
    dense = dense.transpose(1, 2)[used]
    pieces = tree_attention.build_pieces(rows, width)
    module = SimpleNamespace(training=False)
    with tree_attention.use(pieces, SimpleNamespace(_attn_implementation="sdpa")):
        tree, _ = tree_attention.tree_attention(module, q, k, v, None)
    tree = tree[used]
    torch.testing.assert_close(tree, dense, rtol=1e-5, atol=1e-6)
    grads = torch.randn(dense.shape, generator=generator)
    dense_grads = torch.autograd.grad(dense, (q, k, v), grads)
    tree_grads = torch.autograd.grad(tree, (q, k, v), grads)
    for a, b in zip(dense_grads, tree_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_shared_rows_under_gradient_checkpointing_give_the_same_gradients(engine, make_run):
    """The recompute in backward attends piece by piece too (the budget forces checkpointing)."""
    rng = random.Random(5)
    run_id = make_run()
    request = ForwardBackwardRequest(run_id, _group(rng, 3), reduction="mean")
    base = engine.load_model(TINY)
    grads = []
    for pack, budget in ((False, None), (True, 1)):
        engine._run(run_id).clear_gradient()
        run_forward_backward(
            base, engine._runs, [request], pack=pack, activation_budget_bytes=budget
        )
        grads.append([p.grad.clone() for p in engine._run(run_id).parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_identical_datums_and_groups_wider_than_a_row_share_correctly(
    engine, make_run, monkeypatch
):
    """Identical datums (each keeps a one-token suffix) and a group that needs several rows,
    each repeating the prefix: still the unshared log-probs and gradients."""
    from frontier_signal.backend import prefix_sharing

    monkeypatch.setattr(prefix_sharing, "ROW_CAPACITY", 64)
    rng = random.Random(6)
    run_id = make_run()
    group = _group(rng, 6, weighted_prompt=True)
    datums = [group[0], group[0], *group[1:]]
    request = ForwardBackwardRequest(run_id, datums, reduction="mean")
    base = engine.load_model(TINY)
    batch = build_batch(base, {run_id: run_id}, [request], True)
    assert batch.share_N is not None and batch.input_ids.shape[0] > 1  # several shared rows
    out = _run_both(engine, [request])
    (plain, plain_grads), (shared, shared_grads) = out[False], out[True]
    for x, y in zip(plain[0].logprobs, shared[0].logprobs, strict=True):
        torch.testing.assert_close(torch.tensor(y), torch.tensor(x), rtol=1e-5, atol=1e-5)
    for a, b in zip(plain_grads[run_id], shared_grads[run_id], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
