"""`ChatInterface`: chat with an exported model on onnxruntime, with conversation logs.

Runs on onnxruntime + tokenizers only (no torch, no transformers), so it fits an edge box.
With `log_conversations=True` every turn is written through to `log_file` as soon as it is
made: `{"input", "output", "timestamp"}` records appended to a JSON array (atomic rewrite), a
format `ConversationDataHandler.load_from_json` reads back for retraining.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from frontier_signal.local.data_handler import DataFileError, write_json_atomic
from frontier_signal.local.onnx_runtime import DecodeSettings, OnnxCausalLM, TextStream

EXIT_WORDS = ("exit", "quit")


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class ChatInterface:
    """Generate replies from an ONNX folder written by `ONNXConverter.convert_to_onnx`.

    Args:
        model_path: the ONNX folder.
        device: only `cpu` (onnxruntime's CPU provider).
        max_length: bound on prompt + reply tokens; older chat turns are dropped to fit.
        log_conversations: write every turn through to `log_file`.
        log_file: a JSON array of `{"input", "output", "timestamp"}`; an existing one is
            appended to.

    Raises:
        FileNotFoundError: no ONNX model at `model_path`.
        DataFileError: `log_file` exists but is not a JSON array.
    """

    def __init__(
        self,
        model_path: str | Path = "./onnx_model",
        device: str = "cpu",
        max_length: int = 256,
        log_conversations: bool = False,
        log_file: str | Path = "conversation_log.json",
    ):
        if device != "cpu":
            raise ValueError(f"device {device!r} is not supported: the ONNX chat runs on 'cpu'")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.model = OnnxCausalLM(model_path)
        self.model_path, self.device, self.max_length = str(model_path), device, max_length
        self.log_conversations, self.log_file = log_conversations, str(log_file)
        self.conversation_log: list[dict] = []
        # Entries each log file held before this session wrote to it (read once per file), so
        # writes append to a file's history and saving twice never duplicates a turn.
        self._earlier_entries: dict[Path, list[dict]] = {}
        if log_conversations:
            self._earlier(Path(self.log_file))

    # ----- logs ----------------------------------------------------------------------------
    def _earlier(self, path: Path) -> list[dict]:
        if path not in self._earlier_entries:
            self._earlier_entries[path] = self._read_log(path)
        return self._earlier_entries[path]

    @staticmethod
    def _read_log(path: Path) -> list[dict]:
        if not path.exists():
            return []
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFileError(f"log file {path} is not valid JSON: {exc}") from None
        if not isinstance(entries, list):
            raise DataFileError(f"log file {path} must hold a JSON array")
        return entries

    def _log(self, prompt: str, reply: str) -> None:
        self.conversation_log.append({"input": prompt, "output": reply, "timestamp": _now()})
        if self.log_conversations:
            path = Path(self.log_file)
            write_json_atomic(path, self._earlier(path) + self.conversation_log)

    def get_conversation_log(self) -> list[dict]:
        """This interface's turns so far (`input`, `output`, `timestamp`), oldest first."""
        return [dict(entry) for entry in self.conversation_log]

    def save_conversation_log(self, file_path: str | Path | None = None) -> str:
        """Append this session's turns to `file_path` (default `log_file`): the entries the file
        had before this session, then this session's. Returns the path. Saving again rewrites
        the same array (no duplicates); with logging on, `log_file` is already current.

        Raises:
            DataFileError: the file exists but is not a JSON array.
        """
        path = Path(file_path or self.log_file)
        write_json_atomic(path, self._earlier(path) + self.conversation_log)
        return str(path)

    # ----- generation ----------------------------------------------------------------------
    def _prompt_tokens(self, messages: list[dict]) -> list[int]:
        """Render and tokenize, dropping the oldest exchanges until a reply fits."""
        while True:
            tokens = self.model.encode(self.model.render_chat(messages))
            if len(tokens) < self.max_length:
                return tokens
            if len(messages) <= 1:
                raise ValueError(
                    f"the prompt is {len(tokens)} tokens; max_length={self.max_length} leaves "
                    "no room for a reply (raise max_length or shorten the prompt)"
                )
            messages = messages[2:]  # one user + assistant exchange

    def _fit(self, prompts: list[list[int]], settings: DecodeSettings) -> DecodeSettings:
        room = self.max_length - max(len(p) for p in prompts)
        if room < settings.max_new_tokens:
            settings = DecodeSettings(
                room, settings.temperature, settings.top_p, settings.repetition_penalty
            )
        return settings

    def _generate(
        self,
        conversations: list[list[dict]],
        settings: DecodeSettings,
        seed: int | None,
    ) -> list[str]:
        prompts = [self._prompt_tokens(messages) for messages in conversations]
        settings = self._fit(prompts, settings)
        seeds = [None if seed is None else seed + row for row in range(len(prompts))]
        outputs = self.model.generate(prompts, settings, seeds)
        return [self.model.decode(tokens).strip() for tokens in outputs]

    def generate_response(
        self,
        prompt: str,
        max_new_tokens: int = 50,
        temperature: float = 0.7,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
    ) -> str:
        """The assistant's reply to one user message (no history).

        Args:
            temperature: 0 is greedy.
            repetition_penalty: transformers semantics, over prompt and reply tokens.
            seed: makes sampling reproducible.
        """
        settings = DecodeSettings(max_new_tokens, temperature, top_p, repetition_penalty)
        reply = self._generate([[{"role": "user", "content": prompt}]], settings, seed)[0]
        self._log(prompt, reply)
        return reply

    def _stream(
        self, messages: list[dict], settings: DecodeSettings, seed: int | None
    ) -> Iterator[str]:
        """Text pieces of the reply, each as soon as its tokens decode to whole characters."""
        prompt = self._prompt_tokens(messages)
        text = TextStream(self.model.decode)
        for token in self.model.stream(prompt, self._fit([prompt], settings), seed):
            piece = text.push(token)
            if piece:
                yield piece
        rest = text.finish()
        if rest:
            yield rest

    def generate_response_stream(
        self,
        prompt: str,
        max_new_tokens: int = 50,
        temperature: float = 0.7,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
    ) -> Iterator[str]:
        """`generate_response`, yielding the reply in pieces as onnxruntime produces them.

        The pieces join to what `generate_response` returns with the same arguments (a piece
        never splits a multi-byte character). The turn is logged once the stream is exhausted.
        Settings are checked at the first `next()`, like any generator's code.
        """
        settings = DecodeSettings(max_new_tokens, temperature, top_p, repetition_penalty)
        pieces: list[str] = []
        for piece in self._stream([{"role": "user", "content": prompt}], settings, seed):
            pieces.append(piece)
            yield piece
        self._log(prompt, "".join(pieces))

    def batch_generate(
        self,
        prompts: list[str],
        max_new_tokens: int = 50,
        temperature: float = 0.7,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        seed: int | None = None,
    ) -> list[str]:
        """Replies to many prompts, decoded as one left-padded batch; input order."""
        if not prompts:
            return []
        settings = DecodeSettings(max_new_tokens, temperature, top_p, repetition_penalty)
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        replies = self._generate(conversations, settings, seed)
        for prompt, reply in zip(prompts, replies, strict=True):
            self._log(prompt, reply)
        return replies

    def chat(
        self,
        max_new_tokens: int = 50,
        temperature: float = 0.7,
        top_p: float = 0.9,
        repetition_penalty: float = 1.2,
        input_fn: Callable[[str], str] = input,
        output_fn: Callable[[str], None] = print,
        write_fn: Callable[[str], None] | None = None,
    ) -> None:
        """An interactive session that keeps the conversation's history.

        Replies are streamed: `write_fn` (default: stdout, flushed) gets "Assistant: ", each
        piece as it is generated, then a newline; `output_fn` gets the other lines.
        `exit`, `quit`, end of input (Ctrl-D) or Ctrl-C end it; `reset` clears the history.
        """
        write = write_fn or _write_stdout
        settings = DecodeSettings(max_new_tokens, temperature, top_p, repetition_penalty)
        history: list[dict] = []
        output_fn("Chat with the model. Type 'exit' or 'quit' to leave, 'reset' to start over.")
        while True:
            try:
                line = input_fn("You: ")
            except (EOFError, KeyboardInterrupt):
                output_fn("")
                break
            text = line.strip()
            if text.lower() in EXIT_WORDS:
                break
            if not text:
                continue
            if text.lower() == "reset":
                history = []
                output_fn("(history cleared)")
                continue
            messages = [*history, {"role": "user", "content": text}]
            try:
                reply = self._chat_turn(messages, settings, write)
            except KeyboardInterrupt:
                output_fn("")
                break
            except ValueError as exc:
                output_fn(f"error: {exc}")
                continue
            history = [*messages, {"role": "assistant", "content": reply}]
            self._log(text, reply)
        output_fn("Goodbye.")

    def _chat_turn(self, messages: list[dict], settings: DecodeSettings, write) -> str:
        stream = self._stream(messages, settings, None)
        first = next(stream, "")  # a too-long prompt raises here, before "Assistant: "
        pieces = [first]
        write(f"Assistant: {first}")
        try:
            for piece in stream:
                pieces.append(piece)
                write(piece)
        finally:
            write("\n")
        return "".join(pieces)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
