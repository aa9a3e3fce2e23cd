"""Per-run training state and the mixed-batch forward/backward.

A batch may hold datums of several runs on one base model: rows are grouped per request, the
base model runs once over all of them, and each run's LoRA term touches only its rows. Each
request's objective is added with its own scale (1 for Tinker's sum, 1/tokens for Signal's
mean), so runs never change each other's gradient scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.graph import increment_version

from frontier_signal.backend import native, step_guard, tree_attention
from frontier_signal.backend.adamw_8bit import AdamW8bit
from frontier_signal.backend.base_model import BaseModel, target_logprobs
from frontier_signal.backend.batching import TrainBatch, build_batch
from frontier_signal.backend.lora import Adapter
from frontier_signal.backend.losses import per_token_loss
from frontier_signal.engine.types import (
    Datum,
    ForwardBackwardRequest,
    ForwardBackwardResult,
    OptimizerSpec,
    OptimStepResult,
    RunConfig,
)


@dataclass
class RunState:
    """One run: its adapter, optimizer, step counter. The base model is shared."""

    run_id: str
    config: RunConfig
    base: BaseModel
    adapter: Adapter
    optimizer: torch.optim.Optimizer
    step: int = 0

    @classmethod
    def create(cls, run_id: str, config: RunConfig, base: BaseModel) -> RunState:
        adapter = Adapter(run_id, config.lora, base.layers, base.device)
        adapter.attach()
        return cls(run_id, config, base, adapter, make_optimizer(adapter, config.optimizer))

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.adapter.parameters()

    def has_pending_gradient(self) -> bool:
        return any(p.grad is not None for p in self.parameters())

    def clear_gradient(self) -> None:
        for p in self.parameters():
            p.grad = None

    def memory_bytes(self) -> int:
        """Adapter + gradient + optimizer state actually allocated for this run."""
        tensors: list[torch.Tensor] = list(self.parameters())
        tensors += [p.grad for p in self.parameters() if p.grad is not None]
        for state in self.optimizer.state.values():
            tensors += [t for t in state.values() if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def release(self) -> None:
        self.adapter.detach()
        self.clear_gradient()
        self.optimizer.state.clear()


def make_optimizer(adapter: Adapter, spec: OptimizerSpec) -> torch.optim.Optimizer:
    params = adapter.parameters()
    if spec.kind == "sgd":
        return torch.optim.SGD(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    if spec.kind == "adamw_8bit":
        return AdamW8bit(
            params,
            lr=spec.learning_rate,
            betas=(spec.beta1, spec.beta2),
            eps=spec.eps,
            weight_decay=spec.weight_decay,
        )
    # torch's fused AdamW (one pass over weight, gradient and moments) where it exists: on this
    # CPU 5-6x faster than the multi-tensor (foreach) one, which makes ~10 passes.
    fused = params[0].device.type in ("cpu", "cuda") if params else False
    return torch.optim.AdamW(
        params,
        lr=spec.learning_rate,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        foreach=not fused,
        fused=fused,
    )


def gradient_stats(run: RunState) -> tuple[float, float, int]:
    """(L2 norm, max |g|, count of non-finite entries) of the run's pending gradient."""
    grads = [p.grad for p in run.parameters() if p.grad is not None]
    if not grads:
        return 0.0, 0.0, 0
    # One pass over the gradients in place (a run's are ~10M values, a mixed batch of 16 runs
    # spent ~2 s copying and masking them); a finite norm means no non-finite value.
    ops = native.fp32_ops(grads)
    if ops is not None:  # one C++ pass for both figures (torch: one op per tensor and figure)
        squares, max_abs = ops.grad_stats(grads)
        if math.isfinite(squares):
            return math.sqrt(squares), max_abs, 0
    else:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if math.isfinite(float(norm)):
            max_abs = torch.stack(torch._foreach_norm(grads, ord=math.inf)).max()
            return float(norm), float(max_abs), 0
    flat = torch.cat([g.reshape(-1) for g in grads])
    finite = torch.isfinite(flat)
    nonfinite = int((~finite).sum())
    flat = torch.where(finite, flat, torch.zeros_like(flat))
    return float(flat.norm()), float(flat.abs().max()), nonfinite


def _flat_input(datums: list[Datum], field: str, fill: float, device) -> torch.Tensor:
    """One per-token float input of every datum, concatenated; `fill` where a datum has none."""
    values: list[float] = []
    for datum in datums:
        given = getattr(datum, field)
        values.extend(given if given else [fill] * len(datum.target_tokens))
    return torch.tensor(values, dtype=torch.float32, device=device)


