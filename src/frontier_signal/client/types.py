"""Typed request models of the Signal API: `RunConfig` and `TrainingExample`.

These are the SDK's wire schemas for what the user sends; they validate locally so that a typo
fails before a request is made. Responses stay plain dicts (the seeds index them like
`result["loss"]`). Nothing here performs I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Optimizer = Literal["adamw", "adamw_8bit", "sgd"]
SaveMode = Literal["adapter", "merged", "gguf", "gguf-q8_0"]
SAVE_MODES = ("adapter", "merged", "gguf", "gguf-q8_0")


class RunConfig(BaseModel):
    """Configuration of a training run (the body of `POST /v1/runs`).

    Defaults are those of the SDK contract. Unknown fields are rejected.

    Attributes:
        base_model: Name of a base model the server has (see `SignalClient.list_models()`).
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha (the update is scaled by `lora_alpha / lora_r`).
        lora_dropout: Dropout on the LoRA input during training.
        lora_target_modules: Module names to adapt; None means every attention and MLP linear.
        optimizer: `"adamw"`, `"adamw_8bit"` or `"sgd"` (the run status says what really ran).
        learning_rate: Default learning rate of `optim_step`.
        weight_decay: Decoupled weight decay.
        max_seq_length: Longest training sequence in tokens.
        bf16: Compute in bfloat16 where the hardware supports it (else fp32, said in the status).
        gradient_checkpointing: Trade speed for memory during backward.
        seed: Seed of the adapter initialisation, or None for a random one.
    """

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(min_length=1)
    lora_r: int = Field(32, gt=0)
    lora_alpha: float = Field(64, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = None
    optimizer: Optimizer = "adamw_8bit"
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    max_seq_length: int = Field(2048, gt=0)
    bf16: bool = True
    gradient_checkpointing: bool = True
    seed: int | None = None


class ChatMessage(BaseModel):
    """One turn of a chat example."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class TrainingExample(BaseModel):
    """One training example: plain `text` (every token trained) or chat `messages`.

    Exactly one of the two must be set. Chat examples are rendered with the model's chat
    template on the server; their assistant turns are trained, so at least one is required.

    Example:
        >>> TrainingExample(text="The quick brown fox.")
        >>> TrainingExample(messages=[{"role": "user", "content": "Hi"},
        ...                           {"role": "assistant", "content": "Hello!"}])
    """

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    messages: list[ChatMessage] | None = None

    @model_validator(mode="after")
    def _exactly_one_field(self) -> TrainingExample:
        if (self.text is None) == (self.messages is None):
            raise ValueError("a training example needs exactly one of `text` or `messages`")
        if self.text is not None and not self.text:
            raise ValueError("`text` must not be empty")
        if self.messages is not None and not any(m.role == "assistant" for m in self.messages):
            raise ValueError(
                "`messages` needs at least one assistant turn (assistant turns are what is trained)"
            )
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to the server."""
        return self.model_dump(exclude_none=True)
