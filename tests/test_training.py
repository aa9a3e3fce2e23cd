"""Training semantics on the tiny model: golden losses, accumulation, mixed batches, targets."""

from __future__ import annotations

import pytest
import torch

from frontier_signal.engine.types import Datum, ForwardBackwardRequest

# Loss sums of the first four steps (tiny model, fp32, rank 4, alpha 8, lr 1e-2, AdamW
# betas (0.9, 0.95)) on the `datums` fixture. A change here means the math changed.
GOLDEN_LOSS_SUMS = [323.9017639160156, 320.1564636230469, 316.37384033203125, 313.8952331542969]


def test_losses_match_the_golden_values_step_by_step(engine, make_run, datums):
    run = make_run()
    losses = []
    for _ in range(4):
        losses.append(engine.forward_backward(run, datums).loss_sum)
        engine.optim_step(run)
    assert losses == pytest.approx(GOLDEN_LOSS_SUMS, rel=1e-4)
    assert engine.get_run(run).step == 4


def test_sum_reduction_is_the_sum_of_per_token_losses_and_mean_divides_by_tokens(
    engine, make_run, datums
):
    run = make_run()
    summed = engine.forward_backward(run, datums, reduction="sum")
    per_token = [x for row in summed.elementwise_loss for x in row]
    assert summed.loss == pytest.approx(sum(per_token), rel=1e-5)
    assert summed.num_tokens == sum(len(d.input_tokens) for d in datums)
    mean = engine.forward(run, datums)
    assert mean.loss_sum == pytest.approx(summed.loss_sum, rel=1e-6)
    averaged = engine.forward_backward(run, datums, reduction="mean", accumulate=False)
    assert averaged.loss == pytest.approx(summed.loss_sum / summed.num_tokens, rel=1e-5)


def test_logprobs_are_per_datum_and_per_token_and_match_elementwise_cross_entropy(
    engine, make_run, datums
):
    run = make_run()
    out = engine.forward(run, datums)
    assert [len(x) for x in out.logprobs] == [len(d.input_tokens) for d in datums]
    for logprobs, losses in zip(out.logprobs, out.elementwise_loss, strict=True):
        assert losses == pytest.approx([-lp for lp in logprobs], abs=1e-6)
        assert all(lp <= 0 for lp in logprobs)


def _grads(engine, run_id):
    run = engine._runs[run_id]
    return {name: p.grad.clone() for name, p in run.adapter.named_parameters()}


def test_gradients_accumulate_across_calls_until_optim_step(engine, make_run, datums):
    together, split = make_run(), make_run()
    engine.forward_backward(together, datums)
    engine.forward_backward(split, datums[:1])
    engine.forward_backward(split, datums[1:])
    a, b = _grads(engine, together), _grads(engine, split)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    engine.optim_step(split)
    assert not engine.get_run(split).has_pending_gradient


def test_accumulate_false_clears_the_pending_gradient_first(engine, make_run, datums):
    fresh, reused = make_run(), make_run()
    engine.forward_backward(reused, datums[:1])
    engine.forward_backward(reused, datums[1:], accumulate=False)
    engine.forward_backward(fresh, datums[1:])
    a, b = _grads(engine, fresh), _grads(engine, reused)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_two_runs_in_one_mixed_batch_match_the_same_runs_trained_alone(engine, make_run, datums):
    """Outputs and gradients per run agree within 1e-5 (fp32) mixed vs alone, over 3 steps."""
    mixed = [make_run(seed=1), make_run(seed=2, rank=8, target_modules=("q_proj", "v_proj"))]
    alone = [make_run(seed=1), make_run(seed=2, rank=8, target_modules=("q_proj", "v_proj"))]
    batches = [datums[:2], datums[1:]]
    for _ in range(3):
        results_mixed = engine.forward_backward_batch(
            [
                ForwardBackwardRequest(mixed[0], batches[0]),
                ForwardBackwardRequest(mixed[1], batches[1], reduction="mean"),
            ]
        )
        results_alone = [
            engine.forward_backward(alone[0], batches[0]),
            engine.forward_backward(alone[1], batches[1], reduction="mean"),
        ]
        for m, a in zip(results_mixed, results_alone, strict=True):
            assert m.loss == pytest.approx(a.loss, rel=1e-5)
            for lm, la in zip(m.logprobs, a.logprobs, strict=True):
                assert lm == pytest.approx(la, abs=1e-5)
        for m, a in zip(mixed, alone, strict=True):
            gm, ga = _grads(engine, m), _grads(engine, a)
            for name in gm:
                torch.testing.assert_close(gm[name], ga[name], rtol=1e-4, atol=1e-6)
            engine.optim_step(m)
            engine.optim_step(a)