@dataclass
class _RequestLoss:
    losses_N: torch.Tensor  # detached
    loss_sum: float
    weight_sum: float
    trained: int  # tokens with a non-zero weight
    scale: float  # 1 (sum) or 1/trained (mean)


def _batch_logprobs(
    base: BaseModel,
    requests: list[ForwardBackwardRequest],
    batch: TrainBatch,
    hidden_UD: torch.Tensor,
    chunk_tokens: int,
) -> torch.Tensor:
    """log p(target) of every datum token that needs one: all of a request that wants token
    outputs, the weighted ones of the others (their loss is 0 elsewhere, so the rest stay 0 and
    the unembedding, a fifth of SmolLM2's FLOPs, skips them). The unembedding runs over the
    computed positions (a shared prefix once) and is gathered per datum token."""
    share = batch.share_N
    segments = batch.token_segments
    head_adapters = any(key in base.lm_head.adapters for key, _, _ in segments)
    if head_adapters or all(r.token_outputs for r in requests):  # (Tinker's calls: no mask)
        # (an adapter on lm_head needs its segments, so every position is unembedded)
        logprobs_U = target_logprobs(base, hidden_UD, batch.targets_U, segments, chunk_tokens)
        return logprobs_U if share is None else logprobs_U[share]
    needed_N = torch.cat(
        [
            torch.ones(sum(len(d.input_tokens) for d in r.datums), dtype=torch.bool)
            if r.token_outputs
            else _flat_input(r.datums, "weights", 1.0, "cpu") != 0
            for r in requests
        ]
    ).to(hidden_UD.device)
    needed_U = needed_N
    if share is not None:  # a shared position is needed if any of its datum tokens is
        needed_U = needed_N.new_zeros(len(hidden_UD)).index_fill_(0, share[needed_N], True)
    picked = target_logprobs(base, hidden_UD[needed_U], batch.targets_U[needed_U], [], chunk_tokens)
    logprobs_U = picked.new_zeros(len(needed_U)).masked_scatter(needed_U, picked)
    return logprobs_U if share is None else logprobs_U[share]


def _wants_checkpointing(
    base: BaseModel,
    runs: dict[str, RunState],
    requests: list[ForwardBackwardRequest],
    batch: TrainBatch,
    activation_budget_bytes: int | None,
) -> bool:
    # Checkpointing trades time (10-56% per step here) for memory. A run that asks for it gets
    # it (the contract: "honoured"; in a mixed batch, if any run asks); a batch whose
    # activations would exceed the budget gets it anyway, so no run can exhaust the memory.
    if any(runs[r.run_id].config.gradient_checkpointing for r in requests):
        return True
    return (
        activation_budget_bytes is not None
        and base.activation_bytes(*batch.input_ids.shape) > activation_budget_bytes
    )


def _objective(
    requests: list[ForwardBackwardRequest], batch: TrainBatch, logprobs_N: torch.Tensor
) -> tuple[torch.Tensor, list[_RequestLoss]]:
    """Each request's per-token losses, and the training objective: the sum of the training
    requests' losses, each with its own scale."""
    device = logprobs_N.device
    objective = logprobs_N.new_zeros(())
    per_request = []
    for request, (start, end) in zip(requests, batch.token_ranges, strict=True):
        weights = _flat_input(request.datums, "weights", 1.0, device)
        sampler = _flat_input(request.datums, "sampler_logprobs", 0.0, device)
        advantages = _flat_input(request.datums, "advantages", 0.0, device)
        losses_N = per_token_loss(
            request.loss_fn,
            logprobs_N[start:end],
            weights,
            sampler,
            advantages,
            request.loss_fn_config,
        )
        loss_sum = losses_N.sum()
        trained = int((weights != 0).sum())
        scale = 1.0 if request.reduction == "sum" else 1.0 / max(trained, 1)
        if not request.forward_only:
            objective = objective + loss_sum * scale
        per_request.append(
            _RequestLoss(losses_N.detach(), loss_sum.item(), weights.sum().item(), trained, scale)
        )
    return objective, per_request


