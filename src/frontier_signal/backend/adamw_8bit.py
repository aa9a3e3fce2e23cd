"""AdamW whose two moments live in 8 bits: the seed's default `adamw_8bit`, for real.

The scheme is bitsandbytes' block-wise 8-bit Adam (Dettmers et al., 2022): each moment is cut
into blocks of 256 values, each block keeps one fp32 scale (its largest magnitude) and 8-bit
codes; a step dequantizes, updates in fp32 and quantizes again. The 8-bit code here is float8
e4m3 (3 mantissa bits, 2^-9..448 range per block) rather than bitsandbytes' dynamic-tree map:
one cast instead of a 256-entry search, and the same ~4-bits-of-precision error. The second
moment is stored as its square root, which halves the dynamic range it needs, so a tiny `v`
next to a large one in its block does not flush to zero (where `m / sqrt(v)` would explode).

Memory per parameter: 2 bytes of state (+ 8 bytes of scales per 256 values) instead of 8.

Why our own: bitsandbytes' 8-bit optimizers need its CUDA/CPU native library; torchao's
`AdamW8bit` runs on this CPU but compiles one kernel per parameter shape and took 1.6-2.6 s a
step on an r=32 SmolLM2 adapter (fp32 AdamW: 0.2 s). This one works on flat buffers in chunks
that stay in cache, so a step is a few dozen vectorised ops whatever the number of tensors.

State layout: per parameter (so checkpoints store it like AdamW's, one entry per tensor)
`exp_avg_q`/`exp_avg_sq_q` (float8, padded to whole blocks) and `exp_avg_scale`/
`exp_avg_sq_scale` (fp32, one per block); those are views into one flat buffer per dtype,
rebuilt when a checkpoint load replaced them.
"""

from __future__ import annotations

import math

import torch

from frontier_signal.backend import native

BLOCK = 256
CHUNK_BLOCKS = 4096  # 1 Mi values a chunk: the fp32 temporaries stay in cache
CODE_DTYPE = torch.float8_e4m3fn
CODE_MAX = 448.0  # largest finite e4m3 value
STATE_KEYS = ("exp_avg_q", "exp_avg_scale", "exp_avg_sq_q", "exp_avg_sq_scale")


