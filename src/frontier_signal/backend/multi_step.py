"""Optimizer steps of many runs at once: one set of multi-tensor (`torch._foreach_*`) calls over
every run's LoRA parameters instead of a Python loop per run.

`run_optim_steps([(run, spec), ...])` gives exactly the result of `training.run_optim_step` on
each run one after another (tests/test_multi_step.py compares the weights bit for bit):

- the gradient norms of all runs come from one `_foreach_norm` over all their gradients (a
  per-tensor norm does not depend on its neighbours), then each run's total norm and clipping
  are computed as `clip_grad_norm_` does;
- runs whose settings agree (optimizer kind, learning rate, betas, eps, weight decay) step in
  one call: fp32 AdamW through torch's own fused (or multi-tensor) Adam
  (`torch.optim.adam.adam`, the function `AdamW.step` calls, with each parameter's own step
  count, so runs at different steps share it), 8-bit AdamW through `AdamW8bit.step_many`; SGD
  and anything else steps run by run.

It does not validate settings or decide which runs step together (engine/engine.py and the
scheduler do), and a run whose gradient is not finite, or whose step would make a weight
non-finite (undone: backend/step_guard.py), fails with its own error, never the others'.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch.optim.adam import adam

from frontier_signal.backend import step_guard
from frontier_signal.backend.adamw_8bit import AdamW8bit
from frontier_signal.backend.step_guard import StepUndo
from frontier_signal.backend.training import RunState, mark_updated, run_optim_step
from frontier_signal.engine.types import OptimizerSpec, OptimStepResult

StepOutcome = OptimStepResult | FloatingPointError


def _settings(run: RunState, spec: OptimizerSpec) -> tuple:
    """What must agree for runs to step in one call (a fused and a multi-tensor AdamW round
    differently, so they never share one)."""
    fused = bool(run.optimizer.param_groups[0].get("fused"))
    return (
        spec.kind,
        fused,
        spec.learning_rate,
        spec.beta1,
        spec.beta2,
        spec.eps,
        spec.weight_decay,
    )


def _apply_settings(run: RunState, spec: OptimizerSpec) -> None:
    for group in run.optimizer.param_groups:
        group["lr"] = spec.learning_rate
        group["weight_decay"] = spec.weight_decay
        if "betas" in group:
            group["betas"] = (spec.beta1, spec.beta2)
            group["eps"] = spec.eps


@torch.no_grad()
def _clip(items: list[tuple[RunState, OptimizerSpec]]) -> list[float]:
    """Each run's gradient norm before clipping, its gradient clipped in place as
    `torch.nn.utils.clip_grad_norm_` does (same operations, so the same bits)."""
    per_run = [[p.grad for p in run.parameters() if p.grad is not None] for run, _ in items]
    flat = [g for grads in per_run for g in grads]
    norms = torch._foreach_norm(flat, 2.0) if flat else []
    out, start = [], 0
    for (_, spec), grads in zip(items, per_run, strict=True):
        mine = norms[start : start + len(grads)]
        start += len(grads)
        total = torch.linalg.vector_norm(torch.stack(list(mine)), 2.0)
        max_norm = spec.grad_clip_norm if spec.grad_clip_norm > 0 else math.inf
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        if float(coefficient) < 1.0:  # times 1.0 changes no bit: skip it
            torch._foreach_mul_(grads, coefficient)
        out.append(float(total))
    return out


@torch.no_grad()
def _adamw_many(runs: list[RunState]) -> None:
    """One multi-tensor AdamW update over the runs (their settings agree)."""
    params: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    exp_avgs: list[torch.Tensor] = []
    exp_avg_sqs: list[torch.Tensor] = []
    max_exp_avg_sqs: list[torch.Tensor] = []
    state_steps: list[torch.Tensor] = []
    has_complex = False
    for run in runs:
        optimizer = cast(torch.optim.AdamW, run.optimizer)
        for group in optimizer.param_groups:
            has_complex |= optimizer._init_group(
                group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps
            )
    group = runs[0].optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    adam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        amsgrad=group["amsgrad"],
        has_complex=has_complex,
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        foreach=group["foreach"] and not group["fused"],
        capturable=group["capturable"],
        differentiable=group["differentiable"],
        fused=group["fused"],
        decoupled_weight_decay=True,
    )


def _batchable(run: RunState) -> bool:
    """Whether the run's optimizer is one this module steps together with others."""
    optimizer = run.optimizer
    if isinstance(optimizer, AdamW8bit):
        return True
    if type(optimizer) is not torch.optim.AdamW:
        return False
    groups = optimizer.param_groups
    if len({(bool(g["foreach"]), bool(g["fused"])) for g in groups}) > 1:
        return False
    return all(
        (g["foreach"] or g["fused"]) and not g["amsgrad"] and not g["capturable"] for g in groups
    )


def run_optim_steps(items: list[tuple[RunState, OptimizerSpec]]) -> list[StepOutcome]:
    """Apply each run's pending gradient with its spec (runs distinct, each with a pending
    gradient); per run its `OptimStepResult`, or the `FloatingPointError` of a non-finite
    gradient (dropped, that run's weights unchanged)."""
    if len({id(run) for run, _ in items}) != len(items):
        raise ValueError("a run may step only once in a batch")
    batched = [(run, spec) for run, spec in items if _batchable(run)]
    alone = {id(run) for run, spec in items if not _batchable(run)}
    outcomes: dict[int, StepOutcome] = {}
    for run, spec in items:
        if id(run) in alone:
            try:
                outcomes[id(run)] = run_optim_step(run, spec)
            except FloatingPointError as exc:
                outcomes[id(run)] = exc
    norms = _clip(batched)
    groups: dict[tuple, list[RunState]] = {}
    undos: dict[int, StepUndo] = {}
    for (run, spec), norm in zip(batched, norms, strict=True):
        if not math.isfinite(norm):
            run.clear_gradient()
            outcomes[id(run)] = FloatingPointError(
                f"the pending gradient of run {run.run_id} is not finite (norm {norm}); "
                "it was dropped and the weights are unchanged"
            )
            continue
        _apply_settings(run, spec)
        groups.setdefault(_settings(run, spec), []).append(run)
        if (undo := step_guard.guard(run, spec, norm)) is not None:
            undos[id(run)] = undo
    for runs in groups.values():
        if isinstance(runs[0].optimizer, AdamW8bit):
            AdamW8bit.step_many([cast(AdamW8bit, run.optimizer) for run in runs])
        else:
            _adamw_many(runs)
    for (run, spec), norm in zip(batched, norms, strict=True):
        if id(run) in outcomes:
            continue
        try:
            if id(run) in undos:
                undos[id(run)].check()
        except FloatingPointError as exc:
            outcomes[id(run)] = exc
            continue
        mark_updated(run)
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        max_norm = spec.grad_clip_norm if spec.grad_clip_norm > 0 else math.inf
        outcomes[id(run)] = OptimStepResult(
            run.run_id, run.step, spec.learning_rate, norm, clipped=norm > max_norm
        )
    return [outcomes[id(run)] for run, _ in items]