def test_many_same_rank_runs_batched_together_match_each_run_trained_alone(
    engine, make_run, datums
):
    """Equal segments of same-rank runs take the batched-matmul path (lora._batched_delta);
    a run of another rank in the middle splits them. Per-run losses and gradients equal each
    run trained alone (fp32; the batched matmul sums in another order, so gradients agree to
    1e-5, and after an Adam step, which turns rounding on near-zero entries into whole
    steps, the next losses agree to 1e-3)."""
    specs = [{"seed": 1}, {"seed": 2}, {"seed": 3, "rank": 8}, {"seed": 4}, {"seed": 5}]
    mixed = [make_run(**spec) for spec in specs]
    alone = [make_run(**spec) for spec in specs]
    batches = [[datums[2]], [datums[0]], [datums[1]], [datums[1]], [datums[0]]]
    for step, tolerance in ((0, 1e-5), (1, 1e-3)):
        results_mixed = engine.forward_backward_batch(
            [ForwardBackwardRequest(run, batch) for run, batch in zip(mixed, batches, strict=True)]
        )
        results_alone = [
            engine.forward_backward(run, batch) for run, batch in zip(alone, batches, strict=True)
        ]
        for m, a in zip(results_mixed, results_alone, strict=True):
            assert m.loss == pytest.approx(a.loss, rel=tolerance)
        for m, a in zip(mixed, alone, strict=True):
            if step == 0:
                gm, ga = _grads(engine, m), _grads(engine, a)
                for name in gm:
                    torch.testing.assert_close(gm[name], ga[name], rtol=1e-4, atol=1e-5)
            engine.optim_step(m)
            engine.optim_step(a)


def test_runs_covering_the_whole_batch_in_one_batched_delta_match_each_alone(
    engine, make_run, datums
):
    """Every row in one run of equal segments (N runs' same-shape steps): the whole batch's
    delta is one batched matmul added without copying the base output."""
    mixed = [make_run(seed=s) for s in (1, 2, 3)]
    alone = [make_run(seed=s) for s in (1, 2, 3)]
    batches = [[datums[2]], [datums[0]], [datums[1]]]
    results_mixed = engine.forward_backward_batch(
        [ForwardBackwardRequest(run, batch) for run, batch in zip(mixed, batches, strict=True)]
    )
    for run, batch, m in zip(alone, batches, results_mixed, strict=True):
        assert m.loss == pytest.approx(engine.forward_backward(run, batch).loss, rel=1e-5)
    for m, a in zip(mixed, alone, strict=True):
        gm, ga = _grads(engine, m), _grads(engine, a)
        for name in gm:
            torch.testing.assert_close(gm[name], ga[name], rtol=1e-4, atol=1e-5)


def test_target_switches_and_lists_decide_which_modules_get_lora(engine, make_run):
    from frontier_signal.engine.types import target_modules_from_switches

    no_mlp = make_run(target_modules=target_modules_from_switches(train_mlp=False))
    names = list(engine._runs[no_mlp].adapter.pairs)
    assert names and not any(
        n.split(".")[-1] in ("gate_proj", "up_proj", "down_proj") for n in names
    )
    assert "lm_head" in names
    only_q = make_run(target_modules=("q",))
    assert {n.split(".")[-1] for n in engine._runs[only_q].adapter.pairs} == {"q_proj"}


