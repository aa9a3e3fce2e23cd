"""Every Alembic migration on both databases (SQLite and a real PostgreSQL): up from empty, down
to nothing and up again, and up from an older head with rows written under it."""

from __future__ import annotations

import time

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from frontier_signal.service.store import MIGRATIONS, Store
from frontier_signal.service.tables import Base, Checkpoint


def migrate(url: str, target: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, target)
    finally:
        engine.dispose()


def columns(url: str) -> dict[str, set[str]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names()}
    finally:
        engine.dispose()


def test_all_migrations_go_up_from_empty_down_to_nothing_and_up_again(database_url):
    migrate(database_url, "head")
    expected = {t.name: {c.name for c in t.columns} for t in Base.metadata.sorted_tables}
    found = columns(database_url)
    assert {t: found[t] for t in expected} == expected  # the migrations make what tables.py says
    migrate(database_url, "base", down=True)
    assert set(columns(database_url)) <= {"alembic_version"}
    migrate(database_url, "head")
    assert {t: columns(database_url)[t] for t in expected} == expected


def test_each_revision_is_one_step_of_one_line(database_url):
    script = ScriptDirectory.from_config(_config())
    assert len(script.get_heads()) == 1, "two migration heads: chain the newer one after the other"
    revisions = [r.revision for r in script.walk_revisions("base", "heads")]
    for revision in reversed(revisions):  # oldest first, one step at a time
        migrate(database_url, revision)


def test_a_database_at_0002_with_rows_upgrades_and_keeps_them(database_url):
    migrate(database_url, "0002")
    now = time.time()
    engine = create_engine(database_url)
    with engine.begin() as db:
        db.execute(text("INSERT INTO tenants VALUES ('t', 'old', :now)"), {"now": now})
        db.execute(
            text(
                "INSERT INTO runs VALUES ('run_old', 't', 'm', '{\"lora_r\": 4}', '{}', 'active', "
                "1, :now, :now)"
            ),
            {"now": now},
        )
        db.execute(
            text(
                "INSERT INTO checkpoints (id, run_id, name, kind, step, path, size, sha256, "
                "created_at, public) VALUES ('c1', 'run_old', 'n', 'training', 1, '/p', 10, 's', "
                ":now, :public)"
            ),
            {"now": now, "public": True},
        )
        db.execute(
            text(
                "INSERT INTO metrics (run_id, step, loss, grad_norm, learning_rate, tokens, time) "
                "VALUES ('run_old', 1, 2.5, 1.0, 0.001, 40, :now)"
            ),
            {"now": now},
        )
    engine.dispose()

    store = Store(database_url)  # migrates to head
    try:
        assert store.get_run("run_old").config == {"lora_r": 4}
        (old,) = store.list_metrics("run_old")
        assert (old.loss, old.tokens, old.seconds) == (2.5, 40, None)
        checkpoint = store.get_checkpoint("c1")
        assert (checkpoint.public, checkpoint.size) == (True, 10)
        big = Checkpoint(
            id="c2",
            run_id="run_old",
            name="merged",
            kind="merged",
            step=1,
            path="/q",
            size=5 * 2**30,
            sha256="s",
            created_at=now,
        )
        store.add_checkpoint(big)
        assert store.get_checkpoint("c2").size == 5 * 2**30
    finally:
        store.close()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
