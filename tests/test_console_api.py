"""The API routes the web console stands on: keyset pages of the execution log, the outcome
summary, one execution with its claim, a rule's history, who a token is, the operators'
dead-letter and lag routes refusing store tokens, the dry run's search for orders and
customers and the condition builder's category and tag names — each in its own store."""

from __future__ import annotations

import random
import socket
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.support import make_store, unique
from wooflow.api.auth import create_token
from wooflow.api.operations import DEADLINE_S
from wooflow.consumer.catalog import CatalogProduct
from wooflow.consumer.catalog import save as save_products
from wooflow.db.tables import (
    action_executions,
    customer_identities,
    customer_orders,
    customer_state,
    execution_logs,
    order_state,
)
from wooflow.kafka import topics
from wooflow.kafka.producer import Producer
from wooflow.producers.keys import email_hash
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


# ---- dry-run subjects, catalog names, consumer lag ---------------------------------------------

def _order(conn: Connection, store: str, order_id: int, key: str, status: str = "processing") -> None:
    conn.execute(insert(order_state).values(store_id=store, order_id=order_id, customer_key=key, status=status,
                                            first_event_id=unique("e"), total=Decimal("80.00"), currency="PLN",
                                            created_ms=1_770_000_000_000 + order_id))


def _customer(conn: Connection, store: str, key: str, email: str, customer_id: int | None = None) -> None:
    conn.execute(insert(customer_state).values(store_id=store, customer_key=key, customer_id=customer_id, email=email,
                                               order_count=1))


