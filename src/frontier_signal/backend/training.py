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

from frontier_signal.backend.adamw_8bit import AdamW8bit
from frontier_signal.backend.base_model import BaseModel, target_logprobs
from frontier_signal.backend.lora import Adapter, Segment
from frontier_signal.backend.losses import per_token_loss
from frontier_signal.backend.packing import pack_rows, packed_inputs
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
    # One pass per figure over the gradients in place (a run's are ~10M values, a mixed batch
    # of 16 runs spent ~2 s copying and masking them); a finite norm means no non-finite value.
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    max_abs = torch.stack(torch._foreach_norm(grads, ord=math.inf)).max()
    if math.isfinite(float(norm)):
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
class _Batch:
    """The rows of one forward: right-padded inputs, which positions are real, the targets of
    the real ones, and per request its rows' and tokens' LoRA segments and token range; with
    packed rows, the position ids that restart at each sequence."""

    input_ids: torch.Tensor
    valid_BT: torch.Tensor
    targets_N: torch.Tensor
    lengths: list[int]
    row_segments: list[Segment]
    token_segments: list[Segment]
    token_ranges: list[tuple[int, int]]
    position_ids: torch.Tensor | None = None  # set when rows are packed (backend/packing.py)


@dataclass
class _RequestLoss:
    losses_N: torch.Tensor  # detached
    loss_sum: float
    weight_sum: float
    trained: int  # tokens with a non-zero weight
    scale: float  # 1 (sum) or 1/trained (mean)


def _build_batch(
    base: BaseModel,
    runs: dict[str, RunState],
    requests: list[ForwardBackwardRequest],
    pack: bool = False,
) -> _Batch:
    datums = [d for r in requests for d in r.datums]
    lengths = [len(d.input_tokens) for d in datums]
    device = base.device
    per_request = [[len(d.input_tokens) for d in r.datums] for r in requests]
    layout = pack_rows(per_request, max(lengths))
    position_ids = None
    if pack and sum(len(rows) for rows in layout) < len(datums):  # packing saves rows
        tokens = [[d.input_tokens for d in r.datums] for r in requests]
        input_ids, position_ids, valid_BT = packed_inputs(tokens, layout, base.pad_token_id)
        input_ids, position_ids = input_ids.to(device), position_ids.to(device)
        valid_BT = valid_BT.to(device)
        rows_per_request = [len(rows) for rows in layout]
    else:
        input_ids = torch.full((len(datums), max(lengths)), base.pad_token_id, dtype=torch.long)
        for row, datum in enumerate(datums):
            input_ids[row, : lengths[row]] = torch.tensor(datum.input_tokens)
        input_ids = input_ids.to(device)
        # Right padding under a causal mask: real tokens never attend to pads, so no mask is
        # needed and SDPA keeps its fast causal path. Pads are dropped before the unembedding.
        valid_BT = (
            torch.arange(input_ids.shape[1], device=device)[None, :]
            < torch.tensor(lengths, device=device)[:, None]
        )
        rows_per_request = [len(r.datums) for r in requests]
    targets_N = torch.tensor(
        [t for d in datums for t in d.target_tokens], dtype=torch.long, device=device
    )
    batch = _Batch(input_ids, valid_BT, targets_N, lengths, [], [], [], position_ids)
    row = token = first = 0
    for request, n_rows in zip(requests, rows_per_request, strict=True):
        key = runs[request.run_id].adapter.key
        n_datums = len(request.datums)
        n_tokens = sum(lengths[first : first + n_datums])
        batch.row_segments.append((key, row, row + n_rows))
        batch.token_segments.append((key, token, token + n_tokens))
        batch.token_ranges.append((token, token + n_tokens))
        row, token, first = row + n_rows, token + n_tokens, first + n_datums
    return batch


def _batch_logprobs(
    base: BaseModel,
    requests: list[ForwardBackwardRequest],
    batch: _Batch,
    hidden_ND: torch.Tensor,
    chunk_tokens: int,
) -> torch.Tensor:
    """log p(target) of every token of the batch that needs one: all of a request that wants
    token outputs, the weighted ones of the others (their loss is 0 elsewhere, so the rest stay
    0 and the unembedding, a fifth of SmolLM2's FLOPs, skips them)."""
    if all(r.token_outputs for r in requests):  # Tinker's calls: no mask to build
        return target_logprobs(base, hidden_ND, batch.targets_N, batch.token_segments, chunk_tokens)
    needed = [
        torch.ones(sum(len(d.input_tokens) for d in r.datums), dtype=torch.bool)
        if r.token_outputs
        else _flat_input(r.datums, "weights", 1.0, "cpu") != 0
        for r in requests
    ]
    needed_N = torch.cat(needed).to(hidden_ND.device)
    head_adapters = any(key in base.lm_head.adapters for key, _, _ in batch.token_segments)
    if head_adapters or bool(needed_N.all()):  # (an adapter on lm_head needs its segments)
        return target_logprobs(base, hidden_ND, batch.targets_N, batch.token_segments, chunk_tokens)
    picked = target_logprobs(base, hidden_ND[needed_N], batch.targets_N[needed_N], [], chunk_tokens)
    return picked.new_zeros(len(needed_N)).masked_scatter(needed_N, picked)


def _wants_checkpointing(
    base: BaseModel,
    runs: dict[str, RunState],
    requests: list[ForwardBackwardRequest],
    batch: _Batch,
    activation_budget_bytes: int | None,
) -> bool:
    # Checkpointing trades time (10-56% per step here) for memory. A run that asks for it gets
    # it (the contract: "honoured"; in a mixed batch, if any run asks); a batch whose
    # activations would exceed the budget gets it anyway, so no run can exhaust the memory.
    if any(runs[r.run_id].config.gradient_checkpointing for r in requests):
        return True
    return (
        activation_budget_bytes is not None
        and base.activation_bytes(len(batch.lengths), max(batch.lengths)) > activation_budget_bytes
    )


def _objective(
    requests: list[ForwardBackwardRequest], batch: _Batch, logprobs_N: torch.Tensor
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
    `pack`: put consecutive short sequences of a request in one row when that saves rows
    (backend/packing.py; block-diagonal attention, no cross-talk).

    Requests must be validated and all on `base`; mixing forward-only and training requests
    in one call is allowed but the caller should keep them apart (dropout is on for all).
    """
    train = any(not r.forward_only for r in requests)
    for request in requests:
        if not request.forward_only and not request.accumulate:
            runs[request.run_id].clear_gradient()
    batch = _build_batch(base, runs, requests, pack)
    packed = {} if batch.position_ids is None else {"position_ids": batch.position_ids}
    base.model.train(train)
    base.set_gradient_checkpointing(
        train and _wants_checkpointing(base, runs, requests, batch, activation_budget_bytes)
    )
    try:
        attention = base.training_attention(batch.input_ids.shape[1])
        with base.routing.use(batch.row_segments), torch.set_grad_enabled(train), attention:
            hidden_BTD = base.hidden_states(batch.input_ids, use_cache=False, **packed)
            hidden_ND = hidden_BTD[batch.valid_BT]
            logprobs_N = _batch_logprobs(base, requests, batch, hidden_ND, chunk_tokens)
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

    A non-finite gradient is dropped without touching the weights (the run stays usable).
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
    run.optimizer.step()
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
