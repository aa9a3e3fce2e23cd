"""Migration 0004 (runs keep their RunSpec in typed columns) on a database the old code wrote.

The database is made at revision 0003 and filled as the old services filled it: the Signal
create body as a run's `config` JSON, and the Tinker face's Signal-shaped config with its extras
(`api`, `session_id`, `user_metadata`, `lora_config`), with real checkpoints the engine wrote.
After the upgrade the real server loads, trains and samples every run through its own face (our
SDK, hpcai, tinker), shows the Signal `config` exactly as before, and finds a session's runs
through the `session_id` index."""

from __future__ import annotations

import importlib
import json
import sqlite3
import time

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from frontier_signal.backend.checkpoints import folder_digest
from frontier_signal.client import SignalClient
from frontier_signal.engine.types import LoraSpec, OptimizerSpec, RunConfig
from frontier_signal.service import files
from frontier_signal.service.store import MIGRATIONS, hash_key
from tests.conftest import TINY
from tests.integration.conftest import server_settings
from tests.integration.tinker_support import fact_datum, hpcai, loss_of
from tests.live_server import LiveServer

tinker = pytest.importorskip("tinker")
migration = importlib.import_module("frontier_signal.service.migrations.versions.0004_run_spec")

KEY = "sk-fs-" + "k" * 43
TENANT = "tenant_old"
SESSION = "sess_old"
SIGNAL_RUN, SESSION_RUN, HPCAI_RUN = "run_signal", f"{SESSION}:train:0", "run_hpcai"
TEXT = {"text": "The capital of Zorbia is Quellmar."}
# As the Signal face stored a create body: the seed filled in, target modules as spelt.
SIGNAL_CONFIG = {
    "base_model": TINY,
    "lora_r": 4,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "lora_target_modules": ["q", "v"],
    "optimizer": "adamw",
    "learning_rate": 0.02,
    "weight_decay": 0.01,
    "max_seq_length": 256,
    "bf16": True,
    "gradient_checkpointing": True,
    "seed": 7,
}


def tinker_config(seed: int, mlp: bool, session_id: str | None, metadata: dict) -> dict:
    """As the old TinkerService.create_model stored a model (rank 4)."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    targets += ["gate_proj", "up_proj", "down_proj"] if mlp else []
    return {
        "base_model": TINY,
        "lora_r": 4,
        "lora_alpha": 32.0,
        "lora_dropout": 0.0,
        "lora_target_modules": targets,
        "optimizer": "adamw",
        "learning_rate": 1e-4,
        "weight_decay": 0.0,
        "max_seq_length": 4096,
        "bf16": False,
        "gradient_checkpointing": False,
        "seed": seed,
        "api": "tinker",
        "lora_config": {
            "rank": 4,
            "seed": seed,
            "train_attn": True,
            "train_mlp": mlp,
            "train_unembed": False,
        },
        "session_id": session_id,
        "user_metadata": metadata,
    }


OLD_CONFIGS = {
    SIGNAL_RUN: SIGNAL_CONFIG,
    SESSION_RUN: tinker_config(5, True, SESSION, {"owner": "old-test"}),
    HPCAI_RUN: tinker_config(6, False, None, {}),
}


def engine_config(config: dict) -> RunConfig:
    """The old service's conversion of a stored config (AdamW 0.9 / 0.999, eps 1e-8)."""
    short = {"q": "q_proj", "v": "v_proj"}
    targets = tuple(short.get(name, name) for name in config["lora_target_modules"])
    lora = LoraSpec(config["lora_r"], config["lora_alpha"], 0.0, config["seed"], targets)
    optimizer = OptimizerSpec(
        config["optimizer"],
        config["learning_rate"],
        beta2=0.999,
        eps=1e-8,
        weight_decay=config["weight_decay"],
    )
    return RunConfig(
        TINY, lora, optimizer, config["max_seq_length"], config["gradient_checkpointing"]
    )


