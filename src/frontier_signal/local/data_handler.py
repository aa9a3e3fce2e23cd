"""`ConversationDataHandler`: conversation records in and out of JSON, JSONL and CSV files.

A record is `{"input": str, "output": str}` (one user turn, one assistant reply) or
`{"messages": [{"role", "content"}, ...]}`; other keys (a chat log's `timestamp`) are ignored,
so conversation logs retrain directly. `format_for_training` renders records with the model's
chat template, the one the engine trains on and `ChatInterface` chats with.

This module imports no torch: the tokenizer is loaded only when formatting needs it.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """Bad conversation data; the message names the file, the record and the field."""


class InvalidRecordError(DataError):
    """One record is malformed."""


class DataFileError(DataError):
    """A data file cannot be parsed at all (not JSON, a CSV without the expected columns)."""


class EmptyDatasetError(DataError):
    """There is nothing to train on."""


class TrainingText(str):
    """A rendered conversation (a plain `str`) that remembers its messages.

    The trainer uses `messages` to train on the assistant turns only, exactly as the engine
    renders chats; a plain string trains on every token.
    """

    messages: list[dict]

    def __new__(cls, text: str, messages: list[dict]):
        instance = super().__new__(cls, text)
        instance.messages = messages
        return instance


def _where(index: int, source: str) -> str:
    return f"record {index}" + (f" of {source}" if source else "")


def normalize_record(record: object, index: int = 0, source: str = "") -> dict:
    """A validated copy of one record with only the keys that matter.

    Raises:
        InvalidRecordError: naming the record index, the file and the field.
    """
    where = _where(index, source)
    if not isinstance(record, dict):
        raise InvalidRecordError(f"{where}: expected an object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise InvalidRecordError(f"{where}: field 'messages' must be a non-empty list")
        for turn, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise InvalidRecordError(
                    f"{where}: field 'messages[{turn}].role' must be one of {ROLES}"
                )
            if not isinstance(message.get("content"), str):
                raise InvalidRecordError(
                    f"{where}: field 'messages[{turn}].content' must be a string"
                )
        if not any(m["role"] == "assistant" for m in messages):
            raise InvalidRecordError(
                f"{where}: field 'messages' has no assistant turn, so nothing to train on"
            )
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    for field in ("input", "output"):
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if field not in record else f"{value!r:.40}"
            raise InvalidRecordError(
                f"{where}: field {field!r} must be a non-empty string ({got}); a record is "
                "{'input', 'output'} or {'messages'}"
            )
    return {"input": record["input"], "output": record["output"]}


def record_messages(record: dict) -> list[dict]:
    """The chat messages of a normalized record."""
    if "messages" in record:
        return record["messages"]
    return [
        {"role": "user", "content": record["input"]},
        {"role": "assistant", "content": record["output"]},
    ]


def write_json_atomic(path: Path, payload: Any, lines: bool = False) -> None:
    """Write JSON (or JSONL: `payload` a list) to a temp file beside `path`, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            if lines:
                out.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in payload)
            else:
                json.dump(payload, out, indent=2, ensure_ascii=False)
                out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _existing_file(file_path: str | Path) -> Path:
    path = Path(file_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    return path


class ConversationDataHandler:
    """Load, validate, save and format conversation records.

    Args:
        tokenizer: a transformers tokenizer, a model name or folder whose tokenizer to use, or
            None for the bundled SmolLM2 tokenizer (loaded when `format_for_training` runs).
    """

    def __init__(self, tokenizer: object | None = None):
        self.conversations: list[dict] = []
        self._tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.conversations)

    # ----- adding and loading ------------------------------------------------------------
    def add_conversation(self, conversation: dict) -> None:
        """Add one `{"input", "output"}` or `{"messages"}` record (extra keys are ignored).

        Raises:
            InvalidRecordError: the record is malformed (the message names the field).
        """
        self.conversations.append(normalize_record(conversation, len(self.conversations)))

    def _add_all(self, records: list, source: str) -> int:
        # Validate every record first: a bad file adds nothing.
        normalized = [normalize_record(r, i, source) for i, r in enumerate(records)]
        self.conversations.extend(normalized)
        return len(normalized)

    def load_from_json(self, file_path: str | Path) -> int:
        """Append the records of a JSON array file; returns how many were added.

        Raises:
            FileNotFoundError: no such file.
            DataFileError: not valid JSON, or not an array.
            InvalidRecordError: a malformed record (index and field named); nothing is added.
        """
        path = _existing_file(file_path)
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFileError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(records, list):
            raise DataFileError(
                f"{path}: expected a JSON array of records, got {type(records).__name__}"
            )
        return self._add_all(records, str(path))

    def load_from_jsonl(self, file_path: str | Path) -> int:
        """Append the records of a JSON Lines file (blank lines skipped); returns the count."""
        path = _existing_file(file_path)
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}, line {number} is not valid JSON: {exc}") from None
        return self._add_all(records, str(path))

    def load_from_csv(self, file_path: str | Path) -> int:
        """Append rows of a CSV with columns `question`/`answer` or `input`/`output`."""
        path = _existing_file(file_path)
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if {"question", "answer"} <= set(columns):
                pair = ("question", "answer")
            elif {"input", "output"} <= set(columns):
                pair = ("input", "output")
            else:
                raise DataFileError(
                    f"{path}: needs columns question,answer or input,output; has {columns}"
                )
            rows = list(reader)
        before = len(self.conversations)
        for row in rows:
            self.add_conversation({"input": row[pair[0]] or "", "output": row[pair[1]] or ""})
        return len(self.conversations) - before

    # ----- saving ------------------------------------------------------------------------
    def save_to_json(self, file_path: str | Path) -> str:
        """Write all records as a JSON array (atomically); returns the path."""
        write_json_atomic(Path(file_path), self.conversations)
        return str(file_path)

    def save_to_jsonl(self, file_path: str | Path) -> str:
        """Write all records as JSON Lines (atomically); returns the path."""
        write_json_atomic(Path(file_path), self.conversations, lines=True)
        return str(file_path)

    # ----- using -------------------------------------------------------------------------
    def get_batch(self, start_idx: int = 0, batch_size: int = 10) -> list[dict]:
        """Records `start_idx` .. `start_idx + batch_size - 1` (fewer at the end)."""
        if start_idx < 0 or batch_size <= 0:
            raise ValueError(
                f"start_idx must be >= 0 and batch_size > 0, got {start_idx}, {batch_size}"
            )
        return [dict(r) for r in self.conversations[start_idx : start_idx + batch_size]]

    def tokenizer(self):
        """The tokenizer used for formatting (loaded on first use)."""
        if self._tokenizer is None or isinstance(self._tokenizer, str | Path):
            from frontier_signal.backend import models

            self._tokenizer = models.load_tokenizer(str(self._tokenizer or models.DEFAULT_MODEL))
        return self._tokenizer

    def format_for_training(self) -> list[str]:
        """Every record rendered with the model's chat template, one string per conversation.

        The strings are `TrainingText`s: `LLMTrainer` trains on their assistant turns only.

        Raises:
            EmptyDatasetError: there are no records.
        """
        if not self.conversations:
            raise EmptyDatasetError(
                "no conversations to format: load a file or add_conversation() first"
            )
        tokenizer = self.tokenizer()
        texts: list[str] = []
        for record in self.conversations:
            messages = record_messages(record)
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            texts.append(TrainingText(text, messages))
        return texts
