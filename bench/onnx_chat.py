"""Chat decode speed: onnxruntime (our ONNX export) vs PyTorch eager `generate`, batch 1.

SmolLM2-135M-Instruct, the same chat prompts, greedy, exactly `--new-tokens` tokens each (no
early stop, so all do the same work), in one process. The engines take turns prompt by
prompt, so load from other work on a shared machine falls on all of them alike. Tokens/s is
new tokens over the whole `generate` call (prefill included, for all). onnxruntime has no
fast bf16 path on this CPU, so the headline ratio is fp32 ORT over fp32 eager; bf16 eager is
reported beside it. Also: export time, file size, logits parity, and an int8 dynamic
quantisation of the export (`onnxruntime.quantization.quantize_dynamic`, weights int8 per
channel, activations quantised per call) with its parity cost.

    .venv/bin/python bench/onnx_chat.py [--new-tokens 64] [--repeats 2] [--no-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a KV cache is in one paragraph.",
]


def _time_interleaved(generators: dict, prompts: list[list[int]], repeats: int) -> tuple:
    """Time every engine on every prompt, engines interleaved per prompt, so load from other
    work on a shared machine falls on all of them alike."""
    for generate in generators.values():
        generate(prompts[0][:8])  # warm-up: allocators, kernels, thread pools
    seconds = dict.fromkeys(generators, 0.0)
    tokens = dict.fromkeys(generators, 0)
    outputs: dict[str, list[list[int]]] = {name: [] for name in generators}
    for repeat in range(repeats):
        for prompt in prompts:
            for name, generate in generators.items():
                start = time.perf_counter()
                new = generate(prompt)
                seconds[name] += time.perf_counter() - start
                tokens[name] += len(new)
                if repeat == 0:
                    outputs[name].append(new)
    results = {
        name: {
            "tokens_per_second": tokens[name] / seconds[name],
            "tokens": tokens[name],
            "seconds": round(seconds[name], 2),
        }
        for name in generators
    }
    return results, outputs


def _torch_generate(model, new_tokens: int):
    import torch

    def generate(prompt: list[int]) -> list[int]:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=2,
            )
        return out[0, len(prompt) :].tolist()

    return generate


def _onnx_generate(folder: Path, new_tokens: int):
    from frontier_signal.local.onnx_runtime import DecodeSettings, OnnxCausalLM

    model = OnnxCausalLM(folder)
    settings = DecodeSettings(new_tokens, 0.0, 1.0, 1.0, min_new_tokens=new_tokens)
    return model, lambda prompt: model.generate([prompt], settings, [None])[0]


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Fraction of positions where two greedy runs agree, up to their first difference."""
    same = total = 0
    for x, y in zip(a, b, strict=True):
        total += len(x)
        for s, t in zip(x, y, strict=False):
            if s != t:
                break
            same += 1
    return same / total


def _prefill_logits(model, prompt: list[int]) -> np.ndarray:
    past = [np.zeros((1, model.kv_heads, 0, model.head_dim), np.float32) for _ in model.past_names]
    ids = np.array([prompt], dtype=np.int64)
    feed = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(len(prompt), dtype=np.int64)[None],
    }
    feed.update(zip(model.past_names, past, strict=True))
    return model.session.run(["logits"], feed)[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 quantised run")
    parser.add_argument("--workdir", default="", help="where to export (default: a temp dir)")
    args = parser.parse_args()

    import torch

    from frontier_signal.backend import models
    from frontier_signal.local.onnx_converter import ONNX_FILE, ONNXConverter

    folder = models.model_folder(models.resolve_model(MODEL))  # GGUF → cache, outside timing
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fs-onnx-bench-"))
    converter = ONNXConverter(folder)
    start = time.perf_counter()
    onnx_folder = Path(converter.convert_to_onnx(workdir / "onnx_model"))
    export_seconds = time.perf_counter() - start
    parity_ok = converter.verify_onnx_model(onnx_folder)
    info = converter.get_model_info(onnx_folder)

    tokenizer = models.load_tokenizer(MODEL)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    report: dict = {
        "model": MODEL,
        "batch": 1,
        "new_tokens_per_prompt": args.new_tokens,
        "prompts": len(prompts),
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "export_seconds": round(export_seconds, 2),
        "onnx_opset": info["opset_version"],
        "onnx_size_mib": round(info["onnx_size_bytes"] / 2**20, 1),
        "onnx_parameters": info["onnx_parameters"],
        "parity_max_abs_logit_diff_fp32": converter.last_max_logit_difference,
        "parity_ok": parity_ok,
    }
    generators = {
        "pytorch_eager_fp32": _torch_generate(
            models.load_hf_model(MODEL, dtype=torch.float32), args.new_tokens
        ),
        "pytorch_eager_bf16": _torch_generate(
            models.load_hf_model(MODEL, dtype=torch.bfloat16), args.new_tokens
        ),
    }
    ort_model, generators["onnxruntime_fp32"] = _onnx_generate(onnx_folder, args.new_tokens)
    int8_extra: dict = {}
    if not args.no_int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        int8_folder = workdir / "onnx_model_int8"
        int8_folder.mkdir(exist_ok=True)
        for item in onnx_folder.iterdir():
            if item.name != ONNX_FILE:
                (int8_folder / item.name).write_bytes(item.read_bytes())
        start = time.perf_counter()
        quantize_dynamic(
            onnx_folder / ONNX_FILE,
            int8_folder / ONNX_FILE,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        int8_model, generators["onnxruntime_int8_dynamic"] = _onnx_generate(
            int8_folder, args.new_tokens
        )
        int8_extra = {
            "quantisation": "onnxruntime quantize_dynamic: int8 weights per channel, "
            "activations quantised per call",
            "quantize_seconds": round(time.perf_counter() - start, 2),
            "onnx_size_mib": round((int8_folder / ONNX_FILE).stat().st_size / 2**20, 1),
            "max_abs_logit_diff_vs_fp32_prefill": max(
                float(np.abs(_prefill_logits(int8_model, p) - _prefill_logits(ort_model, p)).max())
                for p in prompts
            ),
        }
    results, outputs = _time_interleaved(generators, prompts, args.repeats)
    for name in ("onnxruntime_fp32", "onnxruntime_int8_dynamic", "pytorch_eager_bf16"):
        if name in results:
            results[name]["greedy_agreement_with_eager_fp32"] = _agreement(
                outputs[name], outputs["pytorch_eager_fp32"]
            )
    if int8_extra:
        results["onnxruntime_int8_dynamic"].update(int8_extra)
    report.update(results)
    eager = results["pytorch_eager_fp32"]["tokens_per_second"]
    report["ratio_onnxruntime_fp32_vs_eager_fp32 (target >= 1.5)"] = (
        results["onnxruntime_fp32"]["tokens_per_second"] / eager
    )
    report["ratio_onnxruntime_fp32_vs_eager_bf16"] = (
        results["onnxruntime_fp32"]["tokens_per_second"]
        / results["pytorch_eager_bf16"]["tokens_per_second"]
    )
    if "onnxruntime_int8_dynamic" in results:
        report["ratio_onnxruntime_int8_vs_eager_fp32"] = (
            results["onnxruntime_int8_dynamic"]["tokens_per_second"] / eager
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