def write_old_run(engine, db, data_dir, run_id: str, config: dict, datum) -> float:
    """One optimizer step of a run, saved and recorded as the old code did; returns the summed
    loss of `datum` on the saved weights."""
    engine.create_run(engine_config(config), run_id)
    folders = [("sampler", 0, files.step_folder(data_dir, run_id, 0), "sampler-step-0")]
    engine.save_checkpoint(run_id, folders[0][2], "sampler")
    engine.forward_backward(run_id, [datum])
    engine.optim_step(run_id)
    folders.append(("sampler", 1, files.step_folder(data_dir, run_id, 1), "sampler-step-1"))
    folders.append(("training", 1, files.checkpoint_folder(data_dir, run_id, f"ck_{run_id}"), ""))
    engine.save_checkpoint(run_id, folders[1][2], "sampler")
    engine.save_checkpoint(run_id, folders[2][2], "training")
    if config.get("api") == "tinker":  # named checkpoints, as save_state / save_weights made
        for kind, name in (("training", "old-state"), ("sampler_weights", "old-sampler")):
            folder = files.checkpoint_folder(data_dir, run_id, f"ck_{run_id}_{name}")
            engine.save_checkpoint(run_id, folder, "training" if kind == "training" else "sampler")
            folders.append((kind, 1, folder, name))
    loss = engine.forward(run_id, [datum]).loss
    engine.delete_run(run_id)
    now = time.time()
    effective = {"dtype": "float32", "optimizer": "adamw (fp32 moments)"}
    db.execute(
        "INSERT INTO runs (id, tenant_id, base_model, config, effective, status, step, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'active', 1, ?, ?)",
        (run_id, TENANT, TINY, json.dumps(config), json.dumps(effective), now, now),
    )
    for index, (kind, step, folder, name) in enumerate(folders):
        size, sha256 = folder_digest(folder)
        db.execute(
            "INSERT INTO checkpoints (id, run_id, name, kind, step, path, size, sha256, "
            "created_at, public, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL)",
            (f"ck_{run_id}_{index}", run_id, name or "auto-step-1", kind, step, str(folder))
            + (size, sha256, now + index * 1e-3),
        )
    db.execute(
        "INSERT INTO metrics (run_id, step, loss, grad_norm, learning_rate, tokens, time, "
        "seconds) VALUES (?, 1, 2.0, 1.0, ?, 9, ?, 0.1)",
        (run_id, config["learning_rate"], now),
    )
    return loss


def database_path(data_dir) -> str:
    return server_settings(data_dir).resolved_database_url().removeprefix("sqlite:///")


def migrate(data_dir, revision: str, down: bool = False) -> None:
    """Bring the data folder's database to `revision` with Alembic, as the store does."""
    alembic = Config()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    database = create_engine(server_settings(data_dir).resolved_database_url())
    with database.begin() as connection:
        alembic.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(alembic, revision)
    database.dispose()


@pytest.fixture
def old_database(tmp_path, engine, tiny_tokenizer):
    """A data folder whose database stands at 0003 with runs of both faces; the losses the
    saved weights give."""
    migrate(tmp_path, "0003")
    datum = engine.render(TINY, [TEXT], 256)[0].datum
    now = time.time()
    with sqlite3.connect(database_path(tmp_path)) as db:
        db.execute("INSERT INTO tenants VALUES (?, 'old', ?)", (TENANT, now))
        db.execute(
            "INSERT INTO api_keys VALUES ('key_old', ?, 'old', ?, ?, ?, NULL)",
            (TENANT, hash_key(KEY), KEY[:12], now),
        )
        db.execute(
            "INSERT INTO tinker_sessions VALUES (?, ?, '[]', '{}', 'tinker', 'active', ?, ?)",
            (SESSION, TENANT, now, now),
        )
        losses = {
            run_id: write_old_run(engine, db, tmp_path, run_id, config, datum)
            for run_id, config in OLD_CONFIGS.items()
        }
    return tmp_path, losses


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    for name in ("TINKER_API_KEY", "TINKER_BASE_URL", "HPCAI_API_KEY", "HPCAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_old_runs_of_both_faces_load_train_and_sample_after_the_upgrade(
    old_database, clean_env, tiny_tokenizer
):
    data_dir, losses = old_database
    datum = fact_datum(tiny_tokenizer, TEXT["text"])
    live = LiveServer(server_settings(data_dir)).start()  # migrates to head
    try:
        live.wait_ready()
        signal = SignalClient(api_key=KEY, base_url=live.base_url, max_retries=0)
        for run_id, config in OLD_CONFIGS.items():  # the Signal face's view is unchanged
            status = signal.get_status(run_id)
            assert status["config"] == config and status["step"] == 1
        run = signal.get_run(SIGNAL_RUN)
        assert run.forward_backward([TEXT])["step"] == 2
        assert run.optim_step()["step"] == 2
        assert len(run.sample(["The capital"], max_tokens=4, step=1)["outputs"]) == 1
        assert len(run.sample(["The capital"], max_tokens=4)["outputs"]) == 1

        service = hpcai.ServiceClient(base_url=live.base_url, api_key=KEY)
        for run_id in (HPCAI_RUN, SESSION_RUN):  # the saved weights, in the saved layout
            training = service.create_training_client(model_id=run_id)
            loss = loss_of(training.forward([datum], "cross_entropy").result())
            assert loss == pytest.approx(losses[run_id], rel=1e-5)
            training.forward_backward([datum], "cross_entropy")
            assert training.optim_step(hpcai.AdamParams(learning_rate=1e-2)).result()
        path = f"hpcai://{HPCAI_RUN}/sampler/old-sampler"
        sampled = service.create_sampling_client(model_path=path, base_model=TINY)
        prompt = hpcai.types.ModelInput.from_ints(datum.model_input.to_ints()[:4])
        params = hpcai.types.SamplingParams(max_tokens=3, temperature=1.0, seed=1)
        assert len(sampled.sample(prompt, 1, params).result().sequences) == 1

        _tinker_face_reads_the_old_session_run(live.base_url, datum, losses[SESSION_RUN])
    finally:
        live.stop()
    with sqlite3.connect(database_path(data_dir)) as db:  # membership is an index lookup
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE session_id = ?", (SESSION,)
        ).fetchall()
    assert "ix_runs_session_id" in str(plan)


