"""Checkpoint files: PEFT-format adapters, optimizer state, merged exports. Writes are atomic.

Layout of a checkpoint folder:
    adapter_config.json          PEFT LoraConfig (peft.PeftModel.from_pretrained loads it)
    adapter_model.safetensors    PEFT key names: base_model.model.<module>.lora_{A,B}.weight
    frontier_signal.json         kind ("training" | "sampler"), step, run config
    optimizer.safetensors        training checkpoints only: per-parameter optimizer state

Merged exports are a transformers folder (`export_merged`) or a folder of GGUFs for llama.cpp /
Ollama (`export_gguf`, file layout in backend/gguf_export.py).

Every write goes to a temporary sibling folder, each file is fsynced, and the folder is renamed
into place, so a crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from frontier_signal.backend.lora import Adapter
from frontier_signal.engine.errors import CheckpointNotFoundError
from frontier_signal.engine.types import (
    CheckpointInfo,
    CheckpointKind,
    LoraSpec,
    OptimizerSpec,
    RunConfig,
    normalize_target_modules,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
META = "frontier_signal.json"
OPTIMIZER = "optimizer.safetensors"
FORMAT_VERSION = 1


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def folder_digest(folder: Path) -> tuple[int, str]:
    """(total bytes, sha256 over every file's relative path and contents, in sorted order)."""
    digest, size = hashlib.sha256(), 0
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def atomic_write_folder(folder: Path, write) -> int:
    """Run `write(tmp_folder)`, then move it to `folder` atomically. Returns the size in bytes."""
    return _write_folder(folder, write, digest=False)[0]


def _synced_digest(tmp: Path) -> tuple[int, str]:
    """`folder_digest(tmp)` while another thread fsyncs it: the fsync waits on the disk, the
    hash reads the page cache (a sampler checkpoint per optimizer step paid both in turn)."""
    failed: list[BaseException] = []

    def sync() -> None:
        try:
            _fsync_tree(tmp)
        except BaseException as error:  # noqa: BLE001 - raised below, in the caller's thread
            failed.append(error)

    syncing = threading.Thread(target=sync, name="fsync")
    syncing.start()
    try:
        return folder_digest(tmp)
    finally:
        syncing.join()
        if failed:
            raise failed[0]


def _write_folder(folder: Path, write, digest: bool) -> tuple[int, str]:
    """`atomic_write_folder`, returning (size, sha256 of `folder_digest` or "")."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    sha256 = ""
    try:
        write(tmp)
        tmp.chmod(0o755)
        if digest:
            size, sha256 = _synced_digest(tmp)
        else:
            _fsync_tree(tmp)
        if folder.exists():
            # Replace: move the old one aside first so the name is never empty for long.
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        fd = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not digest:
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return size, sha256


def peft_config(spec: LoraSpec, base_model: str) -> dict:
    """The adapter_config.json PEFT writes for an equivalent LoraConfig."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": list(spec.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }


def save_checkpoint(
    folder: Path,
    adapter: Adapter,
    config: RunConfig,
    step: int,
    kind: CheckpointKind,
    optimizer: torch.optim.Optimizer | None = None,
    weights_dtype: torch.dtype = torch.float32,
) -> CheckpointInfo:
    """Write a `training` (adapter + optimizer + step) or `sampler` (adapter only) checkpoint,
    with its digest. `weights_dtype` (sampler only): bf16 where the run computes in bf16."""
    if kind == "training":
        weights_dtype = torch.float32  # the master weights: a resumed run continues exactly
    weights = {
        name: p.detach().to(weights_dtype).cpu().contiguous()
        for name, p in adapter.named_parameters()
    }
    optimizer_tensors: dict[str, torch.Tensor] = {}
    if kind == "training" and optimizer is not None:
        names = {id(p): name for name, p in adapter.named_parameters()}
        for param, state in optimizer.state.items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    # A copy: optimizer state may be views of shared buffers (adamw_8bit).
                    optimizer_tensors[f"{names[id(param)]}::{key}"] = value.detach().cpu().clone()
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "step": step,
        "run_config": asdict(config),
    }

    def write(tmp: Path) -> None:
        save_file(weights, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(
            json.dumps(peft_config(adapter.spec, config.base_model), indent=2)
        )
        (tmp / META).write_text(json.dumps(meta, indent=2))
        if kind == "training":
            save_file(optimizer_tensors, str(tmp / OPTIMIZER))

    size, sha256 = _write_folder(folder, write, digest=True)
    return CheckpointInfo(str(folder), kind, step, size, sha256)


def read_checkpoint(folder: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(adapter_config, frontier_signal meta or {}, adapter tensors by module path + A/B).

    Raises:
        CheckpointNotFoundError: no such folder, or not a PEFT LoRA adapter.
    """
    folder = Path(folder)
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointNotFoundError(
            f"no adapter checkpoint at {folder} (need {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})"
        )
    adapter_config = json.loads(config_path.read_text())
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise CheckpointNotFoundError(
            f"{folder} is a {adapter_config['peft_type']} adapter, only LORA is supported"
        )
    meta = json.loads((folder / META).read_text()) if (folder / META).exists() else {}
    tensors = {}
    for key, value in load_file(str(weights_path)).items():
        # base_model.model.<module>.lora_A[.<adapter name>].weight → (<module>, "A")
        module, _, rest = key.removeprefix("base_model.model.").partition(".lora_")
        tensors[f"{module}:{rest[0]}"] = value
    return adapter_config, meta, tensors


def spec_from_adapter_config(adapter_config: dict, seed: int = 0) -> LoraSpec:
    """The adapter layout recorded in a checkpoint (wins over the loading run's own layout)."""
    unsupported = [
        option
        for option in ("use_rslora", "use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern")
        if adapter_config.get(option)
    ]
    if adapter_config.get("bias", "none") != "none" or adapter_config.get("modules_to_save"):
        unsupported.append("bias/modules_to_save")
    if unsupported:
        raise CheckpointNotFoundError(
            f"adapter uses {', '.join(unsupported)}, which this server does not serve; save a "
            "plain LoRA (LoraConfig without those options)"
        )
    targets = adapter_config["target_modules"]
    if isinstance(targets, str):  # PEFT allows a regex; we only write lists
        raise CheckpointNotFoundError(f"target_modules regex {targets!r} is not supported")
    return LoraSpec(
        rank=int(adapter_config["r"]),
        alpha=float(adapter_config.get("lora_alpha", adapter_config["r"])),
        dropout=float(adapter_config.get("lora_dropout", 0.0)),
        seed=seed,
        target_modules=normalize_target_modules([t.rsplit(".", 1)[-1] for t in targets]),
    )


def run_config_from_meta(meta: dict, fallback_base: str, spec: LoraSpec) -> RunConfig:
    saved = meta.get("run_config") or {}
    optimizer = OptimizerSpec(**saved["optimizer"]) if "optimizer" in saved else OptimizerSpec()
    return RunConfig(
        base_model=saved.get("base_model", fallback_base),
        lora=spec,
        optimizer=optimizer,
        max_seq_length=int(saved.get("max_seq_length", 2048)),
        gradient_checkpointing=bool(saved.get("gradient_checkpointing", False)),
    )


def load_adapter_weights(adapter: Adapter, tensors: dict[str, torch.Tensor]) -> None:
    """Copy checkpoint tensors into an adapter of the same layout."""
    expected = {f"{name}:{ab}" for name in adapter.pairs for ab in "AB"}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise CheckpointNotFoundError(
            f"checkpoint does not match its adapter_config (missing {missing[:3]}, extra "
            f"{extra[:3]})"
        )
    with torch.no_grad():
        for name, pair in adapter.pairs.items():
            for param, ab in ((pair.lora_A, "A"), (pair.lora_B, "B")):
                value = tensors[f"{name}:{ab}"]
                if value.shape != param.shape:
                    raise CheckpointNotFoundError(
                        f"{name}.lora_{ab}: checkpoint shape {tuple(value.shape)} != "
                        f"{tuple(param.shape)} (a different base model?)"
                    )
                param.copy_(value)


def load_optimizer_state(folder: Path, adapter: Adapter, optimizer: torch.optim.Optimizer) -> bool:
    """Restore optimizer state saved by `save_checkpoint`; False when the folder has none."""
    path = Path(folder) / OPTIMIZER
    if not path.exists():
        return False
    saved = load_file(str(path))
    optimizer.state.clear()
    for name, param in adapter.named_parameters():
        state = {
            key.split("::", 1)[1]: value.to(param.device)
            for key, value in saved.items()
            if key.split("::", 1)[0] == name
        }
        if state:
            optimizer.state[param] = state
    return True


def checkpoint_kind(meta: dict) -> CheckpointKind:
    return "training" if meta.get("kind") == "training" else "sampler"


@torch.no_grad()
def merged_model(base_model: str, adapter: Adapter, untie_lm_head: bool = True):
    """The base model in fp32 with the LoRA folded into its weights (a fresh copy)."""
    from frontier_signal.backend import models

    model = models.load_hf_model(base_model, dtype=torch.float32)
    if untie_lm_head and "lm_head" in adapter.pairs and model.config.tie_word_embeddings:
        # Folding LoRA into a tied unembedding would also change the input embeddings: untie.
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    for name, pair in adapter.pairs.items():
        linear = model.get_submodule(name)
        delta = pair.lora_B.detach().float().cpu() @ pair.lora_A.detach().float().cpu()
        linear.weight.add_(delta * pair.scale)
    return model


def export_merged(folder: Path, base_model: str, adapter: Adapter) -> int:
    """A plain transformers folder with the LoRA folded into fp32 base weights, plus tokenizer."""
    from frontier_signal.backend import models

    model = merged_model(base_model, adapter)
    tokenizer = models.load_tokenizer(base_model)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_write_folder(folder, write)


@torch.no_grad()
def export_gguf(folder: Path, config: RunConfig, adapter: Adapter, step: int, qtype: str) -> dict:
    """A folder of GGUFs (see backend/gguf_export.py): merged model, base model, LoRA adapter,
    an Ollama Modelfile and frontier_signal.json. Returns {file name: size in bytes}."""
    from frontier_signal.backend import gguf_export, models

    base_model = config.base_model
    base = models.load_hf_model(base_model, dtype=torch.float32)
    gguf_export.check_supported(base.config)
    tokenizer = models.load_tokenizer(base_model)
    pre = gguf_export.tokenizer_pre(models.source_gguf(base_model))
    name = Path(base_model).name or base_model
    merged = merged_model(base_model, adapter)
    chatml = "<|im_start|>" in (tokenizer.chat_template or "")
    meta = {"format_version": FORMAT_VERSION, "kind": "gguf", "step": step, "gguf_type": qtype}
    meta["run_config"] = asdict(config)

    def write(tmp: Path) -> None:
        gguf_export.write_model(
            tmp / gguf_export.model_file(qtype),
            merged,
            tokenizer,
            qtype,
            pre,
            f"{name} (fine-tuned, step {step})",
            write_output=False,
        )
        gguf_export.write_model(
            tmp / gguf_export.base_file(qtype),
            base,
            tokenizer,
            qtype,
            pre,
            name,
            write_output="lm_head" in adapter.pairs,
        )
        gguf_export.write_adapter(
            tmp / gguf_export.ADAPTER_FILE, adapter, base.config, f"{name} LoRA, step {step}"
        )
        (tmp / "Modelfile").write_text(gguf_export.modelfile(gguf_export.model_file(qtype), chatml))
        (tmp / META).write_text(json.dumps(meta, indent=2))

    atomic_write_folder(folder, write)
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
