"""One string of a GGUF file's header, read by seeking past what comes before it.

`gguf.GGUFReader` parses the whole header (and maps every tensor) before it answers: on the
bundled SmolLM2 GGUF, whose header holds a 49,152-token vocabulary and its merges, that took
4.4 s of a 9.2 s GGUF export, for the one name `tokenizer.ggml.pre`. That key sits near the
start, so this reads a few hundred bytes instead (little-endian GGUF v2/v3; ValueError where the
file is not one, so a caller can fall back to the reader).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

# GGUF value types of a fixed size in bytes; 8 is a string, 9 an array.
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def _read(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise EOFError("the GGUF header ends early")
    return data


def _string(file: BinaryIO) -> bytes:
    (size,) = struct.unpack("<Q", _read(file, 8))
    return _read(file, size)


def _skip(file: BinaryIO, kind: int) -> None:
    if kind in _SIZES:
        file.seek(_SIZES[kind], 1)
    elif kind == _STRING:
        (size,) = struct.unpack("<Q", _read(file, 8))
        file.seek(size, 1)
    elif kind == _ARRAY:
        item, count = struct.unpack("<IQ", _read(file, 12))
        if item in _SIZES:
            file.seek(_SIZES[item] * count, 1)
        else:
            for _ in range(count):
                _skip(file, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def string_field(path: Path, key: str) -> str | None:
    """The string value of `key`, or None when the header has no such string. ValueError (or
    EOFError) where the file is not a little-endian GGUF v2/v3: read it with `gguf.GGUFReader`."""
    wanted = key.encode()
    with open(path, "rb") as file:
        magic, version, _tensors, count = struct.unpack("<4sIQQ", _read(file, 24))
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"{path} is not a little-endian GGUF v2 or v3")
        for _ in range(count):
            name = _string(file)
            (kind,) = struct.unpack("<I", _read(file, 4))
            if name == wanted and kind == _STRING:
                return _string(file).decode()
            _skip(file, kind)
    return None