def _result(
    request: ForwardBackwardRequest,
    run: RunState,
    logprobs_cpu: torch.Tensor,
    start: int,
    loss: _RequestLoss,
) -> ForwardBackwardResult:
    losses_cpu = loss.losses_N.float().cpu()
    per_datum_lp: list[list[float]] = []
    per_datum_loss: list[list[float]] = []
    offset = start
    for datum in request.datums if request.token_outputs else []:
        length = len(datum.input_tokens)
        per_datum_lp.append(logprobs_cpu[offset : offset + length].tolist())
        per_datum_loss.append(losses_cpu[offset - start : offset - start + length].tolist())
        offset += length
    norm, max_abs, nonfinite = (
        gradient_stats(run) if not request.forward_only else (math.nan, math.nan, 0)
    )
    return ForwardBackwardResult(
        run_id=request.run_id,
        logprobs=per_datum_lp,
        elementwise_loss=per_datum_loss,
        loss=loss.loss_sum * loss.scale,
        loss_sum=loss.loss_sum,
        weight_sum=loss.weight_sum,
        num_tokens=loss.trained,
        step=run.step + 1,
        grad_norm=norm,
        grad_max_abs=max_abs,
        grad_nonfinite=nonfinite,
        num_params=run.adapter.num_params(),
    )


def run_forward_backward(
    base: BaseModel,
    runs: dict[str, RunState],
    requests: list[ForwardBackwardRequest],
    chunk_tokens: int = 1024,
    activation_budget_bytes: int | None = None,
    pack: bool = False,
) -> list[ForwardBackwardResult]:
    """One forward (and backward, unless every request is forward-only) over all requests.

    `activation_budget_bytes`: a batch whose activations (estimated) exceed it recomputes them
    in backward (gradient checkpointing) even if no run asked; None: only when asked.
    `pack`: share datums' common prefixes, or put consecutive short sequences of a request in
    one row, where that computes fewer positions (backend/batching.py; no cross-talk).

    Requests must be validated and all on `base`; mixing forward-only and training requests
    in one call is allowed but the caller should keep them apart (dropout is on for all).
    """
    train = any(not r.forward_only for r in requests)
    for request in requests:
        if not request.forward_only and not request.accumulate:
            runs[request.run_id].clear_gradient()
    keys = {r.run_id: runs[r.run_id].adapter.key for r in requests}
    batch = build_batch(base, keys, requests, pack)
    base.model.train(train)
    base.set_gradient_checkpointing(
        train and _wants_checkpointing(base, runs, requests, batch, activation_budget_bytes)
    )
    try:
        attention = base.training_attention(batch.input_ids.shape[1])
        tree = tree_attention.use(batch.pieces, base.model.config)
        with base.routing.use(batch.row_segments), torch.set_grad_enabled(train), attention, tree:
            inputs = batch.model_inputs()
            hidden_BTD = base.hidden_states(batch.input_ids, use_cache=False, **inputs)
            hidden_UD = hidden_BTD[batch.valid_BT]
            logprobs_N = _batch_logprobs(base, requests, batch, hidden_UD, chunk_tokens)
            objective, per_request = _objective(requests, batch, logprobs_N)
            if train and objective.requires_grad:
                objective.backward()
    finally:
        base.model.train(False)
    logprobs_cpu = logprobs_N.detach().float().cpu()
    return [
        _result(request, runs[request.run_id], logprobs_cpu, start, loss)
        for request, (start, _end), loss in zip(
            requests, batch.token_ranges, per_request, strict=True
        )
    ]


def run_optim_step(run: RunState, spec: OptimizerSpec) -> OptimStepResult:
    """Apply the pending gradient with `spec`'s hyperparameters, then clear it.

    A non-finite gradient is dropped without touching the weights (the run stays usable), and
    a step that would make a weight non-finite is undone (backend/step_guard.py); both raise
    `FloatingPointError`.
    """
    params = [p for p in run.parameters() if p.grad is not None]
    max_norm = spec.grad_clip_norm if spec.grad_clip_norm > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not math.isfinite(grad_norm):
        run.clear_gradient()
        raise FloatingPointError(
            f"the pending gradient of run {run.run_id} is not finite (norm {grad_norm}); "
            "it was dropped and the weights are unchanged"
        )
    for group in run.optimizer.param_groups:
        group["lr"] = spec.learning_rate
        group["weight_decay"] = spec.weight_decay
        if "betas" in group:
            group["betas"] = (spec.beta1, spec.beta2)
            group["eps"] = spec.eps
    undo = step_guard.guard(run, spec, grad_norm)
    run.optimizer.step()
    if undo is not None:
        undo.check()
    mark_updated(run)
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return OptimStepResult(
        run.run_id, run.step, spec.learning_rate, grad_norm, clipped=grad_norm > max_norm
    )


def mark_updated(run: RunState) -> None:
    """Bump the in-place version counter of every weight the optimizer updated. Fused kernels
    (torch's fused AdamW) write the weights without bumping it, and the adapter's identity
    (`lora.Adapter.identity`: the prefix cache and the decode caches key by it) must change
    with every step, or a sample after training would reuse stale KV blocks and LoRA terms."""
    for group in run.optimizer.param_groups:
        for param in group["params"]:
            increment_version(param)
