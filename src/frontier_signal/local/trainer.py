"""`LLMTrainer`: fine-tune a base model on conversation texts in this process, no server.

LoRA (the default) goes through the engine: one run, `forward_backward` + `optim_step` per
batch, `export_merged` to save a plain transformers folder. Full fine-tuning is not an engine
feature (the engine is LoRA-only and shares frozen base weights between runs), so it is a
plain fp32 torch loop on a private copy of the model here, fed by the same renderer.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from frontier_signal.backend import models
from frontier_signal.backend.checkpoints import atomic_write_folder
from frontier_signal.engine import operations as ops
from frontier_signal.engine.errors import InvalidInputError, ModelNotFoundError
from frontier_signal.engine.rendering import render_example
from frontier_signal.engine.types import Datum, LoraSpec, OptimizerSpec, RunConfig
from frontier_signal.engine.worker import DirectWorker
from frontier_signal.local.data_handler import EmptyDatasetError, InvalidRecordError

logger = logging.getLogger(__name__)

METHODS = ("lora", "full")
DEFAULT_LEARNING_RATES = {"full": 5e-5, "lora": 2e-4}


def _example(text: str) -> dict:
    messages = getattr(text, "messages", None)
    return {"messages": messages} if messages else {"text": str(text)}


class LLMTrainer:
    """Fine-tune `model_name` with LoRA (default) or full fine-tuning.

    Args:
        model_name: a registered model name (`frontier-signal models`) or a transformers folder.
        device: `cpu`, `cuda`, or `auto`.
        method: `lora` (through the engine) or `full` (every weight, fp32).
        lora_rank, lora_alpha: the adapter's shape (LoRA only).
        dtype: compute dtype for LoRA (`auto`: bf16 where the CPU has it; full is always fp32).
        seed: shuffling and adapter initialisation.

    Raises:
        FileNotFoundError: `model_name` is neither a known model nor an existing folder.
        ValueError: an unknown method.
    """

    def __init__(
        self,
        model_name: str = models.DEFAULT_MODEL,
        device: str = "cpu",
        method: str = "lora",
        lora_rank: int = 16,
        lora_alpha: float = 32.0,
        dtype: str = "auto",
        seed: int = 0,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.device, self.method, self.dtype, self.seed = device, method, dtype, seed
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        self.max_length = 256
        self.history: list[float] = []
        self._load(model_name)

    def _load(self, model_name: str) -> None:
        try:
            models.resolve_model(model_name)
        except ModelNotFoundError as exc:
            raise FileNotFoundError(str(exc)) from None
        self.model_name = model_name
        self.tokenizer = models.load_tokenizer(model_name)
        self._optimizer: torch.optim.Optimizer | None = None
        if self.method == "lora":
            self.worker = DirectWorker(device=self.device, dtype=self.dtype)
            config = RunConfig(
                model_name,
                LoraSpec(rank=self.lora_rank, alpha=self.lora_alpha, seed=self.seed),
                OptimizerSpec(learning_rate=DEFAULT_LEARNING_RATES["lora"], beta2=0.999, eps=1e-8),
                max_seq_length=4096,
            )
            self.run_id = self.worker.run(ops.CreateRun("local", config)).run_id
            self.model = None
        else:
            self.model = models.load_hf_model(model_name, dtype=torch.float32).to(self.device)
            for parameter in self.model.parameters():
                parameter.requires_grad_(True)

    def prepare_dataset(self, texts: list[str], max_length: int = 256) -> list[Datum]:
        """Tokenize texts into training datums (truncated to `max_length` tokens).

        Texts from `ConversationDataHandler.format_for_training` train on assistant turns
        only; any other string trains on every token.

        Raises:
            EmptyDatasetError: no texts.
            InvalidRecordError: a text with nothing to train on (its index is named).
        """
        if not texts:
            raise EmptyDatasetError("no training texts: the dataset is empty")
        datums = []
        for index, text in enumerate(texts):
            try:
                datums.append(
                    render_example(self.tokenizer, _example(text), max_length, index).datum
                )
            except InvalidInputError as exc:
                raise InvalidRecordError(str(exc).replace("example", "text", 1)) from None
        self.max_length = max_length
        return datums

    def train(
        self,
        train_texts: list[str],
        num_epochs: int = 3,
        batch_size: int = 4,
        learning_rate: float | None = None,
        max_length: int | None = None,
        progress: bool = True,
    ) -> list[float]:
        """Train for `num_epochs` over shuffled batches; returns the mean loss of each epoch.

        Args:
            learning_rate: None means the method's default (2e-4 LoRA, 5e-5 full).
            max_length: tokens per example (default: the last `prepare_dataset` value, 256).
            progress: show a tqdm bar with the running loss.
        """
        if num_epochs <= 0 or batch_size <= 0:
            raise ValueError(
                f"num_epochs and batch_size must be > 0, got {num_epochs}, {batch_size}"
            )
        if learning_rate is None:
            learning_rate = DEFAULT_LEARNING_RATES[self.method]
        datums = self.prepare_dataset(train_texts, max_length or self.max_length)
        order = list(range(len(datums)))
        shuffler = random.Random(self.seed + len(self.history))
        batches_per_epoch = (len(datums) + batch_size - 1) // batch_size
        epoch_losses = []
        with tqdm(
            total=num_epochs * batches_per_epoch,
            desc="training",
            unit="batch",
            disable=not progress,
        ) as bar:
            for epoch in range(num_epochs):
                shuffler.shuffle(order)
                loss_sum = weight_sum = 0.0
                for start in range(0, len(order), batch_size):
                    batch = [datums[i] for i in order[start : start + batch_size]]
                    loss, weight = self._step(batch, learning_rate)
                    loss_sum, weight_sum = loss_sum + loss * weight, weight_sum + weight
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}")
                    bar.update()
                epoch_losses.append(loss_sum / weight_sum)
                logger.info("epoch %d/%d: loss %.4f", epoch + 1, num_epochs, epoch_losses[-1])
        self.history.extend(epoch_losses)
        return epoch_losses

    def _step(self, batch: list[Datum], learning_rate: float) -> tuple[float, float]:
        """One optimizer step on a batch; returns (mean loss per trained token, trained tokens)."""
        weight = sum(sum(d.weights) for d in batch)
        if self.method == "lora":
            result = self.worker.run(
                ops.ForwardBackward(
                    self.run_id,
                    self.model_name,
                    batch,
                    reduction="mean",
                    accumulate=False,
                    token_outputs=False,
                )
            )
            self.worker.run(ops.OptimStep(self.run_id, {"learning_rate": learning_rate}))
            return result.loss, weight
        return self._full_step(batch, learning_rate), weight

    def _full_step(self, batch: list[Datum], learning_rate: float) -> float:
        assert self.model is not None
        model = self.model
        model.train()
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(
                model.parameters(), lr=learning_rate, weight_decay=0.0
            )
        for group in self._optimizer.param_groups:
            group["lr"] = learning_rate
        length = max(len(d.input_tokens) for d in batch)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
        targets = torch.zeros((len(batch), length), dtype=torch.long)
        weights = torch.zeros((len(batch), length))
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, datum in enumerate(batch):  # right padding: positions stay 0..n-1
            n = len(datum.input_tokens)
            input_ids[row, :n] = torch.tensor(datum.input_tokens)
            targets[row, :n] = torch.tensor(datum.target_tokens)
            weights[row, :n] = torch.tensor(datum.weights or [1.0] * n)
            mask[row, :n] = 1
        device = next(model.parameters()).device
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        token_loss = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="none"
        )
        weights = weights.to(device).flatten()
        loss = (token_loss * weights).sum() / weights.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        model.eval()
        return float(loss.detach())

    def save_model(self, output_dir: str | Path = "./trained_model") -> str:
        """Write a plain transformers folder (LoRA folded in) plus tokenizer; returns its path."""
        output = Path(output_dir)
        if self.method == "lora":
            self.worker.run(ops.Export(self.run_id, str(output), "merged"))
        else:
            assert self.model is not None
            model, tokenizer = self.model, self.tokenizer

            def write(tmp: Path) -> None:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)

            atomic_write_folder(output, write)
        logger.info("saved the trained model to %s", output)
        return str(output_dir)

    def load_trained_model(self, model_path: str | Path) -> None:
        """Continue from a saved folder: it becomes this trainer's base model (optimizer reset).

        Raises:
            FileNotFoundError: no transformers folder at `model_path`.
        """
        folder = Path(model_path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no trained model at {folder} (config.json missing)")
        if self.method == "lora":
            self.worker.run(ops.DeleteRun(self.run_id))
        self._load(str(folder))
