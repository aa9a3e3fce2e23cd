"""An optimizer step leaves every weight finite, or it changes nothing.

A finite gradient can still make weights non-finite: AdamW with `eps=0` divides 0 by 0 where a
gradient has been zero so far (a fresh LoRA's A matrices, whose B is still zero), and a large
enough learning rate or weight decay overflows fp32. Applied, such a step would poison the run
for good: every later forward gives NaN, and a checkpoint saved after it keeps the NaNs.

Checking after the step needs a copy from before it, and a fresh copy of an r=32 SmolLM2
adapter's weights and state costs more than the step (measured: the step 21 -> 59 ms). So
`guard()` first bounds the step from a few norms it reads (4-5 ms a step there): with
0 <= lr * wd <= 1 (engine/validation.py) AdamW moves a weight by at most
lr * max(|m|, |g|) / ((1 - beta1^t) * eps), since m / (1 - beta1^t) is a weighted mean of past
gradients, and SGD by lr * (|g| + wd * |w|). Where the weights plus twice that stay below
1e36 no weight can leave fp32's range (3.4e38) and the step runs as before. Otherwise (eps 0 or
tiny, a huge learning rate, state whose bound it cannot read) it returns a `StepUndo`, a copy
of what the step will move, whose `check()` after the step puts it all back and raises
`FloatingPointError` if a moved weight is not finite.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from frontier_signal.backend.training import RunState
    from frontier_signal.engine.types import OptimizerSpec


_LIMIT = 1e36  # far enough below fp32's 3.4e38 that the bound's own rounding cannot matter


def guard(run: RunState, spec: OptimizerSpec, grad_norm: float) -> StepUndo | None:
    """Before a step of `run` with `spec` (`grad_norm`: the gradient's norm before clipping):
    a `StepUndo` to check the step with when it could make a weight non-finite, else None."""
    params: list[torch.Tensor] = [p for p in run.parameters() if p.grad is not None]
    if not params or not _could_overflow(run, spec, grad_norm, params):
        return None
    return StepUndo(run, spec, params)


def _could_overflow(
    run: RunState, spec: OptimizerSpec, grad_norm: float, params: list[torch.Tensor]
) -> bool:
    """The bound above: False when no weight can leave fp32's range in this step."""
    from frontier_signal.backend.adamw_8bit import CODE_MAX, AdamW8bit

    optimizer = run.optimizer
    with torch.no_grad():
        weights = float(torch.stack(torch._foreach_norm(params)).max())  # >= every |w|
    clip = spec.grad_clip_norm if spec.grad_clip_norm > 0 else math.inf
    gradient = min(grad_norm, clip)
    if isinstance(optimizer, torch.optim.SGD):
        move = spec.learning_rate * (gradient + spec.weight_decay * weights)
        return not weights + 2 * move < _LIMIT
    states = [optimizer.state.get(p) or {} for p in params]
    if spec.eps <= 0 or any(s and "step" not in s for s in states):
        return True
    if not isinstance(optimizer, AdamW8bit | torch.optim.AdamW):
        return True
    # First moments as 8-bit blocks (|m| <= scale * CODE_MAX, rounded) or fp32 (AdamW's, or
    # a checkpoint's not yet turned into 8-bit blocks).
    scales = [s["exp_avg_scale"] for s in states if "exp_avg_scale" in s]
    moments = [s["exp_avg"] for s in states if "exp_avg" in s]
    moment = float(torch.cat(scales).max()) * CODE_MAX * 1.25 if scales else 0.0
    if moments:
        with torch.no_grad():
            moment = max(moment, float(torch.stack(torch._foreach_norm(moments)).max()))
    # The bias correction is smallest at the earliest step (a weight with no state: the first).
    step = min(float(s["step"]) if s else 0.0 for s in states) + 1
    corrected = 1 - spec.beta1**step if spec.beta1 > 0 else 1.0
    move = spec.learning_rate * max(moment, gradient) / (corrected * spec.eps)
    return not weights + 2 * move < _LIMIT


class StepUndo:
    """The weights an optimizer step of `run` is about to move (those with a gradient), and
    their optimizer state, as they are now."""

    def __init__(self, run: RunState, spec: OptimizerSpec, params: list[torch.Tensor]):
        self.run, self.spec, self.params = run, spec, params
        optimizer = run.optimizer
        self.weights = [p.detach().clone() for p in self.params]
        self.state: list[dict[str, Any] | None] = []
        for p in self.params:
            state = optimizer.state.get(p)
            self.state.append(
                {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
                if state
                else None
            )

    def check(self) -> None:
        """After the step: nothing to do when every moved weight is finite; otherwise undo
        it and raise `FloatingPointError` naming the step's settings."""
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(self.params))
            if bool(torch.isfinite(norms).all()):
                return
            # A norm also overflows where the weights are finite but huge (> ~1e19).
            bad = sum(int((~torch.isfinite(p)).sum()) for p in self.params)
        if not bad:
            return
        self.undo()
        raise FloatingPointError(
            f"this step ({_describe(self.spec)}) would make {bad} of run {self.run.run_id}'s "
            "weights non-finite; it was not applied (weights and optimizer state are as "
            "before) and the pending gradient was dropped"
        )

    @torch.no_grad()
    def undo(self) -> None:
        """Weights and optimizer state back to what they were (in place: views into flat
        buffers, such as AdamW8bit's, stay views)."""
        optimizer = self.run.optimizer
        torch._foreach_copy_(self.params, self.weights)
        for p, before in zip(self.params, self.state, strict=True):
            if before is None:
                optimizer.state.pop(p, None)  # built by this step: built again by the next
                continue
            now = optimizer.state[p]
            for key, value in before.items():
                if torch.is_tensor(value) and torch.is_tensor(now.get(key)):
                    now[key].copy_(value)
                else:
                    now[key] = value
        self.run.clear_gradient()


def _describe(spec: OptimizerSpec) -> str:
    """A step's settings, as the error names them."""
    return (
        f"learning_rate {spec.learning_rate:g}, eps {spec.eps:g}, "
        f"weight_decay {spec.weight_decay:g}"
    )
