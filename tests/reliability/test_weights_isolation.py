"""No path to another tenant's weights (issue 18, item 4).

A base model is a registered name (built-ins, models.json, the startup models, an operator's
`--model-dir` folders), never any local folder: tenant B cannot train or sample on tenant A's
checkpoint by its absolute path, even though save_state answers that path (the contract's
`checkpoint_path` / `file://` `artifact_uri`); the archive downloads for its owner only.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import TINY
from tests.integration.conftest import make_key, server_settings
from tests.live_server import LiveServer
from tests.reliability.support import assert_refused, connect, new_run, settle

TEXT = {"text": "The capital of Zorbia is Quellmar."}


def test_tenant_b_cannot_use_tenant_a_checkpoint_folder_by_path(alice_http, bob_http, hard_server):
    run_id = new_run(alice_http)
    alice_http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [TEXT]})
    alice_http.post(f"/v1/runs/{run_id}/optim_step", json={})
    saved = alice_http.post(f"/v1/runs/{run_id}/save_state", json={"mode": "merged"}).json()
    # The answer names the folder (the contract) ...
    assert saved["artifact_uri"] == Path(saved["checkpoint_path"]).resolve().as_uri()
    # ... and the archive downloads it for its owner only.
    archive_url = f"/v1/runs/{run_id}/checkpoints/{saved['checkpoint_id']}/archive"
    archive = alice_http.get(archive_url)
    assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b"
    assert bob_http.get(archive_url).status_code == 404
    # Even knowing the folder (a leak elsewhere, a guess), B cannot make it a base model.
    folder = hard_server.state.store.get_checkpoint(saved["checkpoint_id"]).path
    assert (Path(folder) / "config.json").exists()  # a loadable merged model
    for spelling in (folder, folder + "/", str(Path(folder).parent) + "/./" + Path(folder).name):
        answer = bob_http.post("/v1/runs", json={"base_model": spelling, "lora_r": 4})
        assert_refused(answer, "unknown base model")
        answer = bob_http.post("/api/v1/create_model", json={"base_model": spelling})
        assert_refused(answer, "unknown base model")
        sample = {
            "base_model": spelling,
            "prompt": {"chunks": [{"tokens": [1, 2]}]},
            "sampling_params": {"max_tokens": 1},
        }
        assert_refused(bob_http.post("/api/v1/sample", json=sample), "unknown base model")
        chat = {"model": spelling, "messages": [{"role": "user", "content": "hi"}]}
        assert bob_http.post("/v1/chat/completions", json=chat).status_code == 404
    names = [m["id"] for m in bob_http.get("/v1/base-models").json()["data"]]
    assert folder not in names and TINY in names


def test_tinker_paths_stay_uris(alice_http):
    created = settle(alice_http, alice_http.post("/api/v1/create_model", json={"base_model": TINY}))
    body = {"model_id": created["model_id"], "path": "named"}
    saved = settle(alice_http, alice_http.post("/api/v1/save_weights", json=body))
    assert saved["path"].startswith(("hpcai://", "tinker://")), saved


def test_operator_registered_folders_are_the_only_folders(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"hello": "not a model"}))
    stray = tmp_path / "unregistered"
    stray.mkdir()
    (stray / "config.json").write_text((broken / "config.json").read_text())
    settings = server_settings(tmp_path / "data", model_dirs=[broken])
    key = make_key(tmp_path / "data", "alice")
    live = LiveServer(settings).start()
    try:
        live.wait_ready()
        with connect(live.base_url, key) as http:
            names = [m["id"] for m in http.get("/v1/base-models").json()["data"]]
            assert str(broken) in names
            # Registered but not a model: the caller hears why, as a 4xx, not a 500.
            answer = http.post("/v1/runs", json={"base_model": str(broken), "lora_r": 4})
            assert answer.status_code == 400, answer.text
            assert_refused(answer, "cannot be loaded")
            answer = http.post("/v1/runs", json={"base_model": str(stray), "lora_r": 4})
            assert answer.status_code == 404, answer.text
    finally:
        live.stop()


def test_a_local_no_auth_server_still_hands_out_its_folders(tmp_path):
    settings = server_settings(tmp_path, no_auth=True)
    live = LiveServer(settings).start()
    try:
        live.wait_ready()
        with httpx.Client(base_url=live.base_url, timeout=60) as http:
            run_id = new_run(http)
            saved = http.post(f"/v1/runs/{run_id}/save_state", json={}).json()
            assert (Path(saved["checkpoint_path"]) / "adapter_config.json").exists()
            assert saved["artifact_uri"].startswith("file://")
    finally:
        live.stop()
