"""The API routes the web console stands on: keyset pages of the execution log, the outcome
summary, one execution with its claim, a rule's history, who a token is, and the operators'
dead-letter routes refusing store tokens."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, insert

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.support import make_store, unique
from wooflow.api.auth import create_token
from wooflow.db.tables import action_executions, execution_logs
from wooflow.settings import Settings

pytestmark = pytest.mark.integration

RULE = {"name": "Note", "trigger": "new_order", "actions": [{"type": "add_order_note", "params": {"note": "n"}}]}


def _logs(engine: Engine, store_id: str, rule_id: int, times: list[datetime], status: str = "succeeded",
          dry_run: bool = False, customer: str = "c1") -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"log_id": unique("log"), "idempotency_key": unique("k"), "store_id": store_id, "customer_key": customer,
         "rule_id": rule_id, "event_id": unique("e"), "step": 0, "action_type": "add_order_note",
         "status": status, "dry_run": dry_run, "executed_at": t} for t in times]
    with engine.begin() as conn:
        conn.execute(insert(execution_logs), rows)
    return rows


def test_log_pages_by_cursor_cover_every_entry_once_newest_first(settings: Settings, engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    rule = add_rule(engine, a.id, RULE)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rng = random.Random(5)
    times = [now - timedelta(seconds=rng.randrange(5000)) for _ in range(120)] + [now - timedelta(hours=3)] * 15
    rows = _logs(engine, a.id, rule, times)  # 15 entries share one instant: the cursor's log_id breaks the tie
    _logs(engine, b.id, add_rule(engine, b.id, RULE), [now] * 5)
    client, h = api_client(settings), bearer(engine, a.id)
    seen: list[dict[str, str]] = []
    cursor = None
    for _ in range(20):
        page = client.get("/v1/logs", params={"limit": 25, **({"cursor": cursor} if cursor else {})}, headers=h).json()
        seen += page["logs"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert cursor is None and len(seen) == len(rows) == 135
    assert {r["log_id"] for r in seen} == {r["log_id"] for r in rows}  # every one, once; none of store B's
    keys = [(datetime.fromisoformat(r["executed_at"]), r["log_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    # a full last page says so without an empty page after it
    assert client.get("/v1/logs", params={"limit": 135}, headers=h).json()["next_cursor"] is None


def test_log_filters_combine_with_the_cursor(settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    rule = add_rule(engine, store.id, RULE)
    now = datetime.now(timezone.utc)
    failed = _logs(engine, store.id, rule, [now - timedelta(minutes=i) for i in range(7)], status="failed",
                   customer="c9")
    _logs(engine, store.id, rule, [now - timedelta(minutes=i, seconds=30) for i in range(7)])
    client, h = api_client(settings), bearer(engine, store.id)
    first = client.get("/v1/logs", params={"limit": 4, "status": "failed"}, headers=h).json()
    rest = client.get("/v1/logs", params={"limit": 4, "status": "failed", "cursor": first["next_cursor"]},
                      headers=h).json()
    assert [r["log_id"] for r in first["logs"] + rest["logs"]] == [r["log_id"] for r in failed]
    assert rest["next_cursor"] is None
    by_customer = client.get("/v1/logs", params={"customer_key": "c9"}, headers=h).json()["logs"]
    assert {r["status"] for r in by_customer} == {"failed"} and len(by_customer) == 7
    since = client.get("/v1/logs", params={"since": (now - timedelta(minutes=2, seconds=1)).isoformat()},
                       headers=h).json()["logs"]
    assert len(since) == 5  # 0, 1, 2 minutes ago failed; 30 s and 1:30 ago succeeded
    bad = client.get("/v1/logs", params={"cursor": "not-a-cursor"}, headers=h)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"


def test_the_summary_counts_outcomes_per_rule_of_the_callers_store(settings: Settings, engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    r1, r2 = add_rule(engine, a.id, {**RULE, "name": "First"}), add_rule(engine, a.id, {**RULE, "name": "Second"})
    now = datetime.now(timezone.utc)
    _logs(engine, a.id, r1, [now] * 3)
    _logs(engine, a.id, r1, [now], status="failed")
    _logs(engine, a.id, r2, [now] * 2, status="skipped")
    _logs(engine, a.id, r2, [now - timedelta(days=40)])  # outside the default 30 days
    _logs(engine, a.id, r2, [now], status="dry_run", dry_run=True)
    _logs(engine, b.id, add_rule(engine, b.id, RULE), [now] * 9)
    client = api_client(settings)
    got = client.get("/v1/logs/summary", headers=bearer(engine, a.id)).json()["rules"]
    assert got == [{"rule_id": r1, "rule_name": "First", "total": 4, "outcomes": {"succeeded": 3, "failed": 1}},
                   {"rule_id": r2, "rule_name": "Second", "total": 2, "outcomes": {"skipped": 2}}]
    dry = client.get("/v1/logs/summary", params={"dry_run": True}, headers=bearer(engine, a.id)).json()["rules"]
    assert [(r["rule_id"], r["outcomes"]) for r in dry] == [(r2, {"dry_run": 1})]


def test_one_execution_comes_with_its_claim_and_only_to_its_store(settings: Settings, engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    rule = add_rule(engine, a.id, RULE)
    row = _logs(engine, a.id, rule, [datetime.now(timezone.utc)])[0]
    with engine.begin() as conn:
        conn.execute(insert(action_executions).values(
            idempotency_key=row["idempotency_key"], store_id=a.id, rule_id=rule, event_id=row["event_id"], step=0,
            action_type="add_order_note", status="succeeded", attempts=1, result={"note_id": 7}))
    client = api_client(settings)
    got = client.get(f"/v1/logs/{row['log_id']}", headers=bearer(engine, a.id)).json()
    assert got["execution"]["result"] == {"note_id": 7} and got["execution"]["status"] == "succeeded"
    assert client.get(f"/v1/logs/{row['log_id']}", headers=bearer(engine, b.id)).status_code == 404


def test_a_rules_history_lists_its_versions_newest_first(settings: Settings, engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    client, h = api_client(settings), bearer(engine, a.id)
    rid = client.post("/v1/rules", json=RULE, headers=h).json()["id"]
    client.put(f"/v1/rules/{rid}", json={**RULE, "name": "Note v2"}, headers=h)
    client.put(f"/v1/rules/{rid}", json={**RULE, "name": "Note v3"}, headers=h)
    entries = client.get(f"/v1/rules/{rid}/history", headers=h).json()["entries"]
    assert [(e["action"], e["version"], e["rule"]["name"]) for e in entries] == [
        ("updated", 3, "Note v3"), ("updated", 2, "Note v2"), ("created", 1, "Note")]
    assert client.get(f"/v1/rules/{rid}/history", headers=bearer(engine, b.id)).status_code == 404


def test_me_names_the_tokens_store_and_dead_letters_are_for_operators(settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    client = api_client(settings)
    mine = client.get("/v1/me", headers=bearer(engine, store.id)).json()
    assert mine == {"store_id": store.id, "store_name": store.id, "currency": "PLN", "operator": False}
    operator = {"Authorization": f"Bearer {create_token(engine, None, 'op')}"}
    assert client.get("/v1/me", headers=operator).status_code == 400  # an operator names the store
    assert client.get("/v1/me", headers={**operator, "X-Wooflow-Store": store.id}).json()["operator"] is True
    assert client.get("/v1/dlq", headers=bearer(engine, store.id)).status_code == 403
    assert client.get("/v1/dlq").status_code == 401
    assert client.post("/v1/dlq/0/0/redrive", headers=bearer(engine, store.id)).status_code == 403
