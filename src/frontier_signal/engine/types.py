"""Internal engine types: plain dataclasses, validated once at the edge, no wire concerns.

The API faces (Signal, Tinker, OpenAI) convert their pydantic wire schemas into these with small
named functions; the engine and backend only ever see these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

LossFn = Literal["cross_entropy", "importance_sampling", "ppo", "cispo", "dro"]
LOSS_FNS: tuple[str, ...] = ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro")
Reduction = Literal["sum", "mean"]
CheckpointKind = Literal["training", "sampler"]
StopReason = Literal["stop", "length", "cancelled"]  # cancelled: its caller left (never sent)

ATTENTION_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")
UNEMBED_MODULES: tuple[str, ...] = ("lm_head",)
ALL_TARGET_MODULES: tuple[str, ...] = ATTENTION_MODULES + MLP_MODULES + UNEMBED_MODULES
_SHORT_NAMES = {name.removesuffix("_proj"): name for name in ATTENTION_MODULES + MLP_MODULES}


def normalize_target_modules(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Map user spellings (`q`, `q_proj`, `lm_head`) to module names, in a stable order.

    Raises:
        ValueError: a name that is not a LoRA-able module, with the valid ones listed.
    """
    wanted = set()
    for name in names:
        full = _SHORT_NAMES.get(name, name)
        if full not in ALL_TARGET_MODULES:
            raise ValueError(
                f"unknown LoRA target module {name!r}; valid: {', '.join(ALL_TARGET_MODULES)}"
            )
        wanted.add(full)
    return tuple(m for m in ALL_TARGET_MODULES if m in wanted)


def target_modules_from_switches(
    train_attn: bool = True, train_mlp: bool = True, train_unembed: bool = True
) -> tuple[str, ...]:
    """The HPC-AI / Tinker switches as an explicit module list."""
    return (
        (ATTENTION_MODULES if train_attn else ())
        + (MLP_MODULES if train_mlp else ())
        + (UNEMBED_MODULES if train_unembed else ())
    )


@dataclass(frozen=True)
class LoraSpec:
    """The layout of one run's adapter. `alpha / rank` scales the LoRA term (no rsLoRA)."""

    rank: int = 32
    alpha: float = 64.0
    dropout: float = 0.0
    seed: int = 0
    target_modules: tuple[str, ...] = ATTENTION_MODULES + MLP_MODULES

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer hyperparameters. `grad_clip_norm=0` disables clipping.

    `adamw_8bit` is AdamW with block-wise 8-bit moments (backend/adamw_8bit.py): a quarter
    of AdamW's optimizer-state memory, the same update up to the moments' rounding.
    """

    kind: Literal["adamw", "adamw_8bit", "sgd"] = "adamw"
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to create a run (and recreate it from a checkpoint)."""

    base_model: str
    lora: LoraSpec = field(default_factory=LoraSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    max_seq_length: int = 2048
    # True: recompute activations in backward (less memory, slower); False: only for batches
    # whose activations would exceed the engine's activation budget.
    gradient_checkpointing: bool = False


@dataclass
class Datum:
    """One training sequence, Tinker's `Datum` flattened: all lists have the input's length T.

    `target_tokens[t]` is the token predicted at position t (the caller already shifted).
    Empty `weights` means 1.0 everywhere; empty `sampler_logprobs` / `advantages` mean absent
    (the RL losses require them).
    """

    input_tokens: list[int]
    target_tokens: list[int]
    weights: list[float] = field(default_factory=list)
    sampler_logprobs: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)


@dataclass
class ForwardBackwardRequest:
    """A forward(+backward) of one run over some datums.

    Args:
        reduction: `sum` (Tinker: the weighted per-token losses summed) or `mean` (Signal: the
            sum divided by the total weight of the request).
        accumulate: False clears the run's pending gradient first (Signal's default).
        forward_only: compute outputs without gradients.
    """

    run_id: str
    datums: list[Datum]
    loss_fn: str = "cross_entropy"
    loss_fn_config: dict[str, float] = field(default_factory=dict)
    reduction: Reduction = "sum"
    accumulate: bool = True
    forward_only: bool = False
    # False: only the totals are wanted, not per-token log-probs and losses (Signal's face):
    # the unembedding then runs on the weighted tokens only, and the result's lists are empty.
    token_outputs: bool = True


@dataclass
class ForwardBackwardResult:
    """Per-datum outputs plus totals. `loss` is the reduced objective this request contributed."""

    run_id: str
    logprobs: list[list[float]]
    elementwise_loss: list[list[float]]
    loss: float
    loss_sum: float
    weight_sum: float
    num_tokens: int
    step: int
    grad_norm: float
    grad_max_abs: float
    grad_nonfinite: int
    num_params: int

    @property
    def metrics(self) -> dict[str, float]:
        return {"loss:sum": self.loss_sum, "num_tokens:sum": float(self.num_tokens)}


@dataclass
class OptimStepResult:
    run_id: str
    step: int
    learning_rate: float
    grad_norm: float
    clipped: bool


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. `temperature=0` is greedy; `top_k=-1` and `top_p=1` are off.

    `presence_penalty` / `frequency_penalty` (OpenAI semantics, -2..2, over generated tokens) and
    `repetition_penalty` (HF semantics, > 0, prompt tokens included; 1.0 is off) reshape the
    logits before temperature. `top_logprobs` (0..20) asks for that many most likely
    alternatives, with log-probs, for every generated token.

    `min_p` (0..1, 0 is off) drops tokens less likely than `min_p` times the most likely one.
    `logit_bias` adds (token id, bias in -100..100) to the raw logits, OpenAI's semantics.
    `grammar` is an llguidance grammar (engine/structured.py builds them from JSON schemas and
    tools); when set, only tokens the grammar allows are chosen, and the row stops ("stop") once
    the grammar is complete.
    `ignore_eos` keeps the model's end-of-sequence token out of the stops the request builder
    adds (service/sampling.py); the engine itself stops only at `stop_token_ids`.
    """

    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    top_logprobs: int = 0
    min_p: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str = ""
    ignore_eos: bool = False


@dataclass
class SampleRequest:
    """Sample continuations of one prompt.

    `model` is a run id or a base model name; `checkpoint` (a path) wins over both and samples
    a saved adapter on that base model. The prompt is `prompt_tokens`, or `prompt_text` (raw
    text to continue, tokenized with the model's tokenizer) when no tokens are given.
    """

    model: str
    prompt_tokens: list[int] = field(default_factory=list)
    params: SamplingParams = field(default_factory=SamplingParams)
    num_samples: int = 1
    prompt_logprobs: bool = False
    checkpoint: str = ""
    prompt_text: str = ""


# Called by the sampler after each generated token: (request index, sample index, token id,
# log-prob). The scheduler uses it to stream tokens while a batch is still decoding.
TokenCallback = Callable[[int, int, int, float], None]


@dataclass
class SampledSequence:
    """One generated sequence. `top_logprobs[i]` lists (token id, log-prob) alternatives for
    token i, most likely first; empty when `SamplingParams.top_logprobs` is 0."""

    tokens: list[int]
    text: str
    logprobs: list[float]
    stop_reason: StopReason
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)


@dataclass
class SampleResult:
    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None


@dataclass
class RunInfo:
    """What the engine knows about a loaded run."""

    run_id: str
    config: RunConfig
    step: int
    dtype: str
    num_params: int
    memory_bytes: int
    has_pending_gradient: bool


@dataclass
class CheckpointInfo:
    path: str
    kind: CheckpointKind
    step: int
    size_bytes: int
    sha256: str = ""  # of `folder_digest` (backend/checkpoints.py), where the writer computed it
