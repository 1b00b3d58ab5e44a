"""The rules API: CRUD, 422s naming the field, store isolation, logs, schema, dry run on a
(simulated) store's real order, and a rule created through the API reaching a running
consumer within a second."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import insert, text

from tests.harness import api_client, bearer
from tests.rules_kit import EventProducer, commands, order_event
from tests.support import RoleProcess, make_sim_store, make_store, wait_for
from wooflow.db.tables import execution_logs

GOOD = {"name": "Big PL orders", "trigger": "new_order", "priority": 5, "group_label": "ops",
        "conditions": {"match": "all", "conditions": [
            {"field": "order_total", "operator": "gt", "value": "100"},
            {"match": "any", "conditions": [{"field": "billing_country", "operator": "in", "value": "PL,DE"},
                                            {"field": "geo_scope", "operator": "equals", "value": "eea"}]}]},
        "actions": [{"type": "add_order_note", "params": {"note": "big {{ order.number }}"}}]}


@pytest.fixture
def api(settings, engine):  # type: ignore[no-untyped-def]
    a, b = make_store(engine), make_store(engine)
    return api_client(settings), a, b, bearer(engine, a.id), bearer(engine, b.id)


@pytest.mark.integration
def test_crud_and_versions(api) -> None:  # type: ignore[no-untyped-def]
    client, a, _, ha, _ = api
    r = client.post("/v1/rules", json=GOOD, headers=ha)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["store_id"] == a.id and rule["version"] == 1 and rule["priority"] == 5
    rid = rule["id"]
    listed = client.get("/v1/rules", headers=ha).json()
    assert [x["id"] for x in listed["rules"]] == [rid] and listed["total"] == 1
    assert client.get("/v1/rules", params={"trigger": "first_purchase"}, headers=ha).json()["total"] == 0
    changed = {**GOOD, "enabled": False, "frequency": {"per_days": 30}}
    r = client.put(f"/v1/rules/{rid}", json=changed, headers=ha)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["enabled"] is False
    assert client.get(f"/v1/rules/{rid}", headers=ha).json()["frequency"]["per_days"] == 30
    assert client.delete(f"/v1/rules/{rid}", headers=ha).status_code == 204
    assert client.get(f"/v1/rules/{rid}", headers=ha).status_code == 404
    assert client.get("/v1/rules", headers=ha).status_code == 200
    assert client.get("/v1/rules").status_code == 401


@pytest.mark.integration
@pytest.mark.parametrize("patch, field", [
    ({"conditions": {"match": "all", "conditions": [{"field": "order_total", "operator": "bigger", "value": 1}]}},
     "conditions.conditions[0].operator"),
    ({"conditions": {"match": "all", "conditions": [{"match": "any", "conditions": [
        {"field": "geo_scope", "operator": "equals", "value": "mars"}]}]}},
     "conditions.conditions[0].conditions[0].value"),
    ({"conditions": {"match": "all", "conditions": [{"field": "nope", "operator": "equals", "value": 1}]}},
     "conditions.conditions[0].field"),
    ({"conditions": {"match": "most", "conditions": []}}, "conditions.match"),
    ({"trigger": "when_it_rains"}, "trigger"),
    ({"trigger": "high_value_order", "trigger_options": {"threshold": -5}}, "trigger_options.threshold"),
    ({"trigger": "order_status_changed", "trigger_options": {"from": "a", "sideways": 1}}, "trigger_options.sideways"),
    ({"actions": [{"type": "launch_rocket", "params": {}}]}, "actions[0].type"),
    ({"actions": [{"type": "add_order_note", "params": {}}]}, "actions[0].params.note"),
    ({"actions": [{"type": "add_order_note", "params": {"note": "x"}, "delay": "soonish"}]}, "actions[0].delay"),
    ({"actions": []}, "actions"),
    ({"frequency": {"per_days": 0}}, "frequency.per_days"),
    ({"name": ""}, "name"),
])
def test_an_invalid_rule_gets_422_naming_the_field(api, patch: dict[str, Any], field: str) -> None:  # type: ignore[no-untyped-def]
    client, _, _, ha, _ = api
    r = client.post("/v1/rules", json={**GOOD, **patch}, headers=ha)
    assert r.status_code == 422, r.text
    fields = [e["field"] for e in r.json()["errors"]]
    assert field in fields, (field, r.json())
    assert client.get("/v1/rules", headers=ha).json()["total"] == 0


@pytest.mark.integration
def test_one_store_can_never_read_or_change_another_stores_rules(api) -> None:  # type: ignore[no-untyped-def]
    client, a, b, ha, hb = api
    rid = client.post("/v1/rules", json=GOOD, headers=ha).json()["id"]
    assert client.get("/v1/rules", headers=hb).json()["total"] == 0
    assert client.get(f"/v1/rules/{rid}", headers=hb).status_code == 404
    assert client.put(f"/v1/rules/{rid}", json=GOOD, headers=hb).status_code == 404
    assert client.delete(f"/v1/rules/{rid}", headers=hb).status_code == 404
    assert client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": 1}, headers=hb).status_code == 404
    # naming the other store explicitly does not help
    assert client.get("/v1/rules", headers={**hb, "X-Wooflow-Store": a.id}).status_code == 404
    assert client.get("/v1/rules", params={"store_id": a.id}, headers=hb).status_code == 404
    # and a rule created by B lands in B
    assert client.post("/v1/rules", json=GOOD, headers=hb).json()["store_id"] == b.id
    r = client.get(f"/v1/rules/{rid}", headers=ha)
    assert r.status_code == 200 and r.json()["version"] == 1


@pytest.mark.integration
def test_logs_limit_filters_and_isolation(api, engine) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timedelta, timezone

    client, a, b, ha, hb = api
    now = datetime.now(timezone.utc)
    rows = [{"log_id": f"{a.id}-{i}", "idempotency_key": f"k{i}", "store_id": a.id, "customer_key": "c1",
             "rule_id": 1 + i % 2, "event_id": "e", "step": 0, "action_type": "add_order_note",
             "status": "succeeded" if i % 3 else "failed", "executed_at": now - timedelta(seconds=i)}
            for i in range(12)]
    rows.append({**rows[0], "log_id": f"{b.id}-0", "store_id": b.id})
    with engine.begin() as conn:
        conn.execute(insert(execution_logs), rows)
    assert client.get("/v1/logs", params={"limit": 501}, headers=ha).status_code == 422
    assert client.get("/v1/logs", params={"limit": 0}, headers=ha).status_code == 422
    page = client.get("/v1/logs", params={"limit": 500}, headers=ha).json()
    assert len(page["logs"]) == 12 and {x["store_id"] for x in page["logs"]} == {a.id}
    times = [x["executed_at"] for x in page["logs"]]
    assert times == sorted(times, reverse=True)
    assert len(client.get("/v1/logs", params={"limit": 5}, headers=ha).json()["logs"]) == 5
    assert {x["rule_id"] for x in client.get("/v1/logs", params={"rule_id": 2}, headers=ha).json()["logs"]} == {2}
    failed = client.get("/v1/logs", params={"status": "failed"}, headers=ha).json()["logs"]
    assert len(failed) == 4 and {x["status"] for x in failed} == {"failed"}
    assert [x["log_id"] for x in client.get("/v1/logs", headers=hb).json()["logs"]] == [f"{b.id}-0"]


@pytest.mark.integration
def test_schema_lists_triggers_fields_operators_and_action_parameters(api) -> None:  # type: ignore[no-untyped-def]
    client, _, _, ha, _ = api
    doc = client.get("/v1/schema", headers=ha).json()
    triggers = {t["name"]: t for t in doc["triggers"]}
    for name in ("new_order", "order_status_changed", "first_purchase", "repeat_purchase", "high_value_order",
                 "order_count_milestone", "new_customer", "product_saved", "tier_upgrade", "close_to_upgrade",
                 "tier_downgrade_risk"):
        assert name in triggers
    assert "threshold" in triggers["high_value_order"]["options"]["properties"]
    assert set(triggers["order_status_changed"]["options"]["properties"]) == {"from", "to"}
    fields = {f["name"]: f for f in doc["fields"]}
    assert fields["order_total"]["type"] == "number" and "gt" in fields["order_total"]["operators"]
    assert fields["geo_scope"]["values"] == ["pl", "eu", "eea", "non_eu"] and not fields["geo_scope"]["multi_valued"]
    assert fields["geo_regions"]["values"] == ["pl", "eu", "eea", "non_eu"] and fields["geo_regions"]["multi_valued"]
    assert "contains" in fields["geo_regions"]["operators"] and "contains" not in fields["geo_scope"]["operators"]
    assert fields["category"]["multi_valued"] and fields["product_tag"]["multi_valued"]
    assert set(fields["product_tag"]["operators"]) == {"equals", "not_equals", "in", "not_in", "contains"}
    assert {"order_count", "total_spent", "average_order_value", "tier", "points", "tags", "days_since_last_order",
            "first_order_date"} <= set(fields)
    assert [o["name"] for o in doc["operators"]] == ["equals", "not_equals", "gt", "lt", "in", "not_in", "contains",
                                                     "before", "after", "within_last_days", "not_within_last_days"]
    # AutomateWoo's order and subscription triggers, and the fields of its rules
    for name in ("order_paid", "order_pending", "order_on_hold", "order_cancelled", "order_refunded",
                 "order_partially_refunded", "order_note_added", "new_order_each_line_item",
                 "order_paid_each_line_item", "order_status_changed_each_line_item", "subscription_created",
                 "subscription_status_changed", "subscription_renewal_payment_failed", "subscription_renewal",
                 "subscription_trial_ending"):
        assert name in triggers, name
    assert set(triggers["order_note_added"]["options"]["properties"]) == {"note_type", "contains"}
    assert triggers["subscription_renewal"]["options"]["properties"]["days_before"]["default"] == 3
    new_fields = {"order_coupons", "order_created_via", "order_item_quantity", "customer_is_guest",
                  "order_is_customers_first", "customer_role", "purchased_products_all_time",
                  "purchased_categories_all_time", "first_paid_order_date", "last_paid_order_date",
                  "order_count_last_365_days", "total_spent_last_365_days", "has_active_subscription",
                  "active_subscription_products", "subscription_status", "subscription_products",
                  "subscription_billing_period", "subscription_next_payment_date", "item.product_id",
                  "item.category", "item.product_tag", "item.quantity", "item.total", "item.name"}
    assert new_fields <= set(fields)
    assert fields["customer_is_guest"]["values"] == ["yes", "no"]
    assert fields["purchased_products_all_time"]["scope"] == "history"
    assert fields["item.category"]["scope"] == "item" and fields["item.category"]["multi_valued"]
    assert "within_last_days" in fields["last_paid_order_date"]["operators"]
    note = {x["name"]: x for x in doc["actions"]}["add_order_note"]
    assert "note" in note["params"]["properties"] and "note" in note["params"]["required"]


@pytest.mark.integration
def test_dry_run_of_a_per_line_item_rule_explains_each_item(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.simulator.server import SimulatorServer

    with SimulatorServer(seed=3) as sim:
        store = make_sim_store(engine, sim)
        client = api_client(settings)
        h = bearer(engine, store.id)
        gifts = sim.store.create_category("Gifts")
        mug = sim.store.create_product("Mug", "12.00", categories=[gifts.id])
        pen = sim.store.create_product("Pen", "3.00")
        order = sim.store.create_order(line_items=[{"product_id": mug.id, "quantity": 2},
                                                   {"product_id": pen.id, "quantity": 1}],
                                       billing={"email": "ala@example.com", "country": "PL"}, status="processing")
        rule = {"name": "gift items", "trigger": "order_paid_each_line_item",
                "conditions": {"match": "all", "conditions": [
                    {"field": "item.category", "operator": "in", "value": str(gifts.id)},
                    {"field": "item.quantity", "operator": "gt", "value": 1}]},
                "actions": [{"type": "add_order_note", "params": {"note": "gift {{ item.name }}"}}]}
        rid = client.post("/v1/rules", json=rule, headers=h).json()["id"]
        out = client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": order.id}, headers=h).json()
        assert out["matched"] is True and out["trigger"]["would_fire_now"] is True
        items = {i["product_id"]: i for i in out["line_items"]}
        assert items[mug.id]["matched"] is True and items[pen.id]["matched"] is False
        assert [c["actual"] for c in items[pen.id]["conditions"]["conditions"]] == [["15"], "1"]  # Uncategorized
        # item.* fields belong to the per-line-item triggers only
        bad = client.post("/v1/rules", json={**rule, "trigger": "order_paid"}, headers=h)
        assert bad.status_code == 422 and "line item" in bad.text


@pytest.mark.integration
def test_dry_run_on_a_real_order(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.simulator.server import SimulatorServer

    with SimulatorServer(seed=3) as sim:
        store = make_sim_store(engine, sim)
        client = api_client(settings)
        h = bearer(engine, store.id)
        product = sim.store.create_product("Kettle", "150.00")
        order = sim.store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                       billing={"email": "ala@example.com", "country": "PL", "first_name": "Ala"},
                                       status="processing")
        rid = client.post("/v1/rules", json=GOOD, headers=h).json()["id"]
        r = client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": order.id}, headers=h)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["dry_run"] is True and out["matched"] is True and out["subject"] == {"type": "order", "id": order.id}
        leaves = out["conditions"]["conditions"]
        assert leaves[0]["field"] == "order_total" and leaves[0]["result"] is True and leaves[0]["actual"] == "150.0000"
        assert "holds" in leaves[0]["reason"]
        assert out["trigger"]["name"] == "new_order" and out["trigger"]["would_fire_now"] is True
        assert "checked" in out["consent"]
        # which state the rule reads, and that the store does not keep it yet (no event processed)
        assert out["state"]["rule_needs"] == "each order's first sight" and out["state"]["kept_since"] is None
        assert "not kept yet" in out["state"]["note"]
        [step] = out["actions"]
        assert step["status"] == "dry_run" and step["details"]["note"] == f"big {order.id}"
        assert sim.store.get_order_notes(order.id) == [] or all(
            not n.note.startswith("big") for n in sim.store.get_order_notes(order.id))
        # a small order does not match, and says why
        cup = sim.store.create_product("Cup", "5.00")
        cheap = sim.store.create_order(line_items=[{"product_id": cup.id, "quantity": 1}],
                                       billing={"email": "b@example.com", "country": "US"})
        out2 = client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": cheap.id}, headers=h).json()
        assert out2["matched"] is False and out2["conditions"]["conditions"][0]["result"] is False
        assert client.post(f"/v1/rules/{rid}/dry-run", json={"order_id": 999999}, headers=h).status_code == 404
        assert client.post(f"/v1/rules/{rid}/dry-run", json={}, headers=h).status_code == 422
        with engine.connect() as conn:
            audits = conn.execute(text("SELECT action, dry_run FROM rule_audit WHERE rule_id=:r ORDER BY id"),
                                  {"r": rid}).all()
            logs = conn.execute(text("SELECT status, dry_run FROM execution_logs WHERE rule_id=:r AND store_id=:s"),
                                {"r": rid, "s": store.id}).all()
        assert [tuple(a) for a in audits] == [("created", False), ("dry_run", True), ("dry_run", True)]
        assert [tuple(x) for x in logs] == [("dry_run", True), ("dry_run", True)]
        listed = client.get("/v1/logs", params={"dry_run": "true"}, headers=h).json()["logs"]
        assert len(listed) == 2


@pytest.mark.integration
def test_dry_run_of_a_scheduled_trigger_asks_the_scan(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """No event fires a win-back rule: the dry run reports whether the scheduler's scan
    finds the customer now — and not once the scan has fired it for this period."""
    from datetime import datetime, timedelta, timezone

    from wooflow.clock import FrozenClock
    from wooflow.consumer.engine import RuleEngine
    from wooflow.consumer.rules import RuleCache
    from wooflow.scheduler.scan import Scanner
    from wooflow.scheduler.synth import Firer
    from wooflow.simulator.server import SimulatorServer
    from wooflow.stores import StoreCache

    with SimulatorServer(seed=5) as sim:
        store = make_sim_store(engine, sim)
        client = api_client(settings)
        h = bearer(engine, store.id)
        away = sim.store.create_customer("away@example.com", first_name="Ola")
        recent = sim.store.create_customer("recent@example.com", first_name="Ela")
        now = datetime.now(timezone.utc)
        with engine.begin() as conn:
            for c, days in ((away, 100), (recent, 3)):
                conn.execute(text("INSERT INTO customer_calendar (store_id, customer_key, customer_id, email, "
                                  "first_name, last_order_at, last_order_id) VALUES (:s, :k, :i, :e, 'x', :t, 7)"),
                             {"s": store.id, "k": f"c{c.id}", "i": c.id, "e": c.email, "t": now - timedelta(days=days)})
        rid = client.post("/v1/rules", json={"name": "win back", "trigger": "customer_inactive",
                                             "trigger_options": {"days": 30}, "actions": GOOD["actions"]},
                          headers=h).json()["id"]

        def trigger(customer_id: int) -> dict[str, Any]:
            r = client.post(f"/v1/rules/{rid}/dry-run", json={"customer_id": customer_id}, headers=h)
            assert r.status_code == 200, r.text
            return r.json()["trigger"]  # type: ignore[no-any-return]

        t = trigger(away.id)
        assert t["name"] == "customer_inactive" and t["would_fire_now"] is True, t
        assert "period order:7" in t["reason"]
        t = trigger(recent.id)
        assert t["would_fire_now"] is False and "does not find this customer" in t["reason"], t
        # the scan fires it once for this inactivity period; after that the dry run says so
        rules = RuleCache(engine)
        rules.refresh(force=True)
        scanner = Scanner(settings, engine, rules, Firer(RuleEngine(rules)), FrozenClock(), StoreCache(engine, 0))
        rule = rules.get(rid)
        assert rule is not None and scanner.scan_rule(store, rule, "customer_inactive", now) == 1
        assert trigger(away.id)["would_fire_now"] is False

        # a behaviour trigger: the scan's query narrowed to the customer (three views of one product)
        with engine.begin() as conn:
            for c, views in ((away, 3), (recent, 1)):
                for n in range(views):
                    conn.execute(text("INSERT INTO storefront_activity (event_id, store_id, customer_key, session_id, "
                                      "kind, subject, category, occurred_at) VALUES (:e, :s, :k, 'sess', "
                                      "'product_viewed', '42', '', :t)"),
                                 {"e": f"{store.id}-{c.id}-{n}", "s": store.id, "k": f"c{c.id}",
                                  "t": now - timedelta(hours=n + 1)})
        rid = client.post("/v1/rules", json={"name": "browsed", "trigger": "product_viewed",
                                             "trigger_options": {"times": 3}, "actions": GOOD["actions"]},
                          headers=h).json()["id"]
        assert trigger(away.id)["would_fire_now"] is True
        assert trigger(recent.id)["would_fire_now"] is False


@pytest.mark.e2e
def test_a_rule_created_through_the_api_reaches_a_running_consumer_within_a_second(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    client = api_client(settings)
    h = bearer(engine, store.id)
    with ExitStack() as stack:
        rules = RoleProcess("rules", settings, logs_dir, WOOFLOW_RULES_RELOAD_S="3600").start()  # no fallback help
        stack.callback(rules.stop)
        prod = EventProducer(settings)
        # the consumer is running and caught up: a probe for an unrelated rule comes through
        warm = client.post("/v1/rules", json={"name": "warm", "trigger": "new_order", "conditions": {
            "match": "all", "conditions": [{"field": "order_total", "operator": "equals", "value": "1"}]},
            "actions": GOOD["actions"]}, headers=h).json()["id"]
        n = 0

        def probe(total: str) -> int:
            nonlocal n
            n += 1
            prod.send("OrderEvent", order_event(store.id, n, customer_id=n, total=total))
            prod.flush()
            return n

        def warmed() -> bool:
            probe("1")
            return any(c["rule_id"] == warm for c in commands(settings, timeout=10))

        wait_for(warmed, 60, 0.5, "the consumer to run with the warm-up rule")
        sent: dict[int, float] = {}
        t0 = time.monotonic()
        rid = client.post("/v1/rules", json={**GOOD, "conditions": {}}, headers=h).json()["id"]
        while time.monotonic() - t0 < 2.0:
            sent[probe("500")] = time.monotonic() - t0
            time.sleep(0.05)  # pacing: a probe every 50 ms while the rule is created, not a wait
        hit = wait_for(lambda: {int(c["subject_id"]) for c in commands(settings) if c["rule_id"] == rid}, 30, 0.3,
                       "commands of the new rule")
        late = [oid for oid, at in sent.items() if at >= 1.0]
        assert late and set(late) <= hit, f"probes sent ≥1 s after creation that did not fire: {set(late) - hit}"
        first = min(sent[o] for o in hit if o in sent)
        print(f"rule in effect {first:.3f}s after its creation was requested")
        assert "loaded rules" in rules.log_text()
