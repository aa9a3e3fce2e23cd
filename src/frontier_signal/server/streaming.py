"""What both streaming faces (Signal `sample/stream`, OpenAI `stream: true`) need: a generation's
text grown token by token without re-decoding it all, and the part of it that is settled."""

from __future__ import annotations

import json


class IncrementalText:
    """A growing generation's text, decoding only its last few tokens per new token (a token's
    text can depend on its neighbours, and a multi-byte character may span tokens: text is only
    taken once it no longer ends in an incomplete character)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = 0  # tokens[_prefix:_read] decode to the tail of `text` already taken
        self._read = 0

    def add(self, token: int) -> None:
        self.tokens.append(token)
        decode = self.tokenizer.decode
        before = decode(self.tokens[self._prefix : self._read], skip_special_tokens=False)
        after = decode(self.tokens[self._prefix :], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.tokens)


def settled(text: str, markers: tuple[str, ...]) -> str:
    """The part of a growing text no marker (a stop string, a tool-call tag) can still claim:
    cut at the first marker, and hold back a tail that may grow into one."""
    for marker in markers:
        if marker in text:
            text = text[: text.index(marker)]
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                text = text[:-size]
                break
    return text


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
