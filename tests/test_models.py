"""Base model registry: built-ins, local folders, the registry file, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from frontier_signal.backend import models
from frontier_signal.engine.errors import ModelNotFoundError
from tests.conftest import SMOLLM2, TINY


def test_the_tiny_model_is_deterministic_and_uses_smollm2s_tokenizer():
    first, second = models.load_hf_model(TINY), models.load_hf_model(TINY)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert first.config.num_hidden_layers == 2 and first.config.vocab_size == 49152
    tokenizer = models.load_tokenizer(TINY)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template


def test_builtins_are_listed_when_the_bundled_package_is_installed():
    names = models.registered_models()
    assert SMOLLM2 in names and TINY in names
    assert names[SMOLLM2].gguf_file.endswith(".gguf")


def test_unknown_names_and_missing_folders_list_the_available_models(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown base model 'gpt-3.5-turbo'") as error:
        models.resolve_model("gpt-3.5-turbo")
    assert SMOLLM2 in str(error.value)
    with pytest.raises(ModelNotFoundError):
        models.resolve_model(str(tmp_path / "no-such-folder"))


def test_a_local_folder_and_a_registry_entry_both_load(tmp_path, home):
    folder = models.save_tiny_model(tmp_path / "my-model")
    assert models.resolve_model(str(folder)).path == folder
    registry = home / "models.json"
    registry.write_text(json.dumps({"acme/tiny": {"path": str(folder)}}))
    try:
        model = models.load_hf_model("acme/tiny")
        assert model.config.num_hidden_layers == 2
        registry.write_text(json.dumps({"acme/gone": {"path": str(tmp_path / "gone")}}))
        with pytest.raises(ModelNotFoundError, match="files missing"):
            models.resolve_model("acme/gone")
    finally:
        registry.unlink()


def test_importing_the_sdk_package_does_not_import_torch():
    code = (
        "import sys, frontier_signal, frontier_signal.engine.types, frontier_signal.engine.errors; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