def test_unembed_lora_trains_and_leaves_the_shared_embedding_untouched(engine, make_run, datums):
    run = make_run(target_modules=("lm_head",))
    base = engine._runs[run].base
    embedding = base.model.model.embed_tokens.weight.clone()
    first = engine.forward_backward(run, datums).loss_sum
    engine.optim_step(run)
    assert engine.forward(run, datums).loss_sum < first
    torch.testing.assert_close(base.model.model.embed_tokens.weight, embedding, rtol=0, atol=0)


def test_optim_step_learning_rate_override_applies_to_that_step_only(engine, make_run, datums):
    run = make_run()
    engine.forward_backward(run, datums)
    assert engine.optim_step(run, learning_rate=0.5).learning_rate == 0.5
    engine.forward_backward(run, datums)
    assert engine.optim_step(run).learning_rate == pytest.approx(1e-2)


def test_gradient_clipping_reports_the_norm_before_clipping(engine, make_run, datums):
    run = make_run()
    engine.forward_backward(run, datums)
    result = engine.optim_step(run, grad_clip_norm=1e-3)
    assert result.clipped and result.grad_norm > 1e-3


def test_a_new_run_costs_only_its_adapter_and_deleting_it_frees_it(engine, make_run, datums):
    run = make_run()
    info = engine.get_run(run)
    assert info.memory_bytes == info.num_params * 4  # fp32 weights, no state yet
    engine.forward_backward(run, datums)
    engine.optim_step(run)
    used = engine.get_run(run).memory_bytes  # + AdamW m and v (and a step counter per tensor)
    assert info.num_params * 4 * 3 <= used < info.num_params * 4 * 3 + 4096
    layer = next(iter(engine._runs[run].adapter._layers.values()))
    engine.delete_run(run)
    assert run not in engine.list_runs() and run not in layer.adapters


def test_bf16_compute_trains_with_fp32_master_weights(datums):
    from frontier_signal.engine.engine import Engine
    from tests.conftest import make_config

    engine = Engine(device="cpu", dtype="bfloat16")
    run = engine.create_run(make_config()).run_id
    assert engine.get_run(run).dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in engine._runs[run].parameters())
    first = engine.forward_backward(run, datums).loss_sum
    engine.optim_step(run)
    assert first == pytest.approx(GOLDEN_LOSS_SUMS[0], rel=2e-2)
    assert engine.forward(run, datums).loss_sum < first


def test_chunked_logprobs_do_not_depend_on_the_chunk_size(datums):
    from frontier_signal.engine.engine import Engine
    from tests.conftest import make_config

    results = []
    for chunk in (7, 4096):
        engine = Engine(device="cpu", dtype="float32", logprob_chunk_tokens=chunk)
        run = engine.create_run(make_config()).run_id
        results.append(engine.forward_backward(run, datums))
    assert results[0].loss_sum == pytest.approx(results[1].loss_sum, rel=1e-6)
    assert results[0].grad_norm == pytest.approx(results[1].grad_norm, rel=1e-5)


def test_datums_take_explicit_weights(engine, make_run, datums):
    run = make_run()
    weighted = [
        Datum(d.input_tokens, d.target_tokens, [0.0] * (len(d.input_tokens) - 1) + [2.0])
        for d in datums
    ]
    out = engine.forward(run, weighted)
    for losses, logprobs in zip(out.elementwise_loss, out.logprobs, strict=True):
        assert losses[:-1] == [0.0] * (len(losses) - 1)
        assert losses[-1] == pytest.approx(-2 * logprobs[-1], rel=1e-6)


