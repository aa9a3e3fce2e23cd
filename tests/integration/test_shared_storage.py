"""Shared checkpoint storage across real server processes: two `frontier-signal serve`
processes with their own data folders, one database and one FRONTIER_SIGNAL_STORAGE_URL (a
shared folder here, as NFS would be); a checkpoint saved through one is served by the other."""

from __future__ import annotations

import io
import tarfile

import httpx

from frontier_signal import SignalClient
from frontier_signal.service.storage import MANIFEST
from tests.conftest import TINY
from tests.integration.test_database_servers import TEXT, new_key
from tests.live_server import ServerProcess

PROMPT = {"prompt": "The capital of Zorbia is", "max_tokens": 6, "temperature": 0.0}


def complete(base_url: str, key: str, model: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
        answer = http.post("/v1/completions", json={"model": model} | PROMPT)
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["text"]


def test_a_checkpoint_saved_through_one_process_is_served_by_another(tmp_path, database_url):
    key = new_key(database_url)
    shared = tmp_path / "shared"
    env = {"FRONTIER_SIGNAL_STORAGE_URL": shared.as_uri()}
    serve = ("--database-url", database_url)
    with (
        ServerProcess(tmp_path / "a", *serve, env=env) as first,
        ServerProcess(tmp_path / "b", *serve, env=env) as second,
    ):
        with SignalClient(key, first.base_url) as client:
            run = client.create_run(TINY, lora_r=4, seed=3, learning_rate=0.05, bf16=False)
            for _ in range(3):
                run.forward_backward([TEXT])
                run.optim_step()
            saved = run.save_state()
        assert saved["artifact_uri"].startswith(shared.as_uri())
        key_path = f"runs/{run.run_id}/checkpoints/{saved['checkpoint_id']}"
        assert (shared / key_path / MANIFEST).is_file()
        assert not list(shared.rglob(".*.tmp-*"))  # published whole, nothing left half-way
        assert not (tmp_path / "b" / key_path).exists()

        model = f"{run.run_id}:{saved['checkpoint_id']}"
        expected = complete(first.base_url, key, model)
        assert complete(second.base_url, key, model) == expected
        assert (tmp_path / "b" / key_path).is_dir()  # the second process's local copy
        base = complete(second.base_url, key, TINY)
        assert base != expected  # the adapter was applied, not the bare base model

        # Its archive, from the other process, through both faces.
        ckpt = saved["checkpoint_id"]
        headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}
        with httpx.Client(base_url=second.base_url, headers=headers, timeout=120) as http:
            for path in (
                f"/v1/runs/{run.run_id}/checkpoints/{ckpt}/archive",
                f"/api/v1/training_runs/{run.run_id}/checkpoints/{ckpt}/archive",
            ):
                archive = http.get(path)
                assert archive.status_code == 200, (path, archive.text)
                with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
                    names = tar.getnames()
                assert any(name.endswith("adapter_model.safetensors") for name in names), names
