"""An exported ONNX folder loaded for decoding: onnxruntime + tokenizers + jinja2, no torch.

`OnnxCausalLM` renders chats with the folder's own chat template (the same Jinja template
transformers applies, with the same environment settings), runs prefill and one-token decode
steps through the KV cache, and picks tokens like transformers' `generate`: repetition penalty
over prompt and generated tokens (HF semantics), then temperature, then top-p; temperature 0
is greedy. Batches are left-padded with an attention mask and explicit positions, so a row's
tokens do not depend on the other rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class DecodeSettings:
    """Token choice. `temperature=0` is greedy; `top_p=1` and `repetition_penalty=1` are off.

    `min_new_tokens` keeps the stop tokens out until that many tokens exist (as in
    transformers); the benchmark uses it so every engine decodes the same number of tokens.
    """

    max_new_tokens: int = 50
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.2
    min_new_tokens: int = 0

    def check(self) -> None:
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def choose_token(
    logits_V: np.ndarray, seen: list[int], settings: DecodeSettings, rng: np.random.Generator
) -> int:
    """One token from next-token logits, transformers-style (see the module docstring)."""
    logits_V = logits_V.astype(np.float64, copy=True)
    if settings.repetition_penalty != 1.0 and seen:
        ids = np.unique(np.asarray(seen))
        scores = logits_V[ids]
        penalty = settings.repetition_penalty
        logits_V[ids] = np.where(scores < 0, scores * penalty, scores / penalty)
    if settings.temperature == 0:
        return int(np.argmax(logits_V))
    logits_V /= settings.temperature
    probs_V = np.exp(logits_V - logits_V.max())
    probs_V /= probs_V.sum()
    if settings.top_p < 1.0:
        order = np.argsort(-probs_V, kind="stable")
        cumulative = np.cumsum(probs_V[order])
        keep = cumulative - probs_V[order] < settings.top_p  # keep the token that crosses top_p
        keep[0] = True
        kept = np.zeros_like(probs_V)
        kept[order[keep]] = probs_V[order[keep]]
        probs_V = kept / kept.sum()
    return int(rng.choice(probs_V.shape[0], p=probs_V))


class OnnxCausalLM:
    """A decoder exported by `ONNXConverter`, ready to generate.

    Args:
        folder: the ONNX folder.
        threads: onnxruntime intra-op threads (0 = its default, one per physical core).

    Raises:
        FileNotFoundError: the folder, `model.onnx` or `tokenizer.json` is missing.
    """

    def __init__(self, folder: str | Path, threads: int = 0):
        import onnxruntime
        from tokenizers import Tokenizer

        self.folder = Path(folder).expanduser()
        for required in (ONNX_FILE, "tokenizer.json"):
            if not (self.folder / required).is_file():
                raise FileNotFoundError(
                    f"no {required} in {self.folder}: export a model with "
                    "`frontier-signal local export` (ONNXConverter.convert_to_onnx) first"
                )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(
            str(self.folder / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_")]
        self.present_names = [o.name for o in self.session.get_outputs()][1:]
        first_past = self.session.get_inputs()[3]
        self.kv_heads, self.head_dim = int(first_past.shape[1]), int(first_past.shape[3])
        config = _read_json(self.folder / "config.json")
        generation = _read_json(self.folder / "generation_config.json")
        tokenizer_config = _read_json(self.folder / "tokenizer_config.json")
        self.special_tokens = {
            key: _token_text(tokenizer_config.get(key)) for key in ("bos_token", "eos_token")
        }
        self.stop_ids = set(_ids(generation.get("eos_token_id") or config.get("eos_token_id")))
        eos_id = self.tokenizer.token_to_id(self.special_tokens["eos_token"] or "")
        if eos_id is not None:
            self.stop_ids.add(eos_id)
        pad = generation.get("pad_token_id", config.get("pad_token_id"))
        self.pad_id = int(pad) if pad is not None else min(self.stop_ids, default=0)
        self.chat_template = self._read_chat_template(tokenizer_config)

    def _read_chat_template(self, tokenizer_config: dict):
        template_file = self.folder / "chat_template.jinja"
        source = (
            template_file.read_text()
            if template_file.is_file()
            else tokenizer_config.get("chat_template")
        )
        if not source:
            return None
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        # The settings transformers uses for chat templates, so both render the same text.
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        environment.filters["tojson"] = lambda value, indent=None: json.dumps(
            value, ensure_ascii=False, indent=indent
        )
        environment.globals["raise_exception"] = raise_exception
        return environment.from_string(source)

    # ----- text ----------------------------------------------------------------------------
    def render_chat(self, messages: list[dict]) -> str:
        """The prompt text for the assistant's next turn."""
        if self.chat_template is None:  # a base model without a template: plain turns
            return "".join(f"{m['content']}\n" for m in messages)
        return self.chat_template.render(
            messages=messages, add_generation_prompt=True, **self.special_tokens
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # ----- decoding ------------------------------------------------------------------------
    def _run(self, input_ids, mask, positions, past):
        feed = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        feed.update(zip(self.past_names, past, strict=True))
        outputs = self.session.run(None, feed)
        return outputs[0][:, -1], outputs[1:]

    def generate(
        self, prompts: list[list[int]], settings: DecodeSettings, seeds: list[int | None]
    ) -> list[list[int]]:
        """New tokens for each prompt (stop token excluded), all prompts decoded as one batch."""
        outputs: list[list[int]] = [[] for _ in prompts]
        for step in self.steps(prompts, settings, seeds):
            for row, token in enumerate(step):
                if token is not None:
                    outputs[row].append(token)
        return outputs

    def stream(self, prompt: list[int], settings: DecodeSettings, seed: int | None = None):
        """The new tokens of one prompt, each yielded as soon as it is chosen (stop excluded)."""
        for (token,) in self.steps([prompt], settings, [seed]):
            if token is not None:
                yield token

    def steps(self, prompts: list[list[int]], settings: DecodeSettings, seeds: list[int | None]):
        """Decode all prompts as one batch; yield each step's new token per row (None for a row
        that has stopped). `generate` and `stream` both consume this, so they agree."""
        settings.check()
        batch, length = len(prompts), max(len(p) for p in prompts)
        input_ids = np.full((batch, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            input_ids[row, length - len(prompt) :] = prompt
            mask[row, length - len(prompt) :] = 1
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        past = [
            np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32) for _ in self.past_names
        ]
        logits_BV, past = self._run(input_ids, mask, positions, past)
        rngs = [np.random.default_rng(seed) for seed in seeds]
        outputs: list[list[int]] = [[] for _ in prompts]
        done = [False] * batch
        last_positions = positions[:, -1:]
        for step in range(settings.max_new_tokens):
            next_ids = np.full((batch, 1), self.pad_id, dtype=np.int64)
            chosen: list[int | None] = [None] * batch
            for row in range(batch):
                if done[row]:
                    continue
                seen = prompts[row] + outputs[row]
                logits_V = logits_BV[row]
                if len(outputs[row]) < settings.min_new_tokens and self.stop_ids:
                    logits_V = logits_V.copy()
                    logits_V[list(self.stop_ids)] = -np.inf
                token = choose_token(logits_V, seen, settings, rngs[row])
                if token in self.stop_ids:
                    done[row] = True
                    continue
                outputs[row].append(token)
                next_ids[row, 0] = chosen[row] = token
            if any(token is not None for token in chosen):
                yield chosen
            if all(done) or step == settings.max_new_tokens - 1:
                break
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            last_positions = last_positions + 1
            logits_BV, past = self._run(next_ids, mask, last_positions, past)


class TextStream:
    """Incremental detokenization: feed token ids, get the new text. A piece never ends inside a
    multi-byte character (byte-level BPE splits one across tokens; the decoder shows the partial
    bytes as U+FFFD, so such text is held until the character completes). Leading and trailing
    whitespace is dropped, so the pieces join to `decode(tokens).strip()`."""

    def __init__(self, decode):
        self._decode = decode
        self.tokens: list[int] = []
        self._sent = 0  # characters of the decoded text already handed out (or skipped)
        self._started = False

    def push(self, token: int) -> str:
        self.tokens.append(token)
        text = self._decode(self.tokens)
        if text.endswith("\ufffd"):
            return ""
        return self._take(text)

    def finish(self) -> str:
        """The rest once decoding ended (text held for an unfinished character, if any)."""
        return self._take(self._decode(self.tokens))

    def _take(self, text: str) -> str:
        if not self._started:
            stripped = text.lstrip()
            self._sent = len(text) - len(stripped)
            if not stripped:
                return ""
            self._started = True
        # Trailing whitespace is held back (shown once more text follows it; dropped at the end).
        end = len(text.rstrip())
        piece = text[self._sent : end]
        self._sent = max(self._sent, end)
        return piece