@pytest.mark.parametrize("native_op", [True, False])
def test_gradient_stats_count_non_finite_values_and_match_a_flat_reference(
    engine, make_run, monkeypatch, native_op
):
    from frontier_signal.backend import native
    from frontier_signal.backend.training import gradient_stats

    if native_op:  # one C++ pass (grad_stats); else torch's per-tensor norms
        ops = native.ops()
        if ops is None:
            pytest.skip("our C++ ops are off")
        calls = []
        monkeypatch.setattr(native, "ops", lambda: calls.append(1) or ops)
    else:
        monkeypatch.setattr(native, "fp32_ops", lambda tensors: None)
    state = engine._runs[make_run()]
    generator = torch.Generator().manual_seed(0)
    for p in state.parameters():
        p.grad = torch.randn(p.shape, generator=generator)
    flat = torch.cat([p.grad.reshape(-1) for p in state.parameters()])
    norm, max_abs, nonfinite = gradient_stats(state)
    assert norm == pytest.approx(float(flat.norm()), rel=1e-5)
    assert max_abs == float(flat.abs().max()) and nonfinite == 0

    grads = [p.grad for p in state.parameters()]
    grads[0].view(-1)[0] = float("nan")
    grads[-1].view(-1)[:2] = float("inf")
    norm, max_abs, nonfinite = gradient_stats(state)
    assert nonfinite == 3
    finite = torch.cat([g.reshape(-1) for g in grads])
    finite = finite[torch.isfinite(finite)]
    assert norm == pytest.approx(float(finite.norm()), rel=1e-5)
    assert max_abs == float(finite.abs().max())
    state.clear_gradient()
    assert not native_op or calls


def test_totals_only_requests_unembed_the_weighted_tokens_with_the_same_loss_and_gradient(
    engine, make_run, datums
):
    """`token_outputs=False` (Signal's face) skips the log-probs of weight-0 tokens: the loss
    and gradient are those of the full computation, mixed with a request that wants them."""
    weighted = [
        Datum(
            d.input_tokens,
            d.target_tokens,
            [0.0] * (len(d.input_tokens) // 2)
            + [1.0] * (len(d.input_tokens) - len(d.input_tokens) // 2),
        )
        for d in datums
    ]
    full, totals, other = make_run(seed=3), make_run(seed=3), make_run(seed=4)
    expected = engine.forward_backward(full, weighted, reduction="mean")
    got, other_result = engine.forward_backward_batch(
        [
            ForwardBackwardRequest(totals, weighted, reduction="mean", token_outputs=False),
            ForwardBackwardRequest(other, datums),
        ]
    )
    assert got.loss == pytest.approx(expected.loss, rel=1e-5)
    assert got.num_tokens == expected.num_tokens and got.grad_norm == pytest.approx(
        expected.grad_norm, rel=1e-4
    )
    assert got.logprobs == [] and got.elementwise_loss == []
    assert [len(lp) for lp in other_result.logprobs] == [len(d.input_tokens) for d in datums]
    gf, gt = _grads(engine, full), _grads(engine, totals)
    for name in gf:
        torch.testing.assert_close(gt[name], gf[name], rtol=1e-4, atol=1e-6)


def test_a_batch_over_the_activation_budget_is_checkpointed_with_the_same_results(datums):
    """No run asks for checkpointing; a batch whose estimated activations exceed the engine's
    budget gets it anyway (so one large batch cannot run the server out of memory), and the
    loss and gradient are those of the batch without it."""
    from frontier_signal.engine.engine import Engine
    from tests.conftest import make_config

    results, grads, used = [], [], []
    for budget in (None, 0):
        engine = Engine(device="cpu", dtype="float32", activation_budget_mib=budget)
        run = engine.create_run(make_config()).run_id
        results.append(engine.forward_backward(run, datums))
        used.append(engine._runs[run].base._checkpointing)  # as the last batch ran
        grads.append(_grads(engine, run))
    assert used == [False, True]
    assert results[0].loss == pytest.approx(results[1].loss, rel=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)
