"""The SQL store on both databases it supports, SQLite and a real PostgreSQL (tests/pg.py): every
method's round trip (JSON, booleans, floats, sequences, row counts), and what only concurrent
writers show: ids and idempotency keys stay unique when many threads write at once."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from sqlalchemy import update

from frontier_signal.service.owners import process_owner
from frontier_signal.service.store import Store, new_id
from frontier_signal.service.tables import (
    Checkpoint,
    Metric,
    Request,
    Run,
    Sampler,
    TinkerSession,
)


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    store.ensure_tenant("alice", "alice")
    yield store
    store.close()


def make_run(run_id: str, tenant: str = "alice", **values) -> Run:
    now = time.time()
    fields = {
        "id": run_id,
        "tenant_id": tenant,
        "base_model": "frontier-signal/tiny-llama",
        "config": {"lora_r": 4, "targets": ["q_proj", "v_proj"], "note": "Zörbia ✓", "lr": 1e-4},
        "effective": {"dtype": "float32", "gradient_checkpointing": False, "nested": {"a": None}},
        "status": "active",
        "step": 0,
        "created_at": now,
        "updated_at": now,
    }
    return Run(**(fields | values))


def make_checkpoint(run_id: str, step: int, **values) -> Checkpoint:
    fields = {
        "id": new_id("ckpt"),
        "run_id": run_id,
        "name": f"step-{step}",
        "kind": "training",
        "step": step,
        "path": f"/data/{run_id}/{step}",
        "size": 3 * 2**31,  # over 32 bits: PostgreSQL's INTEGER would overflow
        "sha256": "0" * 64,
        "created_at": time.time(),
    }
    return Checkpoint(**(fields | values))


def request_row(request_id: str, key: str | None, **values) -> Request:
    fields = {
        "id": request_id,
        "tenant_id": "alice",
        "kind": "create_run",
        "status": "pending",
        "idempotency_key": key,
        "fingerprint": "f" * 64,
        "created_at": time.time(),
    }
    return Request(**(fields | values))


def test_keys_are_found_by_either_spelling_and_revoked_by_name(store):
    key, row = store.create_key("ci", "alice")
    assert store.find_key(key).id == row.id
    assert store.find_key("tml-" + key.removeprefix("sk-fs-")).id == row.id
    assert [k.name for k in store.list_keys()] == ["ci"]
    assert store.revoke_key("ci") == 1
    assert store.revoke_key("ci") == 0
    assert store.find_key(key).revoked_at is not None


def test_runs_keep_their_json_exactly_and_updates_are_seen(store):
    store.add_run(make_run("run_a"))
    store.add_run(make_run("run_b", status="deleted"))
    run = store.get_run("run_a")
    assert run.config == make_run("x").config
    assert run.effective["gradient_checkpointing"] is False
    assert run.effective["nested"] == {"a": None}
    assert [r.id for r in store.list_runs("alice")] == ["run_a"]
    assert [r.id for r in store.list_runs(status="deleted")] == ["run_b"]
    store.update_run("run_a", step=7, effective={"dtype": "bfloat16"})
    assert (store.get_run("run_a").step, store.get_run("run_a").effective) == (
        7,
        {"dtype": "bfloat16"},
    )
    assert store.run_ids() == {"run_a", "run_b"}
    assert store.get_run("run_missing") is None


def test_checkpoints_keep_booleans_big_sizes_and_expiry(store):
    store.add_run(make_run("run_a"))
    now = time.time()
    first = store.add_checkpoint(make_checkpoint("run_a", 2, public=True))
    second = store.add_checkpoint(
        make_checkpoint("run_a", 1, kind="sampler", expires_at=now + 10 * 365 * 86400)
    )
    listed = store.list_checkpoints("run_a")
    assert [c.step for c in listed] == [1, 2]
    assert store.get_checkpoint(first.id).public is True
    assert store.get_checkpoint(second.id).public is False  # the column's default
    assert store.get_checkpoint(first.id).size == 3 * 2**31
    assert [c.id for c in store.list_checkpoints("run_a", "sampler")] == [second.id]
    assert store.clamp_expiry(3600) == 1
    assert store.get_checkpoint(second.id).expires_at == pytest.approx(
        store.get_checkpoint(second.id).created_at + 3600
    )
    assert [c.id for c in store.expired_checkpoints(now + 7200)] == [second.id]
    store.update_checkpoint(first.id, public=False)
    assert store.get_checkpoint(first.id).public is False
    assert store.checkpoint_paths() == {"/data/run_a/2", "/data/run_a/1"}
    store.delete_checkpoint(first.id)
    assert store.get_checkpoint(first.id) is None


def test_tinker_sessions_and_samplers(store):
    now = time.time()
    session = TinkerSession(
        id="sess_1",
        tenant_id="alice",
        tags=["rl", "ünï"],
        user_metadata={"k": [1, 2.5, True]},
        sdk_version="0.38.0",
        status="active",
        created_at=now - 100,
        last_heartbeat_at=now - 100,
    )
    store.add_tinker_session(session)
    assert store.get_tinker_session("sess_1").user_metadata == {"k": [1, 2.5, True]}
    assert store.stale_tinker_sessions(now - 50) == ["sess_1"]
    assert store.expire_tinker_sessions(now - 50) == 1
    assert store.get_tinker_session("sess_1").status == "expired"
    store.update_tinker_session("sess_1", status="finished")
    assert [s.status for s in store.list_tinker_sessions("alice")] == ["finished"]
    store.add_sampler(
        Sampler(
            id="smp_1",
            tenant_id="alice",
            session_id="sess_1",
            base_model="m",
            model_path=None,
            created_at=now,
        )
    )
    assert store.get_sampler("smp_1").model_path is None
    assert [s.id for s in store.list_samplers("sess_1")] == ["smp_1"]


def test_metrics_get_increasing_ids_and_are_cut_after_a_step(store):
    store.add_run(make_run("run_a"))
    for step in (1, 2, 3):
        store.add_metric(
            Metric(
                run_id="run_a",
                step=step,
                loss=None if step == 2 else 1.0 / step,
                grad_norm=0.5,
                learning_rate=1e-4,
                tokens=10,
                time=time.time(),
                seconds=0.25,
            )
        )
    metrics = store.list_metrics("run_a")
    assert [m.step for m in metrics] == [1, 2, 3]
    assert metrics[0].id < metrics[1].id < metrics[2].id
    assert metrics[1].loss is None
    assert [m.step for m in store.metrics_after("run_a", 1)] == [2, 3]
    assert store.latest_metric("run_a").step == 3
    store.delete_metrics_after("run_a", 1)
    assert [m.step for m in store.list_metrics("run_a")] == [1]


def test_requests_replay_by_key_and_finish_prune_and_forget(store):
    row, new = store.begin_request(request_row("req_1", "k1"))
    assert new
    again, new = store.begin_request(request_row("req_2", "k1"))
    assert (again.id, new) == ("req_1", False)
    # Requests without a key never collide (NULLs are distinct in a unique constraint).
    assert store.begin_request(request_row("req_3", None))[1]
    assert store.begin_request(request_row("req_4", None))[1]
    store.finish_request("req_1", result={"run_id": "run_x", "ok": True}, finished_at=10.0)
    finished = store.get_request("req_1")
    assert (finished.status, finished.result) == ("done", {"run_id": "run_x", "ok": True})
    store.finish_request("req_3", error={"status": 400, "message": "bad"}, finished_at=10.0)
    assert store.get_request("req_3").status == "failed"
    assert store.find_request_by_key("k1").id == "req_1"
    assert store.prune_requests("", 20.0, except_prefix="tinker.") == 2
    assert store.forget_unfinished_requests() == 0  # req_4: pending in this live process


def test_a_starting_process_forgets_only_the_unfinished_requests_of_dead_processes(store):
    host, pid = socket.gethostname(), os.getpid()
    owners = {
        "mine": process_owner(),
        "earlier": f"{host}:{pid}:an-earlier-token",  # same pid, another process: gone
        "unknown": None,  # written before owners were recorded
        "elsewhere": "another-host:1:token",  # cannot be checked: alive
    }
    for name, owner in owners.items():
        store.begin_request(request_row(f"req_{name}", name, owner=owner))
    with store.engine.begin() as connection:  # begin_request records this process as owner
        connection.execute(update(Request).where(Request.id == "req_unknown").values(owner=None))
    shared = store.engine.dialect.name != "sqlite"  # a SQLite file is not shared across hosts
    assert store.forget_unfinished_requests() == (2 if shared else 3)
    left = {name for name in owners if store.get_request(f"req_{name}") is not None}
    assert left == ({"mine", "elsewhere"} if shared else {"mine"})


def test_concurrent_writers_get_unique_ids_and_one_winner_per_idempotency_key(store):
    """Eight threads, each with its own connection, at once: one new row per key, everyone
    else gets that row back; every run insert lands."""
    barrier = threading.Barrier(8)
    outcomes: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            barrier.wait(10)
            row, new = store.begin_request(request_row(f"req_{index}", "same-key"))
            outcomes.append((row.id, new))
            store.add_run(make_run(new_id("run")))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    winners = [row_id for row_id, new in outcomes if new]
    assert len(winners) == 1
    assert {row_id for row_id, _ in outcomes} == set(winners)
    assert len(store.list_runs("alice")) == 8
