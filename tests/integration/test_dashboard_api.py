"""The dashboard's JSON API over raw HTTP: the page and its files, the key probe, the metrics
cursor, tenant isolation, and the queue (own work in detail, others' only counted)."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.conftest import TINY
from tests.integration import sdk_fixtures
from tests.integration.browser import wait_for

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url


def client(base_url, key=None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def as_alice(base_url, alice):
    with client(base_url, alice) as http:
        yield http


@pytest.fixture(scope="module")
def as_bob(base_url, bob):
    with client(base_url, bob) as http:
        yield http


@pytest.fixture(scope="module")
def run_id(as_alice):
    run = as_alice.post("/v1/runs", json={"base_model": TINY, "lora_r": 4, "seed": 1}).json()
    for _ in range(3):
        batch = {"batch": [{"text": "The capital of Zorbia is Quellmar."}]}
        assert as_alice.post(f"/v1/runs/{run['run_id']}/forward_backward", json=batch).is_success
        assert as_alice.post(f"/v1/runs/{run['run_id']}/optim_step", json={}).is_success
    return run["run_id"]


def test_the_page_and_its_files_are_served_without_a_key(base_url):
    with client(base_url) as http:
        for path in ("/", "/dashboard"):
            page = http.get(path)
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert '<script type="module" src="/dashboard/static/js/app.js">' in page.text
        for path in ("js/app.js", "js/run.js", "app.css", "vendor/uPlot.iife.min.js"):
            assert http.get(f"/dashboard/static/{path}").status_code == 200
        assert http.get("/dashboard/static/../routes/dashboard.py").status_code == 404
        assert http.get("/favicon.ico").status_code == 204


def test_the_key_probe_always_answers_200(base_url, alice):
    with client(base_url) as http:
        assert http.get("/v1/dashboard/session").json()["signed_in"] is False
    with client(base_url, "sk-fs-wrong") as http:
        answer = http.get("/v1/dashboard/session").json()
        assert answer == {"signed_in": False, "no_auth": False, "message": "invalid API key"}
    with client(base_url, alice) as http:
        answer = http.get("/v1/dashboard/session").json()
        assert answer["signed_in"] is True and answer["tenant_id"].startswith("tenant_")


def test_runs_carry_the_summary_columns(as_alice, run_id):
    rows = as_alice.get("/v1/dashboard/runs").json()["data"]
    row = next(r for r in rows if r["run_id"] == run_id)
    assert (row["face"], row["base_model"], row["lora_rank"], row["step"]) == ("signal", TINY, 4, 3)
    assert row["last_loss"] > 0 and row["tokens_per_s"] > 0 and row["status"] == "active"
    assert row["updated_at"] >= row["created_at"]


def test_the_metrics_cursor_returns_only_later_steps(as_alice, run_id):
    path = f"/v1/dashboard/runs/{run_id}/metrics"
    every = as_alice.get(path).json()
    assert every["step"] == 3 and [p["step"] for p in every["data"]] == [1, 2, 3]
    assert all(p["tokens_per_s"] > 0 and p["grad_norm"] > 0 for p in every["data"])
    assert [p["step"] for p in as_alice.get(path, params={"after": 2}).json()["data"]] == [3]
    assert as_alice.get(path, params={"after": 3}).json()["data"] == []
    assert as_alice.get(path, params={"after": "x"}).status_code == 422
    # Beyond what the database's integers hold (schemathesis found a 500 here): a clear 422.
    too_far = as_alice.get(path, params={"after": 139127871710822678528})
    assert too_far.status_code == 422 and "after" in too_far.text


def test_the_run_detail_has_files_settings_and_requests(as_alice, run_id):
    detail = as_alice.get(f"/v1/dashboard/runs/{run_id}").json()
    assert detail["config"]["lora_r"] == 4 and "dtype" in detail["effective"]
    assert 3 in detail["kept_steps"] and 0 in detail["kept_steps"]
    assert all(c["kind"] != "sampler" for c in detail["checkpoints"])
    kinds = [r["kind"] for r in detail["requests"]]
    assert kinds[:2] == ["optim_step", "forward_backward"]  # newest first
    assert all(r["status"] == "done" and r["duration_s"] >= 0 for r in detail["requests"])


def test_another_tenant_sees_none_of_it(as_bob, run_id):
    assert run_id not in str(as_bob.get("/v1/dashboard/runs").json())
    for path in (f"/v1/dashboard/runs/{run_id}", f"/v1/dashboard/runs/{run_id}/metrics"):
        answer = as_bob.get(path)
        assert answer.status_code == 404
        assert "belongs to another key" in answer.json()["error"]["message"]


def test_the_queue_shows_own_work_in_detail_and_others_only_as_counts(
    server, as_alice, as_bob, run_id
):
    release = threading.Event()
    blocker = server.state.worker.scheduler.call("", lambda engine: release.wait(60))
    batch = {"batch": [{"text": "held behind the blocker"}]}
    worker = threading.Thread(
        target=as_alice.post, args=(f"/v1/runs/{run_id}/forward_backward",), kwargs={"json": batch}
    )
    worker.start()
    try:
        mine = wait_for(
            lambda: as_alice.get("/v1/dashboard/queue").json()["pending"]["own"],
            what="alice's waiting work",
        )
        assert mine[0]["run_id"] == run_id and mine[0]["kind"] == "forward_backward"
        assert mine[0]["waited_s"] >= 0 and mine[0]["base_model"] == TINY
        alice_view = as_alice.get("/v1/dashboard/queue").json()
        assert alice_view["running"]["others"] == {"call": 1}  # the blocker: shared work
        bob_view = as_bob.get("/v1/dashboard/queue").json()
        assert bob_view["pending"] == {"own": [], "others": {"forward_backward": 1}}
        assert run_id not in str(bob_view) and bob_view["workers"] == 1
    finally:
        release.set()
        blocker.result(60)
        worker.join(60)


def test_a_run_trained_through_the_tinker_face_shows_as_tinker_with_its_curve(
    hpcai_client, tiny_tokenizer, as_alice
):
    from tests.integration.tinker_support import LR, fact_datum

    training = hpcai_client.create_lora_training_client(base_model=TINY, rank=8, seed=4)
    for _ in range(2):
        training.forward_backward([fact_datum(tiny_tokenizer)], "cross_entropy")
        training.optim_step(LR).result()
    rows = as_alice.get("/v1/dashboard/runs").json()["data"]
    row = next(r for r in rows if r["run_id"] == training.model_id)
    assert (row["face"], row["lora_rank"], row["step"]) == ("tinker", 8, 2)
    points = as_alice.get(f"/v1/dashboard/runs/{training.model_id}/metrics").json()["data"]
    assert [p["step"] for p in points] == [1, 2]
    assert all(p["loss"] > 0 and p["tokens_per_s"] > 0 for p in points)
