"""Migration 0013_catalog on a scratch database: rules stored with the old, multi-valued
`geo_scope` keep matching what they matched — they now say `geo_regions` — with an audit
entry each; the downgrade puts them back."""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from wooflow.db.engine import normalise_url
from wooflow.db.migrate import alembic_config, upgrade

pytestmark = pytest.mark.integration

MIGRATION = Path(__file__).resolve().parents[1] / "wooflow/db/migrations/versions/0013_catalog.py"


def _revisions() -> tuple[str, str]:
    spec = importlib.util.spec_from_file_location("m0013", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.down_revision, module.revision


@pytest.fixture
def scratch_db(services: Any) -> Iterator[str]:
    url = make_url(normalise_url(services.database_url))
    name = f"wooflow_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_stored_geo_scope_conditions_become_geo_regions(scratch_db: str) -> None:
    before, ours = _revisions()
    upgrade(scratch_db, before)
    old = {"match": "any", "conditions": [
        {"field": "geo_scope", "operator": "equals", "value": "eu"},
        {"match": "all", "conditions": [{"field": "geo_scope", "operator": "not_in", "value": "non_eu"},
                                        {"field": "order_total", "operator": "gt", "value": "5"}]}]}
    engine = create_engine(normalise_url(scratch_db))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO stores (id, url, webhook_secret) VALUES ('s', 'http://x', 'k')"))
            ids = [conn.execute(text(
                "INSERT INTO rules (store_id, name, trigger, conditions, actions) VALUES "
                "('s', :n, 'new_order', CAST(:c AS jsonb), '[]'::jsonb) RETURNING id"),
                {"n": n, "c": json.dumps(c)}).scalar_one()
                for n, c in (("geo", old), ("plain", {"match": "all", "conditions": []}))]
        upgrade(scratch_db, ours)
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT id, conditions FROM rules")).all())
            audits = conn.execute(text("SELECT rule_id, actor, details FROM rule_audit")).all()
            assert conn.execute(text("SELECT count(*) FROM product_catalog")).scalar_one() == 0
        renamed = json.loads(json.dumps(old).replace('"geo_scope"', '"geo_regions"'))
        assert stored == {ids[0]: renamed, ids[1]: {"match": "all", "conditions": []}}
        assert [(a.rule_id, a.actor, a.details["renamed_field"]) for a in audits] == \
            [(ids[0], "migration 0013_catalog", {"from": "geo_scope", "to": "geo_regions"})]
        command.downgrade(alembic_config(scratch_db), before)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT conditions FROM rules WHERE id = :i"), {"i": ids[0]}).scalar_one() == old
            assert conn.execute(text("SELECT to_regclass('product_catalog')")).scalar_one() is None
    finally:
        engine.dispose()
