"""/v1/analytics on a real PostgreSQL: the summary and per-rule reports add up what the log
sink counted (each log once, however often it is delivered), what the tracker recorded and
what the activity reader credited; another store's numbers and rules stay out of sight; the
attribution settings round-trip; a deleted rule takes its analytics along; the routes are
in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.harness import ApiThread, api_client, bearer
from tests.pipeline import add_rule
from tests.support import make_store, unique, wait_until_consumed
from wooflow import engagement
from wooflow.api.funnel import rebuild
from wooflow.clock import FileClock
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.schemas.codec import get_codec
from wooflow.schemas.types import ExecutionLog
from wooflow.settings import Settings
from wooflow.sink.runner import LogSink
from wooflow.stores import StoreCache
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


def seed(settings: Settings, engine: Engine, store_id: str, rule: int, tmp: Path) -> None:
    """Opens and clicks through the tracker (on a workflow clock set to each day), and an
    order credited to the message (partly refunded) and one cancelled, as the activity
    reader writes them."""
    clock = FileClock(tmp / f"clock-{store_id}")
    s = settings.model_copy(update={"clock": f"file:{clock.path}"})
    store = StoreCache(engine, ttl=0).get(store_id)
    assert store is not None
    key = engagement.signing_key(s, store.link_key)
    m = engagement.Message(store_id, unique("m"), "c1", rule, 0, int(DAY1.timestamp()), int(DAY2.timestamp()) + 86_400)
    scanned = engagement.Message(store_id, unique("m"), "c2", rule, 0, m.issued, m.expires)
    clicked_only = engagement.Message(store_id, unique("m"), "c3", rule, 0, m.issued, m.expires)  # images off
    person = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"}
    with ApiThread(s) as api:
        def hit(path: str, agent: dict[str, str] = person) -> None:
            r = httpx.get(f"{api.url}{path}", headers=agent, timeout=10)
            assert r.status_code in (200, 302), r.text

        clock.set(DAY1)
        hit(f"/t/o/{engagement.sign(key, m)}.gif")
        hit(f"/t/c/{engagement.sign(key, m, 0, 'https://a.example/')}?u=https%3A%2F%2Fa.example%2F")
        hit(f"/t/o/{engagement.sign(key, scanned)}.gif", {"User-Agent": "Mozilla/5.0 (compatible; Barracuda)"})
        clock.set(DAY2)
        hit(f"/t/c/{engagement.sign(key, m, 1, 'https://b.example/')}?u=https%3A%2F%2Fb.example%2F")  # not a first
        hit(f"/t/o/{engagement.sign(key, m)}.gif")
        hit(f"/t/c/{engagement.sign(key, clicked_only, 0, 'https://a.example/')}?u=https%3A%2F%2Fa.example%2F")
    with engine.begin() as conn:
        for oid, total, refunded, voided in ((1, "80.00", "15.50", False), (2, "30.00", "0", True)):
            conn.execute(text("INSERT INTO message_conversions (store_id, order_id, message_id, rule_id, step, "
                              "customer_key, touch, touched_at, ordered_at, currency, revenue, refunded, voided, "
                              "order_modified) VALUES (:s, :o, :m, :r, 0, 'c1', 'click', :at, :at, 'PLN', :t, :rf, "
                              ":v, :at)"),
                         {"s": store_id, "o": oid, "m": m.message_id, "r": rule, "at": DAY2, "t": Decimal(total),
                          "rf": Decimal(refunded), "v": voided})


def counts(engine: Engine, store_id: str) -> list[list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return [sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} WHERE store_id = :s"), {"s": store_id}))
                for t in ("execution_daily", "engagement_daily", "engagement_firsts")]


def test_summary_and_rule_reports_add_up_and_stay_in_their_store(settings: Settings, engine: Engine,
                                                                 tmp_path: Path) -> None:
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
    seed(settings, engine, mine.id, rule, tmp_path)
    seed(settings, engine, theirs.id, other, tmp_path)
    # what the sink and the tracker counted as they went is what their rows add up to
    kept = counts(engine, mine.id)
    with engine.connect() as conn, conn.begin() as tx:
        rebuild(conn, mine.id)
        assert [sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} WHERE store_id = :s"),
                                                      {"s": mine.id}))
                for t in ("execution_daily", "engagement_daily", "engagement_firsts")] == kept
        tx.rollback()
    assert kept[1] and kept[2]

    client = api_client(settings)
    me, them = bearer(engine, mine.id), bearer(engine, theirs.id)
    days = {"since": DAY1.date().isoformat(), "until": DAY2.date().isoformat()}
    got = client.get("/v1/analytics/summary", params=days, headers=me)
    assert got.status_code == 200, got.text
    body = got.json()
    expected = {"executions": {"succeeded": 5, "skipped": 1}, "sends": 4, "opened": 2, "clicked": 2,
                "conversions": 1, "revenue": {"PLN": "64.5000"}, "refunded": {"PLN": "15.5000"}}
    assert {k: body["totals"][k] for k in expected} == expected
    by_rule = {r["rule_id"]: r for r in body["rules"]}
    assert set(by_rule) == {rule, quiet}, "every rule of the store, none of another's"
    assert by_rule[rule]["name"] == "Welcome" and by_rule[rule]["sends"] == 4 and by_rule[rule]["holdout"] is None
    assert by_rule[quiet]["sends"] == 0 and by_rule[quiet]["executions"] == {}
    assert body["attribution"] == {"window_days": 5, "touch": "engagement", "track_transactional": False,
                                   "count_machine": False}

    machines = {"window_days": 5, "touch": "engagement", "track_transactional": False, "count_machine": True}
    assert client.put("/v1/analytics/settings", json=machines, headers=me).status_code == 200
    assert client.get("/v1/analytics/summary", params=days, headers=me).json()["totals"]["opened"] == 3
    assert client.put("/v1/analytics/settings", json=body["attribution"], headers=me).status_code == 200

    report = client.get(f"/v1/analytics/rules/{rule}", params=days, headers=me).json()
    assert [(s["step"], s["action_type"], s["executions"], s["sends"]) for s in report["steps"]] == [
        (0, "send_email", {"succeeded": 4, "skipped": 1}, 4), (1, "create_admin_task", {"succeeded": 1}, 0)]
    # a message counts as opened and clicked on the day of its first open and click; a click is an open
    assert [(d["day"], d["sends"], d["opened"], d["clicked"], d["conversions"]) for d in report["daily"]] == [
        (DAY1.date().isoformat(), 3, 1, 1, 0), (DAY2.date().isoformat(), 1, 1, 1, 1)]
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
