"""Registered adapters: adapters.json and the NAME=PATH serve option, and their errors."""

from __future__ import annotations

import json

import pytest

from frontier_signal.service.adapter_registry import adapter_base_model, registered_adapters
from frontier_signal.service.settings import ServiceSettings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FRONTIER_SIGNAL_HOME", str(tmp_path))
    return tmp_path


def test_adapters_json_and_options_with_options_winning(home):
    folder = home / "lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "m/x"}))
    (home / "adapters.json").write_text(
        json.dumps({"a": {"path": str(folder)}, "b": {"path": "/elsewhere", "base_model": "m/y"}})
    )
    found = registered_adapters([f"b={folder}", "c=/c"])
    assert set(found) == {"a", "b", "c"}
    assert adapter_base_model(found["a"]) == "m/x"  # from the folder's adapter_config.json
    assert found["b"].path == folder and adapter_base_model(found["b"]) == "m/x"
    assert adapter_base_model(found["c"]) == ""  # no folder: unknown


@pytest.mark.parametrize(
    ("text", "needle"),
    [("not json", "adapter registry"), ('{"a": {"where": "/x"}}', "expected")],
)
def test_a_broken_adapters_json_says_what_is_expected(home, text, needle):
    (home / "adapters.json").write_text(text)
    with pytest.raises(ValueError, match=needle):
        registered_adapters()


@pytest.mark.parametrize("option", ["no-equals", "x=", "run_1=/p", "a@1=/p", "tinker://x=/p"])
def test_bad_serve_options_are_refused_at_start(option):
    with pytest.raises(ValueError, match="adapter"):
        ServiceSettings(adapters=[option])
