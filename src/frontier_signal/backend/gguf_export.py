"""GGUF files for llama.cpp and Ollama: a merged model (f16 or q8_0) and a LoRA adapter.

What it writes, with the `gguf` package's GGUFWriter:
    model-<type>.gguf     the run's LoRA folded into the base weights, with the tokenizer and the
                          chat template: `llama-cli -m model-f16.gguf`, or Ollama's `FROM`.
    base-<type>.gguf      the base model alone, in the layout the adapter expects (when the adapter
                          trains `lm_head` of a tied model, `output.weight` is written out).
    adapter-lora.gguf     the adapter alone, in llama.cpp's LoRA format (general.type "adapter",
                          adapter.type "lora", adapter.lora.alpha; f32 tensors `<name>.lora_a`
                          and `<name>.lora_b`):
                          `llama-cli -m base-f16.gguf --lora adapter-lora.gguf`.

Only Llama-architecture models with default rotary embeddings (SmolLM2, the tiny test model) and
BPE (gpt2-style) tokenizers are supported; anything else raises ValueError naming what is missing.
Hugging Face stores q_proj/k_proj rows in "rotate half" order, llama.cpp in interleaved pairs: the
rows of q/k weights (and of their lora_B) are permuted on the way out, as llama.cpp's converter
does.

It does not write atomically by itself (the caller writes into a temporary folder), quantize beyond
q8_0, or touch the engine's loaded weights (it reads fp32 copies).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from frontier_signal.backend import gguf_header

QUANT_TYPES = ("f16", "q8_0")
F16_MAX = 65504.0  # largest finite float16; q8_0 keeps each block's scale (max |w| / 127) in f16
ADAPTER_FILE = "adapter-lora.gguf"

# Hugging Face Llama module → llama.cpp tensor (without ".weight").
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def model_file(qtype: str) -> str:
    return f"model-{qtype}.gguf"


def base_file(qtype: str) -> str:
    return f"base-{qtype}.gguf"


def gguf_name(module: str) -> str:
    """`model.layers.3.self_attn.q_proj` → `blk.3.attn_q` (the tensor is `<that>.weight`)."""
    if module in _TOP_NAMES:
        return _TOP_NAMES[module]
    match = _LAYER.match(module)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise ValueError(f"no GGUF name for module {module!r} (only Llama modules are mapped)")
    return f"blk.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"


def permute_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder the rows of a q/k projection (or its lora_B) from HF's rotate-half layout to
    llama.cpp's interleaved one: per head, rows (0..d/2, d/2..d) → (0, d/2, 1, d/2+1, ...)."""
    out = weight.shape[0]
    return (
        weight.reshape(heads, 2, out // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def check_supported(config) -> None:
    """Raise ValueError unless llama.cpp's `llama` architecture can hold this model."""
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(
            f"GGUF export supports Llama-architecture base models (SmolLM2, Llama); this run's "
            f"base model is {getattr(config, 'model_type', '?')!r}: use mode='merged' instead"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(
            f"GGUF export supports default rotary embeddings only, not {rope['rope_type']!r}: "
            f"use mode='merged' and llama.cpp's convert_hf_to_gguf.py"
        )


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _add_model_metadata(writer, config, name: str, file_type: int) -> None:
    writer.add_name(name)
    writer.add_type("model")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)


def _add_tokenizer(writer, tokenizer, vocab_size: int, pre: str) -> None:
    """BPE vocabulary, merges, special ids, chat template (llama.cpp's `gpt2` tokenizer model)."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model.get("type") != "BPE":
        raise ValueError(
            f"GGUF export writes BPE (gpt2-style) tokenizers only; this one is {model.get('type')}"
        )
    by_id = {index: token for token, index in model["vocab"].items()}
    added = {item["id"]: item for item in backend.get("added_tokens", [])}
    tokens, types = [], []
    for index in range(vocab_size):
        if index in added:
            tokens.append(added[index]["content"])
            special = added[index].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token is not None:
            add(int(token))
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(bool(ids) and ids[0] == tokenizer.bos_token_id)
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _add_weight(writer, name: str, tensor: torch.Tensor, qtype: str) -> None:
    import gguf

    data = tensor.detach().float().cpu().numpy()
    as_q8 = qtype == "q8_0" and data.shape[-1] % 32 == 0
    if data.ndim > 1:
        _check_range(name, data, qtype, F16_MAX * 127 if as_q8 else F16_MAX)
    if data.ndim == 1:  # norms stay f32, as llama.cpp's converter keeps them
        writer.add_tensor(name, data.astype(np.float32))
    elif as_q8:
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _check_range(name: str, data: np.ndarray, qtype: str, limit: float) -> None:
    """ValueError unless every value fits the GGUF type: numpy would write inf (with only a
    warning) where a run's weights have grown past float16."""
    peak = float(np.abs(data).max(initial=0.0))
    if not peak <= limit:  # also NaN
        raise ValueError(
            f"the merged weight {name} reaches |w| = {peak:.3g}, beyond what GGUF {qtype} can "
            f"hold ({limit:.4g}); the run's weights have diverged (a smaller learning rate, or "
            "an earlier checkpoint, gives weights this format can store)"
        )


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_model(
    path: Path, model, tokenizer, qtype: str, pre: str, name: str, write_output: bool
) -> None:
    """A whole Llama model as one GGUF. `write_output` writes `output.weight` even when the
    model ties it to the embeddings (a LoRA on `lm_head` needs a tensor of its own)."""
    import gguf

    if qtype not in QUANT_TYPES:
        raise ValueError(f"GGUF type must be one of {', '.join(QUANT_TYPES)}, got {qtype!r}")
    config = model.config
    check_supported(config)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_model_metadata(writer, config, name, int(file_type))
    _add_tokenizer(writer, tokenizer, config.vocab_size, pre)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        module = key.removesuffix(".weight")
        if key == "lm_head.weight" and tied and not write_output:
            continue
        if not key.endswith(".weight") or "rotary_emb" in key:
            continue
        if module.endswith("q_proj"):
            tensor = permute_rows(tensor, config.num_attention_heads)
        elif module.endswith("k_proj"):
            tensor = permute_rows(tensor, config.num_key_value_heads)
        _add_weight(writer, f"{gguf_name(module)}.weight", tensor, qtype)
    _finish(writer)


def write_adapter(path: Path, adapter, config, name: str) -> None:
    """The adapter as a llama.cpp LoRA GGUF (f32). llama.cpp scales by alpha / rank, as we do."""
    import gguf

    check_supported(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter.spec.alpha))
    for module, pair in adapter.pairs.items():
        lora_a = pair.lora_A.detach().float().cpu()  # (rank, in): ggml ne = [in, rank]
        lora_b = pair.lora_B.detach().float().cpu()  # (out, rank): ggml ne = [rank, out]
        if module.endswith("q_proj"):
            lora_b = permute_rows(lora_b, config.num_attention_heads)
        elif module.endswith("k_proj"):
            lora_b = permute_rows(lora_b, config.num_key_value_heads)
        tensor = f"{gguf_name(module)}.weight"
        writer.add_tensor(f"{tensor}.lora_a", lora_a.contiguous().numpy())
        writer.add_tensor(f"{tensor}.lora_b", lora_b.contiguous().numpy())
    _finish(writer)


def tokenizer_pre(gguf_source: Path | None) -> str:
    """llama.cpp's pre-tokenizer name: the one the base model's own GGUF records (SmolLM2's is
    "smollm"), else "default"."""
    if gguf_source is None:
        return "default"
    try:
        return gguf_header.string_field(gguf_source, "tokenizer.ggml.pre") or "default"
    except (ValueError, EOFError):
        pass
    from gguf import GGUFReader  # parses the whole header: seconds for a large vocabulary

    field = GGUFReader(str(gguf_source)).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else "default"


def modelfile(model_name: str, chat_template_is_chatml: bool) -> str:
    """An Ollama Modelfile for the merged GGUF (ChatML template when the tokenizer uses it)."""
    lines = [f"FROM ./{model_name}"]
    if chat_template_is_chatml:
        lines += [
            'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}',
            "{{ .Content }}<|im_end|>",
            "{{ end }}<|im_start|>assistant",
            '"""',
            'PARAMETER stop "<|im_end|>"',
        ]
    return "\n".join(lines) + "\n"
