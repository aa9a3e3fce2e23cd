"""`gguf_header.string_field` reads the same strings as `gguf.GGUFReader`, seeking past every
kind of value before them (the GGUF export reads `tokenizer.ggml.pre` with it)."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_signal.backend import gguf_export, gguf_header, models

gguf = pytest.importorskip("gguf")


def _written(path):
    """A GGUF with every kind of value before and after the strings looked up."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint8("a.u8", 7)
    writer.add_int16("a.i16", -3)
    writer.add_float32("a.f32", 1.5)
    writer.add_bool("a.bool", True)
    writer.add_uint64("a.u64", 2**40)
    writer.add_float64("a.f64", 2.5)
    writer.add_string("a.str", "before")
    writer.add_array("a.tokens", ["x", "yy", "zzz\u00e9"])
    writer.add_array("a.ints", [1, 2, 3])
    writer.add_array("a.nested", [[1, 2], [3]])
    writer.add_string("tokenizer.ggml.pre", "smollm")
    writer.add_uint32("tokenizer.ggml.pre_count", 1)  # a name that starts alike
    writer.add_tensor("t", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_it_reads_what_gguf_reader_reads(tmp_path):
    path = _written(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(str(path))
    for key in ("general.architecture", "a.str", "tokenizer.ggml.pre"):
        assert gguf_header.string_field(path, key) == str(reader.fields[key].contents())
    assert gguf_header.string_field(path, "missing") is None
    assert gguf_header.string_field(path, "a.u8") is None  # not a string
    assert gguf_export.tokenizer_pre(path) == "smollm"


def test_a_file_that_is_not_gguf_is_an_error_the_export_falls_back_on(tmp_path):
    path = tmp_path / "not.gguf"
    path.write_bytes(b"GGML" + bytes(40))
    with pytest.raises(ValueError, match="not a little-endian GGUF"):
        gguf_header.string_field(path, "tokenizer.ggml.pre")


def test_the_bundled_gguf_names_its_pre_tokenizer():
    source = models.source_gguf("HuggingFaceTB/SmolLM2-135M-Instruct")
    if source is None:
        pytest.skip("the bundled SmolLM2 GGUF is not installed")
    assert gguf_export.tokenizer_pre(source) == "smollm"
