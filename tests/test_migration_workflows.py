"""Migration 0017_workflows on a scratch database: every rule stored before it has its
current version recorded (runs stored before keep working), later edits are versioned by
the trigger, and the downgrade removes what it added."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from tests.support import fresh_database
from wooflow.db.engine import normalise_url
from wooflow.db.migrate import alembic_config, upgrade

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch_db(services: Any) -> Iterator[str]:
    with fresh_database(normalise_url(services.database_url), "wooflow_mig") as url:
        yield url


def test_rules_stored_before_get_their_version_and_edits_make_new_ones(scratch_db: str) -> None:
    upgrade(scratch_db, "0016_analytics")
    engine = create_engine(normalise_url(scratch_db))
    actions = [{"type": "add_order_note", "params": {"note": "hi"}, "delay": None}]
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO stores (id, url, webhook_secret) VALUES ('s', 'http://x', 'k')"))
            conn.execute(text("INSERT INTO rules (id, store_id, name, trigger, actions, version) "
                              "VALUES (7, 's', 'old', 'new_order', CAST(:a AS jsonb), 3)"), {"a": json.dumps(actions)})
        upgrade(scratch_db)
        with engine.begin() as conn:
            spec = conn.execute(text("SELECT spec FROM rule_versions WHERE rule_id = 7 AND version = 3")).scalar_one()
            assert spec["actions"] == actions and spec["goals"] == [] and spec["when_disabled"] == "exit"
            conn.execute(text("UPDATE rules SET actions = '[]'::jsonb WHERE id = 7"))
            assert conn.execute(text("SELECT version FROM rules WHERE id = 7")).scalar_one() == 4
            assert conn.execute(text("SELECT count(*) FROM rule_versions WHERE rule_id = 7")).scalar_one() == 2
        command.downgrade(alembic_config(scratch_db), "0016_analytics")
        with engine.connect() as conn:
            tables = {r[0] for r in conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))}
            columns = {r[0] for r in conn.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'scheduled_steps'"))}
        assert "rule_versions" not in tables and "variant_tests" not in tables
        assert not {"rule_version", "variant", "decision", "exit_kind"} & columns
        upgrade(scratch_db)  # and up again
    finally:
        engine.dispose()
