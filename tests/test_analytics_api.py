"""/v1/analytics on a real PostgreSQL: the summary and per-rule reports add up what the log
sink counted (each log once, however often it is delivered), what the tracker recorded and
what the activity reader credited; another store's numbers and rules stay out of sight; the
attribution settings round-trip; a deleted rule takes its analytics along; the routes are
in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.support import make_store, unique, wait_until_consumed
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.schemas.types import ExecutionLog
from wooflow.settings import Settings
from wooflow.sink.runner import LogSink
from wooflow.workers.testing import RoleThread

pytestmark = pytest.mark.integration
DAY1 = datetime(2026, 2, 2, 10, tzinfo=timezone.utc)
DAY2 = DAY1 + timedelta(days=1)
RULE = {"actions": [{"type": "send_email", "params": {"subject": "Hi", "text": "x", "marketing": True}},
                    {"type": "create_admin_task", "params": {"title": "t"}, "delay": "day 1"}],
        "trigger": "new_order"}


def log(store: str, rule: int, step: int, action: str, status: str, at: datetime, ckey: str = "c1") -> ExecutionLog:
    key = unique("k")
    return {"log_id": f"{key}:1", "idempotency_key": key, "store_id": store, "customer_key": ckey, "rule_id": rule,
            "event_id": "e", "step": step, "action_type": action, "status": status, "message": "", "attempt": 1,
            "duration_ms": 1.0, "executed_at": at, "received_at": None, "details_json": "{}", "dry_run": False}


def seed(engine: Engine, store: str, rule: int, message_id: str) -> None:
    """An open and a click of one message, an order credited to it (partly refunded), one
    cancelled, as the tracker and the activity reader write them."""
    with engine.begin() as conn:
        for kind, link, at in (("open", -1, DAY1), ("click", 0, DAY1), ("click", 1, DAY2)):
            conn.execute(text("INSERT INTO engagements (message_id, kind, link, machine, store_id, rule_id, step, "
                              "customer_key, at) VALUES (:m, :k, :l, false, :s, :r, 0, 'c1', :at)"),
                         {"m": message_id, "k": kind, "l": link, "s": store, "r": rule, "at": at})
        conn.execute(text("INSERT INTO engagements (message_id, kind, link, machine, store_id, rule_id, step, "
                          "customer_key, at) VALUES (:m, 'open', -1, true, :s, :r, 0, 'c2', :at)"),
                     {"m": message_id + "b", "s": store, "r": rule, "at": DAY1})  # a scanner's only
        for oid, total, refunded, voided in ((1, "80.00", "15.50", False), (2, "30.00", "0", True)):
            conn.execute(text("INSERT INTO message_conversions (store_id, order_id, message_id, rule_id, step, "
                              "customer_key, touch, touched_at, ordered_at, currency, revenue, refunded, voided, "
                              "order_modified) VALUES (:s, :o, :m, :r, 0, 'c1', 'click', :at, :at, 'PLN', :t, :rf, "
                              ":v, :at)"),
                         {"s": store, "o": oid, "m": message_id, "r": rule, "at": DAY2, "t": Decimal(total),
                          "rf": Decimal(refunded), "v": voided})


def test_summary_and_rule_reports_add_up_and_stay_in_their_store(settings: Settings, engine: Engine) -> None:
    mine, theirs = make_store(engine), make_store(engine)
    rule = add_rule(engine, mine.id, {"name": "Welcome", **RULE})
    quiet = add_rule(engine, mine.id, {"name": "Quiet", **RULE})
    other = add_rule(engine, theirs.id, {"name": "Theirs", **RULE})
    logs = [log(mine.id, rule, 0, "send_email", "succeeded", DAY1, f"c{i}") for i in range(3)]
    logs += [log(mine.id, rule, 0, "send_email", "skipped", DAY1), log(mine.id, rule, 1, "create_admin_task",
                                                                        "succeeded", DAY2),
             log(mine.id, rule, 0, "send_email", "succeeded", DAY2), log(theirs.id, other, 0, "send_email",
                                                                          "succeeded", DAY1)]
    codec, producer = get_codec(), Producer(settings)
    for rec in logs + logs[:4]:  # four of them delivered twice
        producer.produce(settings.topic(topics.LOGS), codec.encode("ExecutionLog", rec), key=rec["store_id"])
    producer.flush(30)
    with RoleThread(LogSink(settings), "sink"):
        wait_until_consumed(settings, settings.sink_group, [topics.LOGS])
    seed(engine, mine.id, rule, unique("m"))
    seed(engine, theirs.id, other, unique("m"))

    client = api_client(settings)
    me, them = bearer(engine, mine.id), bearer(engine, theirs.id)
    days = {"since": DAY1.date().isoformat(), "until": DAY2.date().isoformat()}
    got = client.get("/v1/analytics/summary", params=days, headers=me)
    assert got.status_code == 200, got.text
    body = got.json()
    expected = {"executions": {"succeeded": 5, "skipped": 1}, "sends": 4, "opened": 1, "clicked": 1,
                "conversions": 1, "revenue": {"PLN": "64.5000"}, "refunded": {"PLN": "15.5000"}}
    assert {k: body["totals"][k] for k in expected} == expected
    by_rule = {r["rule_id"]: r for r in body["rules"]}
    assert set(by_rule) == {rule, quiet}, "every rule of the store, none of another's"
    assert by_rule[rule]["name"] == "Welcome" and by_rule[rule]["sends"] == 4 and by_rule[rule]["holdout"] is None
    assert by_rule[quiet]["sends"] == 0 and by_rule[quiet]["executions"] == {}
    assert body["attribution"] == {"window_days": 5, "touch": "engagement", "track_transactional": False,
                                   "count_machine": False}

    report = client.get(f"/v1/analytics/rules/{rule}", params=days, headers=me).json()
    assert [(s["step"], s["action_type"], s["executions"], s["sends"]) for s in report["steps"]] == [
        (0, "send_email", {"succeeded": 4, "skipped": 1}, 4), (1, "create_admin_task", {"succeeded": 1}, 0)]
    assert [(d["day"], d["sends"], d["clicked"], d["conversions"]) for d in report["daily"]] == [
        (DAY1.date().isoformat(), 3, 1, 0), (DAY2.date().isoformat(), 1, 1, 1)]
    assert report["revenue"] == {"PLN": "64.5000"}
    one_day = client.get(f"/v1/analytics/rules/{rule}", params={"since": days["since"], "until": days["since"]},
                         headers=me).json()
    assert (one_day["sends"], one_day["conversions"]) == (3, 0)

    # another store: its own numbers only; this store's rule is not found
    assert client.get(f"/v1/analytics/rules/{rule}", params=days, headers=them).status_code == 404
    assert client.get(f"/v1/analytics/rules/{other}", params=days, headers=me).status_code == 404
    assert client.get("/v1/analytics/summary", params={**days, "store_id": mine.id}, headers=them).status_code == 404
    theirs_body = client.get("/v1/analytics/summary", params=days, headers=them).json()
    assert [r["rule_id"] for r in theirs_body["rules"]] == [other] and theirs_body["totals"]["sends"] == 1
    assert client.get("/v1/analytics/summary", params=days).status_code == 401

    # bad ranges are the caller's mistake
    bad = client.get("/v1/analytics/summary", params={"since": "2026-02-03", "until": "2026-02-01"}, headers=me)
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
    assert client.get("/v1/analytics/summary", params={"since": "2024-01-01", "until": "2026-01-01"},
                      headers=me).status_code == 422

    # a deleted rule takes its analytics along
    assert client.delete(f"/v1/rules/{rule}", headers=me).status_code == 204
    assert client.get("/v1/analytics/summary", params=days, headers=me).json()["totals"]["sends"] == 0
    with engine.connect() as conn:
        left = [conn.execute(text(f"SELECT count(*) FROM {t} WHERE rule_id = :r"), {"r": rule}).scalar_one()
                for t in ("execution_daily", "engagements", "message_conversions")]
    assert left == [0, 0, 0]


def test_attribution_settings_round_trip_and_are_validated(settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    client = api_client(settings)
    me = bearer(engine, store.id)
    assert client.get("/v1/analytics/settings", headers=me).json()["window_days"] == 5
    new: dict[str, Any] = {"window_days": 7, "touch": "send", "track_transactional": True, "count_machine": False}
    assert client.put("/v1/analytics/settings", json=new, headers=me).json() == new
    assert client.get("/v1/analytics/settings", headers=me).json() == new
    bad = client.put("/v1/analytics/settings", json={**new, "window_days": 0}, headers=me)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "window_days"
    assert client.put("/v1/analytics/settings", json={**new, "touch": "vibes"}, headers=me).status_code == 422
    with engine.connect() as conn:
        saved = conn.execute(text("SELECT settings FROM stores WHERE id = :s"), {"s": store.id}).scalar_one()
    assert saved["analytics"] == new


def test_the_routes_are_in_the_openapi_schema(settings: Settings) -> None:
    schema = api_client(settings).get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/analytics/summary", "/v1/analytics/rules/{rule_id}", "/v1/analytics/settings"} <= set(paths)
    summary = paths["/v1/analytics/summary"]["get"]
    assert summary["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Summary")
    holdout = schema["components"]["schemas"]["Holdout"]["properties"]
    assert {"conversion_lift", "revenue_per_customer_lift", "conclusive", "method"} <= set(holdout)
    assert all(not p.startswith("/t/") for p in paths), "tracking links are public, not admin API"
