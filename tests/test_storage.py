"""Shared checkpoint storage (service/storage.py) on a plain path, file:// and memory://: a folder
published through one data folder is read through another, byte for byte; a reader racing a
writer that rewrites the folder sees one whole version or nothing, never a mix."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from frontier_signal.service.storage import MANIFEST, CheckpointStorage, StorageError


def write_folder(data_dir: Path, version: int, name: str = "step-000001") -> Path:
    folder = data_dir / "runs" / "run_a" / "steps" / name
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("adapter_model.safetensors", "adapter_config.json", "meta.json"):
        (folder / part).write_text(f"{part} v{version} " + "x" * (20_000 * (version % 3 + 1)))
    return folder


def read_versions(folder: Path) -> set[str]:
    return {p.read_text().split(" ")[1] for p in folder.iterdir()}


@pytest.fixture(params=["path", "file", "memory"])
def storage_url(request, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://fs-test-{uuid.uuid4().hex[:8]}"
    shared = tmp_path / "shared"
    return str(shared) if request.param == "path" else shared.as_uri()


def test_a_folder_published_through_one_data_folder_is_read_through_another(tmp_path, storage_url):
    writer = CheckpointStorage(storage_url, tmp_path / "a")
    reader = CheckpointStorage(storage_url, tmp_path / "b")
    assert writer.shared and reader.shared
    folder = write_folder(tmp_path / "a", 1)
    assert not reader.exists(str(folder))
    writer.publish(folder)
    assert reader.exists(str(folder))
    local = Path(reader.local(str(folder)))
    assert local == tmp_path / "b" / "runs" / "run_a" / "steps" / "step-000001"
    assert {p.name: p.read_bytes() for p in local.iterdir()} == {
        p.name: p.read_bytes() for p in folder.iterdir()
    }
    assert MANIFEST not in {p.name for p in local.iterdir()}
    assert writer.uri(folder).endswith("runs/run_a/steps/step-000001")
    assert not writer.uri(folder).startswith("file:///" + str(tmp_path / "a").lstrip("/"))
    writer.remove(str(folder))
    assert not CheckpointStorage(storage_url, tmp_path / "c").exists(str(folder))


def test_without_a_storage_url_only_the_data_folder_is_used(tmp_path):
    for url in ("", str(tmp_path / "a"), (tmp_path / "a").as_uri()):
        storage = CheckpointStorage(url, tmp_path / "a")
        folder = write_folder(tmp_path / "a", 1)
        assert not storage.shared
        storage.publish(folder)  # nothing to do
        assert storage.uri(folder) == folder.resolve().as_uri()
        assert storage.local(str(folder)) == str(folder)
        assert not (tmp_path / "a" / "runs" / "run_a" / "steps" / "step-000001" / MANIFEST).exists()


def test_an_interrupted_publish_is_never_seen(tmp_path, storage_url, monkeypatch):
    writer = CheckpointStorage(storage_url, tmp_path / "a")
    folder = write_folder(tmp_path / "a", 1)
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(*args, **kwargs)

    if writer.is_local:
        import shutil

        original = shutil.copyfile
        monkeypatch.setattr(shutil, "copyfile", fail_on_second)
    else:
        original = writer.fs.put_file
        monkeypatch.setattr(writer.fs, "put_file", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        writer.publish(folder)
    reader = CheckpointStorage(storage_url, tmp_path / "b")
    assert not reader.exists(str(folder))
    if writer.is_local:
        reader.local(str(folder))  # nothing was published: the path as recorded, no copy
    else:  # files without their manifest: unreadable (being rewritten, or a publish that died)
        with pytest.raises(StorageError, match="no manifest"):
            reader.local(str(folder))
    assert not (tmp_path / "b" / "runs").exists()


def test_a_reader_racing_a_rewriting_writer_sees_one_whole_version(tmp_path, storage_url):
    writer = CheckpointStorage(storage_url, tmp_path / "a")
    folder = write_folder(tmp_path / "a", 0)
    writer.publish(folder)
    stop = threading.Event()

    def rewrite() -> None:
        version = 1
        while not stop.is_set() and version < 200:  # bounded
            write_folder(tmp_path / "a", version)
            writer.publish(folder)
            version += 1

    thread = threading.Thread(target=rewrite)
    thread.start()
    seen, refused = [], 0
    try:
        for attempt in range(40):
            reader = CheckpointStorage(storage_url, tmp_path / f"r{attempt}")
            try:
                local = Path(reader.local(str(folder)))
            except StorageError:
                refused += 1  # changed while read: refused whole, never half
                continue
            if local.is_dir():
                seen.append(read_versions(local))
    finally:
        stop.set()
        thread.join(60)
    assert seen, "the reader never got a copy"
    assert all(len(versions) == 1 for versions in seen), seen
    assert refused < len(seen)  # a refused read is read again, so refusals are rare
