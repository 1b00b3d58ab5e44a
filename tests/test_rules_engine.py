"""The rule engine end to end on the real broker and database: triggers from stored state,
customer state, frequency limits, replay safety, delayed steps, dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from tests.harness import api_client, bearer
from tests.pipeline import add_rule
from tests.rules_kit import (
    ConsumerThread,
    EventProducer,
    commands,
    customer_event,
    isolated_triggers,
    later,
    order_event,
    rules_over_orders,
)
from tests.support import make_store, read_topic, wait_for, wait_until_consumed
from wooflow.kafka import topics
from wooflow.stores import upsert_store

NOTE = [{"type": "add_order_note", "params": {"note": "n"}}]


def rule(trigger: str, name: str = "", options: dict[str, Any] | None = None, conditions: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"name": name or trigger, "trigger": trigger, "trigger_options": options or {},
            "conditions": conditions or {}, "actions": NOTE, **extra}


def fired(cmds: list[dict[str, Any]], rule_id: int) -> list[str]:
    """Subjects of the rule's commands, one per idempotency key (a re-delivered event yields
    the same key again, which workers execute once)."""
    return sorted({c["idempotency_key"]: c["subject_id"] for c in cmds if c["rule_id"] == rule_id}.values())


@pytest.mark.integration
def test_order_triggers_come_from_the_state_wooflow_stored(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = with_loyalty(engine, make_store(engine), {"points_per_unit": 1, "tiers": {
        "metric": "total_spent", "levels": [{"name": "silver", "min": 300}, {"name": "gold", "min": 1000}],
        "close_within": "100"}})
    s = store.id
    ids = {name: add_rule(engine, s, r) for name, r in {
        "new": rule("new_order"),
        "to_completed": rule("order_status_changed", options={"from": "processing", "to": "completed"}),
        "any_change": rule("order_status_changed"),
        "first": rule("first_purchase"),
        "repeat": rule("repeat_purchase"),
        "big": rule("high_value_order", options={"threshold": "500"}),
        "third": rule("order_count_milestone", options={"counts": [3]}),
        "silver": rule("tier_upgrade", options={"to": "silver"}),
        "close": rule("close_to_upgrade"),
        "risk": rule("tier_downgrade_risk"),
        "pl_only": rule("new_order", conditions={"match": "all", "conditions": [
            {"field": "geo_scope", "operator": "equals", "value": "pl"},
            {"field": "order_count", "operator": "gt", "value": "0"}]}),
    }.items()}
    prod = EventProducer(settings)
    c = 7
    events = [
        order_event(s, 1, customer_id=c, status="pending", total="50", modified=later(0)),          # new, no purchase
        order_event(s, 1, customer_id=c, status="processing", total="50", modified=later(1), action="updated"),
        order_event(s, 1, customer_id=c, status="processing", total="50", modified=later(1), action="updated"),
        order_event(s, 2, customer_id=c, status="processing", total="600", modified=later(5), country="DE"),
        # order 3 is first seen through an update: still new_order
        order_event(s, 3, customer_id=c, status="completed", total="20", modified=later(9), action="updated"),
        order_event(s, 1, customer_id=c, status="completed", total="50", modified=later(10), action="updated"),
        # stale: older than what was applied to order 1 → nothing
        order_event(s, 1, customer_id=c, status="on-hold", total="50", modified=later(2), action="updated"),
        # refund of the big order: 670 → 70 spent, below silver (300)
        order_event(s, 2, customer_id=c, status="refunded", total="600", modified=later(20), action="updated",
                    country="DE"),
    ]
    for ev in events:
        prod.send("OrderEvent", ev)
    prod.flush()
    cmds = rules_over_orders(settings)
    assert fired(cmds, ids["new"]) == ["1", "2", "3"]
    assert fired(cmds, ids["pl_only"]) == ["3"]  # order 1 was new with no paid order yet; 2 ships to DE
    assert fired(cmds, ids["to_completed"]) == ["1"]
    assert fired(cmds, ids["any_change"]) == ["1", "1", "2"]  # pending→processing, processing→completed, →refunded
    assert fired(cmds, ids["first"]) == ["1"]
    assert fired(cmds, ids["repeat"]) == ["2", "3"]
    assert fired(cmds, ids["big"]) == ["2"]
    assert fired(cmds, ids["third"]) == ["3"]
    assert fired(cmds, ids["silver"]) == ["2"]
    assert fired(cmds, ids["close"]) == []  # 50 → 650 jumped past the band below silver (200..300)
    assert fired(cmds, ids["risk"]) == ["2"]
    with engine.connect() as conn:
        st = conn.execute(text("SELECT * FROM customer_state WHERE store_id=:s AND customer_key='c7'"), {"s": s}).one()
        orders = dict(conn.execute(text("SELECT order_id, status FROM order_state WHERE store_id=:s"), {"s": s}).all())
    assert st.order_count == 2 and Decimal(st.totals["PLN"]) == Decimal(70)
    assert st.tier == "silver"  # tiers only go up on their own; risk is a trigger, not a downgrade
    assert st.points == 70
    assert orders == {1: "completed", 2: "refunded", 3: "completed"}


def with_loyalty(engine, store, loyalty: dict[str, Any]):  # type: ignore[no-untyped-def]
    store = type(store)(**{**store.__dict__, "settings": {"loyalty": loyalty}})
    upsert_store(engine, store)
    return store


@pytest.mark.integration
def test_close_to_upgrade_fires_once_when_a_purchase_enters_the_band_below_the_next_tier(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = with_loyalty(engine, make_store(engine), {"tiers": {
        "metric": "total_spent", "levels": [{"name": "silver", "min": 300}, {"name": "gold", "min": 1000}],
        "close_within": "100"}})
    s = store.id
    close = add_rule(engine, s, rule("close_to_upgrade"))                                  # the store's band: 100
    near = add_rule(engine, s, rule("close_to_upgrade", "near", options={"within": "10%"}))  # 10% of 300: 30
    prod = EventProducer(settings)
    # spent: 50 (250 short of silver) → 220 (80 short) → 250 (50) → 275 (25) → 375 (silver; 625 short of gold)
    for n, total in enumerate(("50", "170", "30", "25", "100"), 1):
        prod.send("OrderEvent", order_event(s, n, customer_id=8, total=total, modified=later(n)))
    prod.send("OrderEvent", order_event(s, 9, customer_id=8, status="pending", total="900", modified=later(9)))
    prod.flush()
    cmds = rules_over_orders(settings)
    assert fired(cmds, close) == ["2"]  # within 100 of silver for the first time; orders 3 and 4 stay inside
    assert fired(cmds, near) == ["4"]   # within 30 of silver; the unpaid order 9 counts for nothing
    with engine.connect() as conn:
        tier = conn.execute(text("SELECT tier FROM customer_state WHERE store_id=:s AND customer_key='c8'"),
                            {"s": s}).scalar_one()
    assert tier == "silver"


@pytest.mark.integration
def test_commands_of_one_event_come_out_in_priority_order(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    s = store.id
    # created in an order unlike their priorities: the ids alone would sort them differently
    ids = {name: add_rule(engine, s, rule(trigger, name, options=options, priority=priority))
           for name, trigger, options, priority in [
               ("late", "new_order", None, 50), ("first", "new_order", None, 5), ("middle", "new_order", None, 20),
               ("welcome", "first_purchase", None, 1), ("big", "high_value_order", {"threshold": "100"}, 30),
               ("tie", "new_order", None, 20)]}
    prod = EventProducer(settings)
    prod.send("OrderEvent", order_event(s, 1, customer_id=3, total="150"))  # new_order + first_purchase + big
    prod.send("OrderEvent", order_event(s, 2, customer_id=3, status="pending", modified=later(1)))  # new_order only
    prod.flush()
    cmds = rules_over_orders(settings)
    by_rule = {rid: name for name, rid in ids.items()}
    order_of = {oid: [by_rule[c["rule_id"]] for c in cmds if c["subject_id"] == oid] for oid in "12"}
    # lower priority number first, across triggers; equal priorities in rule id order
    assert order_of["1"] == ["welcome", "first", "middle", "tie", "big", "late"]
    assert order_of["2"] == ["first", "middle", "tie", "late"]


@pytest.mark.integration
def test_a_rule_disabled_through_the_api_stops_firing_in_a_running_consumer(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    client = api_client(settings)
    h = bearer(engine, store.id)
    body = rule("new_order", "to be disabled")
    rid = client.post("/v1/rules", json=body, headers=h).json()["id"]
    control = client.post("/v1/rules", json=rule("new_order", "control"), headers=h).json()["id"]
    prod = EventProducer(settings)
    with ConsumerThread(settings) as ct:
        prod.send("OrderEvent", order_event(store.id, 1, customer_id=4))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert fired(commands(settings), rid) == ["1"]  # live before

        r = client.put(f"/v1/rules/{rid}", json={**body, "enabled": False}, headers=h)
        assert r.status_code == 200 and r.json()["enabled"] is False, r.text
        wait_for(lambda: ct.consumer.rules.get(rid) is None and ct.consumer.rules.get(control), 30, 0.05,
                 "the consumer to reload the store's rules")
        prod.send("OrderEvent", order_event(store.id, 2, customer_id=4, modified=later(1)))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert ct.error is None
    cmds = commands(settings)
    assert fired(cmds, control) == ["1", "2"]  # order 2 went through the rules
    assert fired(cmds, rid) == ["1"]           # ... and the disabled one did not fire on it


def _state_snapshot(engine, store_id: str) -> tuple[list[Any], list[Any], list[Any]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        cs = conn.execute(text("SELECT customer_key, customer_id, email, order_count, totals, first_order_at, "
                               "last_order_at, tier, points, view_counts, engine FROM customer_state "
                               "WHERE store_id=:s ORDER BY customer_key"), {"s": store_id}).all()
        os_ = conn.execute(text("SELECT order_id, customer_key, status, modified_ms, first_event_id, transitions, "
                                "total, counted, count_event_id, before FROM order_state WHERE store_id=:s "
                                "ORDER BY order_id"), {"s": store_id}).all()
        fs = conn.execute(text("SELECT rule_id, customer_key, first_event_id, last_event_id, last_fired_at, fired "
                               "FROM rule_firings WHERE store_id=:s ORDER BY rule_id, customer_key"),
                          {"s": store_id}).all()
    return [tuple(r) for r in cs], [tuple(r) for r in os_], [tuple(r) for r in fs]


@pytest.mark.integration
def test_replaying_every_event_changes_no_state_and_emits_the_same_keys(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    s = store.id
    rid_first = add_rule(engine, s, rule("first_purchase"))
    rid_once = add_rule(engine, s, rule("order_status_changed", frequency={"once_per_customer": True}))
    rid_days = add_rule(engine, s, rule("repeat_purchase", frequency={"per_days": 7}))
    rid_new = add_rule(engine, s, rule("new_customer", options={"roles": ["customer"]}))
    prod = EventProducer(settings)
    for c in range(1, 6):
        prod.send("CustomerEvent", customer_event(s, c, email=f"c{c}@x.pl"))
        prod.send("CustomerEvent", customer_event(s, c, email=f"c{c}@x.pl", action="updated", at=later(1)))
        for k in range(4):  # orders on day 0, 3, 10, 11: repeat purchases on 3 (blocked? no: first), 10, 11
            oid = c * 100 + k
            day = [0, 3, 10, 11][k]
            prod.send("OrderEvent", order_event(s, oid, customer_id=c, status="pending", modified=later(day * 1440)))
            prod.send("OrderEvent", order_event(s, oid, customer_id=c, status="processing",
                                                modified=later(day * 1440 + 5), action="updated"))
    prod.send("CustomerEvent", customer_event(s, 99, email="admin@x.pl", role="administrator"))
    prod.send("StorefrontEvent", storefront_view(s, 1, 55, later(3)))
    prod.send("StorefrontEvent", storefront_view(s, 1, 55, later(4)))
    prod.flush()
    with ConsumerThread(settings) as ct:
        wait_for(lambda: ct.consumer.stats["events"] >= 48, 60, 0.1, "all events consumed")
        ct.wait_committed()
        skipped = ct.consumer.stats["skipped"]
    first = commands(settings)
    keys = {c["idempotency_key"] for c in first}
    snap = _state_snapshot(engine, s)
    assert fired(first, rid_first) == [str(c * 100) for c in range(1, 6)]
    assert len(fired(first, rid_once)) == 5  # one status change per customer, although each had four
    # per 7 days, on event time: the repeat purchases of day 3 and day 10 fire, day 11 is within 7 days of day 10
    assert fired(first, rid_days) == sorted(str(c * 100 + k) for c in range(1, 6) for k in (1, 2))
    assert sorted(c["subject_id"] for c in first if c["rule_id"] == rid_new) == [str(c) for c in range(1, 6)]
    # storefront views change no rule-engine state (no rule reads view counts): not even decoded
    assert snap[0][0][9] == {} and skipped == 2

    # The same events again, through a brand-new consumer group (a full replay).
    replay = settings.model_copy(update={"rules_group": settings.rules_group + "-replay"})
    with ConsumerThread(replay) as ct:
        wait_for(lambda: ct.consumer.stats["events"] >= 48, 60, 0.1, "all events consumed again")
        ct.wait_committed()
    again = commands(settings)
    assert {c["idempotency_key"] for c in again} == keys, "a replay emits exactly the keys of the first run"
    assert len(again) == 2 * len(first)
    assert _state_snapshot(engine, s) == snap, "applying the same events twice changed the state"


def storefront_view(store: str, customer_id: int, product_id: int, at: Any) -> dict[str, Any]:
    import hashlib
    from datetime import datetime, timezone

    eid = hashlib.sha256(f"{store}|view|{customer_id}|{product_id}|{at}".encode()).hexdigest()[:32]
    return {"event_id": eid, "store_id": store, "customer_key": f"c{customer_id}", "occurred_at": at,
            "received_at": datetime.now(timezone.utc), "source": "storefront", "schema_version": 1,
            "topic": "storefront.product_viewed", "store_timezone": "UTC", "event_type": "product_viewed",
            "session_id": "s1", "customer_id": customer_id, "email": None, "product_id": product_id,
            "category_id": None, "query": None, "cart": [], "cart_total": None, "currency": None, "url": None,
            "properties": {}}


@pytest.fixture
def trigger_registry() -> Iterator[None]:
    with isolated_triggers():
        yield


@pytest.mark.unit
def test_registrations_inside_isolated_triggers_are_undone() -> None:
    from wooflow.consumer import triggers

    orig = triggers.TRIGGERS["new_order"]
    with isolated_triggers():
        triggers.register(triggers.TriggerSpec("new_order", "OrderEvent", "poisoned", lambda ctx: False))
        triggers.register(triggers.TriggerSpec("test_only", "OrderEvent", "extra", lambda ctx: True))
        assert triggers.TRIGGERS["new_order"] is not orig
    assert triggers.TRIGGERS["new_order"] is orig and "test_only" not in triggers.TRIGGERS
    order_specs = triggers.for_schema("OrderEvent")
    assert orig in order_specs and [t.name for t in order_specs].count("new_order") == 1
    assert "test_only" not in [t.name for t in order_specs]


@pytest.mark.integration
def test_bad_events_go_to_the_dlq_with_their_reason_and_the_partition_keeps_moving(settings, engine,  # type: ignore[no-untyped-def]
                                                                                     trigger_registry) -> None:
    from wooflow.consumer import triggers

    store = make_store(engine)
    rid = add_rule(engine, store.id, rule("new_order"))
    # an evaluation that blows up for one particular order (a poison event)
    orig = triggers.TRIGGERS["new_order"]

    def fires(ctx: Any) -> bool:
        if ctx.event["order_id"] == 666:
            raise ValueError("boom on 666")
        return orig.fires(ctx)

    triggers.register(triggers.TriggerSpec("new_order", "OrderEvent", orig.description, fires))
    prod = EventProducer(settings)
    key = f"{store.id}:c1"
    topic = settings.topic(topics.ORDERS)
    prod.send("OrderEvent", order_event(store.id, 1, customer_id=1))
    prod.raw(topic, b"\x00garbage that is not avro", key)
    prod.raw(topic, b"\xc3\x01" + b"\x01" * 8 + b"unknown fingerprint", key)
    prod.send("OrderEvent", order_event(store.id, 666, customer_id=1))
    prod.send("OrderEvent", order_event(store.id, 2, customer_id=1))  # after the poison, same partition
    prod.flush()
    cmds = fired(rules_over_orders(settings), rid)
    dead = [r for sch, r in read_topic(settings, topics.DLQ) if sch == "DeadLetter"]
    assert cmds == ["1", "2"]
    reasons = sorted((d["reason"], d["stage"]) for d in dead)
    assert reasons == [("evaluation_error", "rules"), ("undecodable", "rules"), ("undecodable", "rules")]
    assert any("boom on 666" in d["error"] for d in dead)
    assert any("fingerprint" in d["error"] for d in dead)
    assert all(d["source_topic"] == topic for d in dead)


@pytest.mark.integration
def test_delayed_steps_are_held_for_the_scheduler(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    rid = add_rule(engine, store.id, {"name": "welcome", "trigger": "first_purchase", "actions": [
        {"type": "add_order_note", "params": {"note": "now"}},
        {"type": "add_order_note", "params": {"note": "day 3"}, "delay": "day 3"}]})
    prod = EventProducer(settings)
    prod.send("OrderEvent", order_event(store.id, 5, customer_id=9))
    prod.flush()
    with ConsumerThread(settings) as ct:
        wait_for(lambda: fired(commands(settings), rid), 60, 0.2, "the immediate step")
        ct.wait_committed()
    cmds = [c for c in commands(settings) if c["rule_id"] == rid]
    assert [c["step"] for c in cmds] == [0] and cmds[0]["not_before"] is None
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT step, due_at, created_at FROM scheduled_steps WHERE rule_id=:r"),
                            {"r": rid}).all()
    assert [r.step for r in rows] == [1]
    assert 3 * 86400 - 120 < (rows[0].due_at - rows[0].created_at).total_seconds() < 3 * 86400 + 120
