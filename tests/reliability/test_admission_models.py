"""One base model, one copy: every spelling of a model's folder (trailing `/`, `/./`, `//`,
`..`, a symlink) and its registered name load the same weights once."""

from __future__ import annotations

from dataclasses import replace

import pytest

from frontier_signal.backend import models
from frontier_signal.engine.engine import Engine
from tests.conftest import make_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return models.save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_four_spellings_of_a_folder_load_one_copy(folder, tmp_path):
    link = tmp_path / "linked-tiny"
    link.symlink_to(folder)
    spellings = [
        str(folder),
        f"{folder}/",
        f"{folder.parent}/./{folder.name}",
        f"{folder.parent}//{folder.name}",
        f"{folder}/../{folder.name}",
        str(link),
    ]
    engine = Engine(device="cpu", dtype="float32")
    bases = {id(engine.load_model(spelling)) for spelling in spellings}
    assert len(bases) == 1
    assert engine.loaded_models() == [str(folder.resolve())]
    # Runs made under different spellings share that copy.
    runs = []
    for index, spelling in enumerate(spellings[:2]):
        config = replace(make_config(), base_model=spelling)
        runs.append(engine.create_run(config, f"run{index}").run_id)
    assert engine.loaded_models() == [str(folder.resolve())]
    for run_id in runs:
        engine.delete_run(run_id)


def test_a_registered_name_and_its_folder_are_one_model(folder, monkeypatch):
    registered = {"my-tiny": models.ModelSource("my-tiny", folder)}
    monkeypatch.setattr(models, "_registry_file_sources", lambda: registered)
    assert models.canonical_name("my-tiny") == "my-tiny"
    assert models.canonical_name(f"{folder}/") == "my-tiny"
    engine = Engine(device="cpu", dtype="float32")
    assert engine.load_model(f"{folder}//") is engine.load_model("my-tiny")
    assert engine.loaded_models() == ["my-tiny"]


def test_an_unknown_spelling_is_left_for_resolve_to_refuse(tmp_path):
    assert models.canonical_name(str(tmp_path / "missing")) == str(tmp_path / "missing")
