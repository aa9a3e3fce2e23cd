"""`ONNXConverter`: a transformers folder → a standalone ONNX folder for onnxruntime chat.

The ONNX folder holds `model.onnx` (a decoder with KV cache, inputs and outputs named as
optimum names them), the tokenizer and its chat template, `config.json`,
`generation_config.json` and `frontier_signal_onnx.json` (opset, KV layout, export time). It
does not need torch or transformers to run: `ChatInterface` reads it with onnxruntime and
tokenizers only.

Exporter: the TorchScript exporter (`torch.onnx.export(dynamo=False)`), because it emits
opset 14 directly; the dynamo exporter starts at opset 18 and needs `onnxscript`. See
docs/local.md for the decision and the measured parity.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
META_FILE = "frontier_signal_onnx.json"
# fp32 export vs the transformers forward in fp32: measured max |Δlogit| is ~1e-4 on SmolLM2
# (logits up to ~35) and ~3e-7 on the tiny model; 1e-3 leaves a 10x margin.
LOGITS_ATOL = 1e-3
VERIFY_PROMPT = (
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)


def resolve_model_folder(model_path: str | Path) -> Path:
    """A transformers folder for a path, or for a registered model name (SmolLM2's cache).

    Raises:
        FileNotFoundError: neither an existing folder with config.json nor a known model.
    """
    folder = Path(model_path).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a transformers model folder (no config.json)")
        return folder
    from frontier_signal.backend import models
    from frontier_signal.engine.errors import ModelNotFoundError

    try:
        source = models.resolve_model(str(model_path))
    except ModelNotFoundError as exc:
        raise FileNotFoundError(f"no model folder at {folder} ({exc})") from None
    if source.tiny_seed is not None:
        raise FileNotFoundError(
            f"{model_path!r} has no files; save it first (LLMTrainer(...).save_model())"
        )
    return models.model_folder(source)


def _share_tied_unembedding(model_proto, embedding_name: str) -> None:
    """Make the unembedding read the embedding matrix (Gemm transB=1), not a transposed copy.

    Constant folding turns `linear(x, embedding)` into MatMul with a transposed copy of the
    embedding: for SmolLM2 that is 113 MB of the file twice.
    """
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    initializers = {init.name: init for init in graph.initializer}
    embedding = initializers.get(embedding_name)
    if embedding is None:
        return
    rows, cols = embedding.dims
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        candidate = initializers[node.input[1]]
        if list(candidate.dims) != [cols, rows]:
            continue
        if not np.array_equal(numpy_helper.to_array(candidate).T, numpy_helper.to_array(embedding)):
            continue
        gemm = helper.make_node(
            "Gemm", [node.input[0], embedding_name], list(node.output), name=node.name, transB=1
        )
        node.CopyFrom(gemm)
        graph.initializer.remove(candidate)
        return


class ONNXConverter:
    """Export a trained (merged) transformers model to ONNX and check it.

    Args:
        model_path: a transformers folder (`LLMTrainer.save_model` writes one) or the name of
            a registered model.

    Raises:
        FileNotFoundError: the folder does not exist or is not a model folder.
    """

    def __init__(self, model_path: str | Path = "./trained_model"):
        self.model_folder = resolve_model_folder(model_path)
        self.model_path = str(model_path)
        self.onnx_path: str | None = None
        self._model = None

    def _load_model(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(
                str(self.model_folder), dtype=torch.float32
            )
            self._model = model.eval()
        return self._model

    def convert_to_onnx(
        self, output_dir: str | Path = "./onnx_model", opset_version: int = 14
    ) -> str:
        """Export to `output_dir` (written atomically); returns the folder path.

        Args:
            output_dir: the ONNX folder to write (replaced if it exists).
            opset_version: ONNX opset, 14 (default) to 20.
        """
        import onnx
        import torch
        from transformers import AutoTokenizer, GenerationConfig

        from frontier_signal.backend.checkpoints import atomic_write_folder
        from frontier_signal.local import onnx_export

        if not 14 <= opset_version <= 20:
            raise ValueError(f"opset_version must be between 14 and 20, got {opset_version}")
        model = self._load_model()
        wrapper = onnx_export.DecoderWithCache(model).eval()
        num_layers = model.config.num_hidden_layers
        past, present = onnx_export.kv_names(num_layers)
        tokenizer = AutoTokenizer.from_pretrained(str(self.model_folder))
        try:
            generation = GenerationConfig.from_pretrained(str(self.model_folder))
        except OSError:
            generation = GenerationConfig.from_model_config(model.config)
        started = time.perf_counter()

        def write(tmp: Path) -> None:
            path = tmp / ONNX_FILE
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(
                    wrapper,
                    onnx_export.example_inputs(model),
                    str(path),
                    input_names=["input_ids", "attention_mask", "position_ids", *past],
                    output_names=["logits", *present],
                    dynamic_axes=onnx_export.dynamic_axes(num_layers),
                    opset_version=opset_version,
                    dynamo=False,
                )
            proto = onnx.load(str(path))
            if model.config.tie_word_embeddings:
                _share_tied_unembedding(proto, "model.model.embed_tokens.weight")
            onnx.save(proto, str(path))
            model.config.save_pretrained(tmp)
            generation.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            meta = self._meta(model.config, opset_version, time.perf_counter() - started)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))

        atomic_write_folder(Path(output_dir), write)
        logger.info("exported %s to %s", self.model_path, output_dir)
        self.onnx_path = str(output_dir)
        return str(output_dir)

    def _meta(self, config, opset_version: int, export_seconds: float) -> dict:
        """The folder's frontier-signal-onnx.json: what wrote it and the KV cache's layout."""
        import torch

        return {
            "format": "frontier-signal-onnx-decoder",
            "format_version": 1,
            "source_model": self.model_path,
            "opset_version": opset_version,
            "exporter": f"torch.onnx TorchScript exporter (torch {torch.__version__})",
            "dtype": "float32",
            "num_layers": config.num_hidden_layers,
            "num_key_value_heads": config.num_key_value_heads,
            "head_dim": _head_dim(config),
            "kv_layout": "past_key_values.{i}.key|value -> present.{i}.key|value, "
            "[batch, num_key_value_heads, sequence, head_dim]",
            "export_seconds": round(export_seconds, 2),
        }

    def verify_onnx_model(
        self, onnx_path: str | Path | None = None, atol: float = LOGITS_ATOL
    ) -> bool:
        """Check the graph (onnx.checker, input/output names) and logits parity with PyTorch.

        Parity: the same prompt through the transformers forward and through onnxruntime,
        prefill then one decode step from the returned KV cache; every logit must be within
        `atol`. On a mismatch the max difference is logged and False returned.

        Raises:
            FileNotFoundError: no ONNX folder (or no model.onnx in it).
        """
        import onnx
        import onnxruntime
        import torch
        from transformers import AutoTokenizer

        from frontier_signal.local import onnx_export

        folder = Path(onnx_path or self.onnx_path or "./onnx_model")
        path = folder / ONNX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {ONNX_FILE} in {folder}")
        onnx.checker.check_model(str(path))
        model = self._load_model()
        past, present = onnx_export.kv_names(model.config.num_hidden_layers)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != ["input_ids", "attention_mask", "position_ids", *past] or outputs != [
            "logits",
            *present,
        ]:
            logger.error("unexpected ONNX inputs %s / outputs %s", inputs, outputs)
            return False
        tokenizer = AutoTokenizer.from_pretrained(str(self.model_folder))
        ids = tokenizer(VERIFY_PROMPT, add_special_tokens=False)["input_ids"]
        prompt, last = np.array([ids[:-1]], dtype=np.int64), ids[-1]
        with torch.no_grad():
            reference = model(input_ids=torch.tensor([ids])).logits.float().numpy()
        onnx_logits = _prefill_and_step(session, prompt, last, past, model.config)
        difference = float(np.abs(onnx_logits - reference).max())
        self.last_max_logit_difference = difference
        if difference > atol:
            logger.error(
                "ONNX logits differ from PyTorch by %.3g (tolerance %.1g)", difference, atol
            )
            return False
        logger.info("ONNX parity: max |Δlogit| = %.3g (tolerance %.1g)", difference, atol)
        return True

    def get_model_info(self, onnx_path: str | Path | None = None) -> dict:
        """The source model's shape, plus the ONNX file's opset, inputs, outputs, size and KV
        layout when it has been exported (by this converter or at `onnx_path`)."""
        config = json.loads((self.model_folder / "config.json").read_text())
        info: dict = {
            "model_path": self.model_path,
            "architecture": (config.get("architectures") or ["?"])[0],
            "model_type": config.get("model_type"),
            "num_layers": config.get("num_hidden_layers"),
            "hidden_size": config.get("hidden_size"),
            "num_attention_heads": config.get("num_attention_heads"),
            "num_key_value_heads": config.get("num_key_value_heads"),
            "vocab_size": config.get("vocab_size"),
        }
        model = self._load_model()
        info["num_parameters"] = sum(p.numel() for p in model.parameters())
        folder = onnx_path or self.onnx_path
        if folder and (Path(folder) / ONNX_FILE).is_file():
            info.update(onnx_file_info(Path(folder)))
        return info


def onnx_file_info(folder: Path) -> dict:
    """Opset, inputs/outputs with shapes, size, parameter count and KV layout of an export."""
    import onnx

    proto = onnx.load(str(folder / ONNX_FILE), load_external_data=False)

    def shape(value) -> list:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_param or d.dim_value for d in dims]

    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return {
        "onnx_path": str(folder),
        "opset_version": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "inputs": {v.name: shape(v) for v in proto.graph.input},
        "outputs": {v.name: shape(v) for v in proto.graph.output},
        "onnx_size_bytes": (folder / ONNX_FILE).stat().st_size,
        "onnx_parameters": int(sum(np.prod(init.dims) for init in proto.graph.initializer)),
        "kv_layout": meta.get("kv_layout"),
        "export_seconds": meta.get("export_seconds"),
    }


def _prefill_and_step(
    session, prompt: np.ndarray, last: int, past: list[str], config
) -> np.ndarray:
    """The ONNX logits of `prompt` (from an empty cache) then of `last` from the returned cache."""
    kv_heads, head_dim = config.num_key_value_heads, _head_dim(config)
    length = prompt.shape[1] + 1
    feed = {
        "input_ids": prompt,
        "attention_mask": np.ones_like(prompt),
        "position_ids": np.arange(prompt.shape[1], dtype=np.int64)[None],
    }
    feed.update({name: np.zeros((1, kv_heads, 0, head_dim), np.float32) for name in past})
    prefill = session.run(None, feed)
    step = {
        "input_ids": np.array([[last]], dtype=np.int64),
        "attention_mask": np.ones((1, length), dtype=np.int64),
        "position_ids": np.array([[length - 1]], dtype=np.int64),
    }
    step.update(dict(zip(past, prefill[1:], strict=True)))
    decoded = session.run(None, step)
    return np.concatenate([prefill[0], decoded[0]], axis=1)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
