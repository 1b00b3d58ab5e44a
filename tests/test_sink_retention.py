"""The log sink's retention: WOOFLOW_EXECUTION_LOG_RETENTION_DAYS (or --retention-days)
deletes execution logs older than that, and keeps the rest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from tests.support import unique
from wooflow.db.tables import execution_logs
from wooflow.sink.runner import LogSink

pytestmark = pytest.mark.integration


def test_retention_setting_purges_old_logs_only(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = unique("store")
    now = datetime.now(timezone.utc)

    def row(age_days: float) -> dict:
        return {"log_id": unique("log"), "idempotency_key": unique("k"), "store_id": store, "customer_key": "c1",
                "rule_id": 1, "event_id": "e", "step": 0, "action_type": "add_points", "status": "succeeded",
                "executed_at": now - timedelta(days=age_days)}

    rows = [row(40), row(31), row(29), row(0)]
    with engine.begin() as conn:
        conn.execute(insert(execution_logs), rows)
    sink = LogSink(settings.model_copy(update={"execution_log_retention_days": 30}))
    assert sink.retention_days == 30
    assert LogSink(settings, retention_days=7).retention_days == 7, "the CLI option wins"
    sink.purge()
    with engine.connect() as conn:
        left = set(conn.execute(select(execution_logs.c.log_id).where(execution_logs.c.store_id == store)).scalars())
    assert left == {rows[2]["log_id"], rows[3]["log_id"]}
