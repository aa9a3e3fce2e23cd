"""Per-token losses with Tinker's semantics (protocol doc §7; tinker-docs "Loss functions").

Every loss maps the model's target log-probs `p` (and, for RL, the sampler's `q` and the
advantages `A`) to a per-token loss `ℓ_t`, multiplied by the token weight `w_t` (1 when absent)
and forced to exactly 0 where `w_t == 0`. The objective of a request is `Σ_t ℓ_t`; the engine
then applies the request's reduction (sum, or mean over weight).

| loss | ℓ_t |
|---|---|
| cross_entropy | −w·p |
| importance_sampling | −w·r·A, r = exp(p − q) |
| ppo | −w·min(r·A, clip(r, lo, hi)·A), lo/hi = clip_low_threshold/clip_high_threshold (0.8/1.2) |
| cispo | −w·sg(clip(r, lo, hi))·p·A (same thresholds) |
| dro | −w·(p·A − ½·β·(p − q)²), β = loss_fn_config["beta"] (default 0.05) |
"""

from __future__ import annotations

import torch

from frontier_signal.engine.types import LOSS_FNS

RL_LOSSES = ("importance_sampling", "ppo", "cispo", "dro")
CONFIG_KEYS = {
    "cross_entropy": (),
    "importance_sampling": (),
    "ppo": ("clip_low_threshold", "clip_high_threshold"),
    "cispo": ("clip_low_threshold", "clip_high_threshold"),
    "dro": ("beta",),
}
DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2, "beta": 0.05}


def validate_loss(loss_fn: str, config: dict[str, float]) -> None:
    """Raise ValueError for an unknown loss or a config key it does not take."""
    if loss_fn not in LOSS_FNS:
        raise ValueError(f"unknown loss_fn {loss_fn!r}; supported: {', '.join(LOSS_FNS)}")
    unknown = set(config) - set(CONFIG_KEYS[loss_fn])
    if unknown:
        allowed = ", ".join(CONFIG_KEYS[loss_fn]) or "none"
        raise ValueError(
            f"loss_fn_config keys {sorted(unknown)} are not used by {loss_fn!r} "
            f"(allowed: {allowed})"
        )
    low = config.get("clip_low_threshold", DEFAULTS["clip_low_threshold"])
    high = config.get("clip_high_threshold", DEFAULTS["clip_high_threshold"])
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= clip_low_threshold <= clip_high_threshold, got {low}, {high}")


def per_token_loss(
    loss_fn: str,
    logprobs: torch.Tensor,
    weights: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    config: dict[str, float],
) -> torch.Tensor:
    """ℓ_t for flat fp32 tensors of one length; see the module table."""
    p, w = logprobs, weights
    if loss_fn == "cross_entropy":
        loss = -p
    else:
        q, advantage = sampler_logprobs, advantages
        ratio = torch.exp(p - q)
        low = config.get("clip_low_threshold", DEFAULTS["clip_low_threshold"])
        high = config.get("clip_high_threshold", DEFAULTS["clip_high_threshold"])
        if loss_fn == "importance_sampling":
            loss = -ratio * advantage
        elif loss_fn == "ppo":
            loss = -torch.minimum(ratio * advantage, ratio.clamp(low, high) * advantage)
        elif loss_fn == "cispo":
            loss = -ratio.clamp(low, high).detach() * p * advantage
        elif loss_fn == "dro":
            beta = config.get("beta", DEFAULTS["beta"])
            loss = -(p * advantage - 0.5 * beta * (p - q) ** 2)
        else:  # validated earlier; keep the error explicit anyway
            raise ValueError(f"unknown loss_fn {loss_fn!r}")
    return torch.where(w == 0, torch.zeros_like(loss), w * loss)