def test_search_finds_orders_and_customers_by_number_and_email_in_the_callers_store_only(
        settings: Settings, engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    ala, carol = (f"g{email_hash(e)}" for e in ("ala@example.com", "carol@example.com"))
    with engine.begin() as conn:
        _order(conn, a.id, 101, ala)  # a guest's order
        _customer(conn, a.id, ala, "ala@example.com")
        _order(conn, a.id, 102, "c7")
        _order(conn, a.id, 103, "c7", "completed")
        _customer(conn, a.id, "c7", "bob@example.com", 7)
        conn.execute(insert(customer_identities).values(store_id=a.id, email_hash=email_hash("bob@example.com"),
                                                        customer_id=7))
        # a purchase only the activity reader recorded, under the order's key and the guest key
        for key in ("c8", carol):
            conn.execute(insert(customer_orders).values(store_id=a.id, customer_key=key, order_id=104,
                                                        ordered_at=datetime(2026, 2, 2, tzinfo=timezone.utc),
                                                        currency="EUR", revenue=Decimal("12.50"),
                                                        order_modified=datetime(2026, 2, 2, tzinfo=timezone.utc)))
        _order(conn, b.id, 101, "c7")  # another store: the same numbers and keys
        _customer(conn, b.id, "c7", "theirs@example.com", 7)
        _order(conn, b.id, 999, "c9")
    client, h = api_client(settings), bearer(engine, a.id)

    def found(q: str, headers: dict[str, str] = h) -> tuple[list[tuple[int, str, str]], list[tuple[str, Any]]]:
        r = client.get("/v1/search", params={"q": q}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        return ([(o["order_id"], o["customer_key"], o["email"] or "") for o in body["orders"]],
                [(c["customer_key"], c["customer_id"]) for c in body["customers"]])

    assert found("")[0] == [(104, "c8", ""), (103, "c7", "bob@example.com"), (102, "c7", "bob@example.com"),
                            (101, ala, "ala@example.com")]  # newest first, none of store B's
    assert found("#102") == ([(102, "c7", "bob@example.com")], [])
    assert found("7") == ([(103, "c7", "bob@example.com"), (102, "c7", "bob@example.com")], [("c7", 7)])
    assert found(" Bob@Example.com ") == ([(103, "c7", "bob@example.com"), (102, "c7", "bob@example.com")],
                                          [("c7", 7)])  # through the account the bridge linked
    assert found("ala@example.com") == ([(101, ala, "ala@example.com")], [(ala, None)])  # a guest: no account
    order = client.get("/v1/search", params={"q": "carol@example.com"}, headers=h).json()["orders"]
    assert [(o["order_id"], o["customer_key"], o["status"], o["total"], o["currency"]) for o in order] == [
        (104, carol, "", "12.5000", "EUR")]  # a purchase, under the guest key searched: its status is not kept
    assert found("Ala Kowalska") == ([], [])  # names are not kept
    assert found("99999999999999999999") == ([], [])  # beyond any id: nothing, not an error
    theirs = bearer(engine, b.id)
    assert found("101", theirs) == ([(101, "c7", "theirs@example.com")], [])
    assert found("ala@example.com", theirs) == ([], [])
    assert client.get("/v1/search", params={"q": "101", "store_id": a.id}, headers=theirs).status_code == 404
    assert client.get("/v1/search", params={"q": "101"}).status_code == 401


def test_catalog_terms_are_named_by_the_newest_product_and_stay_in_their_store(settings: Settings,
                                                                              engine: Engine) -> None:
    a, b = make_store(engine), make_store(engine)
    with engine.begin() as conn:  # as the rule consumer writes them
        save_products(conn, [
            CatalogProduct(a.id, 1, category_ids=(12, 15), tag_ids=(3,), modified_ms=100,
                           category_names=("Teapots", "Cups"), tag_names=("Gift",)),
            CatalogProduct(a.id, 2, category_ids=(12,), modified_ms=50, category_names=("Tea pots",)),
            CatalogProduct(a.id, 3, category_ids=(20,), modified_ms=10),  # recorded before names were kept
            CatalogProduct(b.id, 1, category_ids=(12, 31), modified_ms=100, category_names=("Theirs", "Only theirs")),
        ])
    client, h = api_client(settings), bearer(engine, a.id)
    cats = client.get("/v1/catalog/terms", params={"taxonomy": "category"}, headers=h).json()
    assert cats == {"taxonomy": "category", "terms": [{"id": 15, "name": "Cups", "products": 1},
                                                      {"id": 12, "name": "Teapots", "products": 2},
                                                      {"id": 20, "name": "", "products": 1}]}
    tags = client.get("/v1/catalog/terms", params={"taxonomy": "tag"}, headers=h).json()["terms"]
    assert tags == [{"id": 3, "name": "Gift", "products": 1}]
    theirs = client.get("/v1/catalog/terms", headers=bearer(engine, b.id)).json()["terms"]
    assert [(t["id"], t["name"]) for t in theirs] == [(31, "Only theirs"), (12, "Theirs")]
    assert client.get("/v1/catalog/terms", params={"taxonomy": "brand"}, headers=h).status_code == 422
    schema = {f["name"]: f.get("picker") for f in client.get("/v1/schema", headers=h).json()["fields"]}
    assert (schema["category"], schema["item.product_tag"], schema["billing_country"], schema["order_total"]) == (
        "category", "tag", "country", None)


def test_consumer_lag_per_role_is_for_operators_and_a_silent_broker_is_a_clear_503(
        settings: Settings, engine: Engine) -> None:
    store = make_store(engine)
    producer = Producer(settings)
    for i in range(3):  # nobody reads them: the rule consumers' group is 3 behind
        producer.produce(settings.topic(topics.ORDERS), b"{}", key=f"{store.id}:c{i}")
    producer.flush(30)
    operator = {"Authorization": f"Bearer {create_token(engine, None, 'op')}"}
    client = api_client(settings)
    r = client.get("/v1/ops/lag", headers=operator)
    assert r.status_code == 200, r.text
    roles = {x["role"]: x for x in r.json()["roles"]}
    assert set(roles) == {"rules", "workers", "sink", "scheduler"}
    assert roles["rules"]["group"] == settings.rules_group and roles["rules"]["lag"] == 3
    orders = [p for p in roles["rules"]["partitions"] if p["topic"] == settings.topic(topics.ORDERS)]
    assert sum(p["lag"] for p in orders) == 3 and all(p["committed"] is None for p in orders)
    assert roles["workers"]["lag"] == 0 and roles["sink"]["lag"] == 0
    assert client.get("/v1/ops/lag", headers=bearer(engine, store.id)).status_code == 403
    assert client.get("/v1/ops/lag").status_code == 401

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        dead = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{silent.getsockname()[1]}"})
        started = time.monotonic()
        r = api_client(dead).get("/v1/ops/lag", headers=operator)
        took = time.monotonic() - started
    assert r.status_code == 503 and "consumer lag cannot be read now" in r.json()["detail"], r.text
    assert took < DEADLINE_S + 3, took