def _padded(numel: int) -> int:
    return -(-numel // BLOCK) * BLOCK


def quantize(values_NB: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_blocks, BLOCK] fp32 → (float8 codes [n_blocks, BLOCK], fp32 scales [n_blocks])."""
    scale_N = values_NB.abs().amax(dim=1) / CODE_MAX
    scale_N = torch.where(scale_N > 0, scale_N, torch.ones_like(scale_N))
    codes = (values_NB * scale_N.reciprocal()[:, None]).to(CODE_DTYPE)  # mul: 3x a div's speed
    return codes, scale_N


def _native_ops(params: list[torch.Tensor]):
    """Our C++ ops where the fused step applies (contiguous fp32 CPU weights and gradients)."""
    return native.fp32_ops([*params, *(p.grad for p in params)])


_WORKSPACE: dict[torch.device, torch.Tensor] = {}


def _workspace(values: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient, update) flat fp32 buffers of `values` each, kept between steps and shared
    by every optimizer on the device (the engine steps them one at a time). A fresh 39 MB
    buffer costs its page faults on every step: ~50 ms of an r=32 SmolLM2 adapter's ~200."""
    buffer = _WORKSPACE.get(device)
    if buffer is None or buffer.numel() < 2 * values:
        buffer = _WORKSPACE[device] = torch.empty(2 * values, device=device)
    return buffer[:values], buffer[values : 2 * values]


def dequantize(codes_NB: torch.Tensor, scale_N: torch.Tensor) -> torch.Tensor:
    """fp32 values of the codes times their block's scale: exactly `codes.float() * scale`.

    torch converts float8 to float32 one value at a time on CPU (7-11 ms per Mi values here),
    so the codes are rewritten as the float16 with the same sign, exponent and mantissa bits
    (e4m3's 4 exponent bits with bias 7 fit float16's 5 with bias 15: x 2^8 restores the
    value, subnormals included), which converts in vector instructions: 2-3 ms per Mi.
    """
    bits = codes_NB.view(torch.uint8).to(torch.int16)
    half_bits = ((bits & 0x80) << 8) | ((bits & 0x7F) << 7)
    return half_bits.view(torch.float16).float().mul_(256.0).mul_(scale_N[:, None])


class AdamW8bit(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias correction) with block-wise 8-bit moments.

    Args:
        params: the parameters (fp32 master weights).
        lr, betas, eps, weight_decay: as `torch.optim.AdamW`.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self._flat: dict[int, dict[str, torch.Tensor]] = {}
        self._flat_ids: dict[int, list[int]] = {}  # whose parameters each group's buffers hold

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's Optimizer.step contract
        loss = closure() if closure is not None else None
        self.step_many([self])
        return loss

    @staticmethod
    @torch.no_grad()
    def step_many(optimizers: list[AdamW8bit]) -> None:
        """One step of every optimizer (each with its own state, step count and settings):
        each group's 8-bit update runs on flat buffers (a few dozen vectorised ops whatever
        its tensor count) and moves its weights in one multi-tensor decay and add. The same
        bits as stepping each optimizer alone."""
        for optimizer in optimizers:
            for index, group in enumerate(optimizer.param_groups):
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                ops = _native_ops(params)
                if ops is not None:
                    optimizer._native_step(ops, index, group, params)
                    continue
                steps = optimizer._group_update(index, group, params)
                decay = group["lr"] * group["weight_decay"]
                if decay:
                    torch._foreach_mul_(params, 1 - decay)
                torch._foreach_add_(params, steps)

    def _layout(self, params: list[torch.Tensor]) -> list[tuple[int, int]]:
        offsets, start = [], 0
        for p in params:
            offsets.append((start, p.numel()))
            start += _padded(p.numel())
        return offsets

    def _flat_state(self, index: int, params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The group's flat state buffers, (re)built when the per-parameter views are stale."""
        flat = self._flat.get(index)
        layout = self._layout(params)
        fresh = flat is None or self._flat_ids.get(index) != [id(p) for p in params]
        if flat is not None and not fresh:
            for p, (start, _numel) in zip(params, layout, strict=True):
                view = self.state[p].get("exp_avg_q")
                if view is None or view.data_ptr() != flat["exp_avg_q"][start:].data_ptr():
                    fresh = True
                    break
        if flat is not None and not fresh:
            return flat
        total = layout[-1][0] + _padded(layout[-1][1]) if layout else 0
        device = params[0].device
        flat = {
            "exp_avg_q": torch.zeros(total, dtype=CODE_DTYPE, device=device),
            "exp_avg_sq_q": torch.zeros(total, dtype=CODE_DTYPE, device=device),
            "exp_avg_scale": torch.ones(total // BLOCK, device=device),
            "exp_avg_sq_scale": torch.ones(total // BLOCK, device=device),
            "step": torch.zeros((), device=device),
        }
        for p, (start, numel) in zip(params, layout, strict=True):
            old = self.state[p]
            end, blocks = (
                start + _padded(numel),
                slice(start // BLOCK, (start + _padded(numel)) // BLOCK),
            )
            views = {
                "exp_avg_q": flat["exp_avg_q"][start:end],
                "exp_avg_sq_q": flat["exp_avg_sq_q"][start:end],
                "exp_avg_scale": flat["exp_avg_scale"][blocks],
                "exp_avg_sq_scale": flat["exp_avg_sq_scale"][blocks],
            }
            if all(key in old for key in STATE_KEYS):  # restored from a checkpoint
                for key in STATE_KEYS:
                    views[key].copy_(old[key].reshape(views[key].shape).to(views[key].dtype))
                flat["step"].fill_(float(old.get("step", 0)))
            elif "exp_avg" in old and "exp_avg_sq" in old:  # fp32 AdamW state (older runs)
                padding = _padded(numel) - numel
                for moment, name in (
                    (old["exp_avg"], "exp_avg"),
                    (old["exp_avg_sq"].sqrt(), "exp_avg_sq"),
                ):
                    values = torch.nn.functional.pad(moment.reshape(-1).float(), (0, padding))
                    codes, scale = quantize(values.view(-1, BLOCK))
                    views[f"{name}_q"].copy_(codes.reshape(-1))
                    views[f"{name}_scale"].copy_(scale)
                flat["step"].fill_(float(old.get("step", 0)))
            self.state[p] = {**views, "step": flat["step"]}
        self._flat[index] = flat
        self._flat_ids[index] = [id(p) for p in params]
        return flat

    def _native_step(self, ops, index: int, group: dict, params: list[torch.Tensor]) -> None:
        """The whole step of a group (moments, update, decay) in our C++ op, one pass a block."""
        flat = self._flat_state(index, params)
        beta1, beta2 = group["betas"]
        flat["step"] += 1
        step = float(flat["step"])
        ops.adamw8bit_step(
            params,
            [p.grad for p in params],
            flat["exp_avg_q"].view(torch.uint8),
            flat["exp_avg_scale"],
            flat["exp_avg_sq_q"].view(torch.uint8),
            flat["exp_avg_sq_scale"],
            [start for start, _numel in self._layout(params)],
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            1 - beta1**step,
            math.sqrt(1 - beta2**step),
        )

    def _group_update(
        self, index: int, group: dict, params: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Advance the group's moments; the update of each parameter (decay not included)."""
        flat = self._flat_state(index, params)
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        flat["step"] += 1
        step = float(flat["step"])
        correction1 = 1 - beta1**step
        root_correction2 = math.sqrt(1 - beta2**step)

        layout = self._layout(params)
        grad, update = _workspace(flat["exp_avg_q"].numel(), params[0].device)
        for p, (start, numel) in zip(params, layout, strict=True):
            grad[start : start + numel].copy_(p.grad.reshape(-1))  # type: ignore[union-attr]
            grad[start + numel : start + _padded(numel)].zero_()

        m_codes = flat["exp_avg_q"].view(-1, BLOCK)
        v_codes = flat["exp_avg_sq_q"].view(-1, BLOCK)
        grad_NB, update_NB = grad.view(-1, BLOCK), update.view(-1, BLOCK)
        for first in range(0, m_codes.shape[0], CHUNK_BLOCKS):
            rows = slice(first, first + CHUNK_BLOCKS)
            g = grad_NB[rows]
            m = dequantize(m_codes[rows], flat["exp_avg_scale"][rows])
            v = dequantize(v_codes[rows], flat["exp_avg_sq_scale"][rows]).square_()
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            root_v = v.sqrt_()
            denominator = (root_v / root_correction2).add_(eps)
            torch.div(m, denominator, out=update_NB[rows]).mul_(-lr / correction1)
            m_codes[rows], flat["exp_avg_scale"][rows] = quantize(m)
            v_codes[rows], flat["exp_avg_sq_scale"][rows] = quantize(root_v)

        return [
            update[start : start + numel].view_as(p)
            for p, (start, numel) in zip(params, layout, strict=True)
        ]
