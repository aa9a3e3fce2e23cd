"""Migration 0003 on a database written before it: old metric rows keep their values and get
no training time (the dashboard shows no tokens/s for them); new rows carry it."""

from __future__ import annotations

import sqlite3
import time

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from frontier_signal.service.dashboard import metric_point
from frontier_signal.service.store import MIGRATIONS, Store
from frontier_signal.service.tables import Metric, Run


def test_a_database_at_0002_upgrades_and_old_rows_have_no_seconds(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    engine.dispose()
    with sqlite3.connect(tmp_path / "old.db") as db:
        now = time.time()
        db.execute("INSERT INTO tenants VALUES ('t', 'old', ?)", (now,))
        db.execute(
            "INSERT INTO runs VALUES ('run_old', 't', 'm', '{}', '{}', 'active', 1, ?, ?)",
            (now, now),
        )
        db.execute(
            "INSERT INTO metrics (run_id, step, loss, grad_norm, learning_rate, tokens, time) "
            "VALUES ('run_old', 1, 2.5, 1.0, 0.001, 40, ?)",
            (now,),
        )

    store = Store(url)  # migrates to head
    try:
        (old,) = store.list_metrics("run_old")
        assert (old.loss, old.tokens, old.seconds) == (2.5, 40, None)
        assert metric_point(old)["tokens_per_s"] is None
        store.add_metric(
            Metric(
                run_id="run_old",
                step=2,
                loss=2.0,
                grad_norm=1.0,
                learning_rate=1e-3,
                tokens=40,
                time=time.time(),
                seconds=0.5,
            )
        )
        (new,) = store.metrics_after("run_old", 1)
        assert metric_point(new)["tokens_per_s"] == 80.0
        assert store.latest_metric("run_old").step == 2
        assert isinstance(store.get_run("run_old"), Run)
    finally:
        store.close()