def _tinker_face_reads_the_old_session_run(base_url: str, datum, expected: float) -> None:
    service = tinker.ServiceClient(base_url=base_url, api_key="tml-" + KEY.removeprefix("sk-fs-"))
    try:
        rest = service.create_rest_client()
        state = f"tinker://{SESSION_RUN}/weights/old-state"
        info = rest.get_weights_info_by_tinker_path(state).result()
        assert (info.base_model, info.lora_rank) == (TINY, 4)
        assert rest.get_training_run(SESSION_RUN).result().user_metadata == {"owner": "old-test"}
        restored = service.create_training_client_from_state(state).result()
        tokens = datum.model_input.to_ints() + [datum.loss_fn_inputs["target_tokens"].tolist()[-1]]
        same = tinker.types.Datum(
            model_input=tinker.types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )
        forward = restored.forward([same], "cross_entropy").result()
        assert forward.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
        sampler = service.create_sampling_client(
            model_path=f"tinker://{SESSION_RUN}/sampler_weights/old-sampler"
        )
        prompt = tinker.types.ModelInput.from_ints(datum.model_input.to_ints()[:4])
        params = tinker.types.SamplingParams(max_tokens=3, temperature=1.0, seed=1)
        assert len(sampler.sample(prompt, 1, params).result().sequences) == 1
    finally:
        service.close("success").result()
    with httpx.Client(base_url=base_url, headers={"X-API-Key": KEY}, timeout=60) as http:
        session = http.get(f"/api/v1/sessions/{SESSION}").json()
    assert session["training_run_ids"] == [SESSION_RUN]


def test_upgrade_then_downgrade_gives_back_the_old_config_json(tmp_path):
    migrate(tmp_path, "0003")
    with sqlite3.connect(database_path(tmp_path)) as db:
        db.execute("INSERT INTO tenants VALUES (?, 'old', 0)", (TENANT,))
        for run_id, config in OLD_CONFIGS.items():
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, '{}', 'active', 0, 0, 0)",
                (run_id, TENANT, TINY, json.dumps(config)),
            )
    migrate(tmp_path, "head")
    with sqlite3.connect(database_path(tmp_path)) as db:
        faces = dict(db.execute("SELECT id, face FROM runs").fetchall())
        assert "config" not in [row[1] for row in db.execute("PRAGMA table_info(runs)")]
    assert faces == {SIGNAL_RUN: "signal", SESSION_RUN: "tinker", HPCAI_RUN: "tinker"}
    migrate(tmp_path, "0003", down=True)
    with sqlite3.connect(database_path(tmp_path)) as db:
        configs = {run_id: json.loads(config) for run_id, config in db.execute(
            "SELECT id, config FROM runs"
        )}  # fmt: skip
    assert configs == OLD_CONFIGS


def test_sparse_old_configs_get_the_defaults_each_face_fell_back_to():
    """Rows missing keys get what the old code's fallbacks gave them (`lora_r` 32, the
    Tinker switches' attention-only layout, the Signal contract's defaults)."""
    tinker_row = migration.columns_from_config({"api": "tinker", "session_id": "s"})
    assert tinker_row["lora_rank"] == 32 and tinker_row["lora_alpha"] == 32.0
    assert tinker_row["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (tinker_row["face"], tinker_row["session_id"], tinker_row["optimizer"]) == (
        "tinker",
        "s",
        "adamw",
    )
    signal_row = migration.columns_from_config({})
    assert (signal_row["face"], signal_row["optimizer"], signal_row["bf16"]) == (
        "signal",
        "adamw_8bit",
        True,
    )
    assert signal_row["requested_target_modules"] is None and len(signal_row["target_modules"]) == 7
    assert signal_row["optimizer_params"] == {
        "learning_rate": 3e-4,
        "weight_decay": 0.01,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "grad_clip_norm": 0.0,
    }
