"""A store pays only for the state its rules read (consumer/needs.py), on the real broker
and database: what each level writes, events skipped undecoded, and a rule added later
that needs more state — kept from then on, recorded in `state_levels`, shown in its dry
run, replay-safe."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import text

from tests.pipeline import add_rule
from tests.rules_kit import (
    ConsumerThread,
    EventProducer,
    commands,
    customer_event,
    isolated_triggers,
    later,
    order_event,
)
from tests.support import make_store, wait_for, wait_until_consumed
from wooflow.consumer.model import RuleSpec
from wooflow.consumer.needs import CONTEXT_FREE_ACTIONS, rule_keep, state_view
from wooflow.consumer.triggers import Keep, TriggerSpec, register
from wooflow.kafka import topics

NOTE = [{"type": "add_order_note", "params": {"note": "n"}}]


def spec(trigger: str, **extra: Any) -> RuleSpec:
    return RuleSpec.model_validate({"name": trigger, "trigger": trigger, "actions": NOTE, **extra})


def leaf(field: str, op: str = "equals", value: Any = "x") -> dict[str, Any]:
    return {"match": "all", "conditions": [{"field": field, "operator": op, "value": value}]}


@pytest.mark.unit
def test_each_rule_needs_what_its_trigger_conditions_limits_exits_and_actions_read() -> None:
    assert rule_keep(spec("product_saved")) == Keep.NOTHING
    assert rule_keep(spec("new_order")) == Keep.SEEN
    assert rule_keep(spec("new_order", conditions=leaf("billing_country", value="PL"))) == Keep.SEEN
    assert rule_keep(spec("new_order", conditions=leaf("previous_status"))) == Keep.ORDERS
    assert rule_keep(spec("order_status_changed")) == Keep.ORDERS
    for trigger in ("first_purchase", "repeat_purchase", "high_value_order", "tier_upgrade", "new_customer"):
        assert rule_keep(spec(trigger, trigger_options={"threshold": 1} if trigger == "high_value_order" else {})) \
            == Keep.CUSTOMERS, trigger
    # customer-state fields, frequency limits, condition exits, templates and actions reading the state
    assert rule_keep(spec("new_order", conditions=leaf("order_count", "gt", 1))) == Keep.CUSTOMERS
    assert rule_keep(spec("new_order", frequency={"once_per_customer": True})) == Keep.CUSTOMERS
    assert rule_keep(spec("new_order", exit_conditions=[leaf("tier", value="gold")])) == Keep.CUSTOMERS
    assert rule_keep(spec("new_order", exit_conditions=[{"type": "ordered"}])) == Keep.SEEN
    assert rule_keep(spec("new_order", actions=[{"type": "add_order_note", "params": {
        "note": "{{ customer_state.order_count }} orders"}}])) == Keep.CUSTOMERS
    assert rule_keep(spec("new_order", actions=[{"type": "webhook", "params": {"url": "https://x.example"}}])) \
        == Keep.CUSTOMERS
    assert rule_keep(spec("new_order", actions=[{"type": "some_plugin_action", "params": {}}])) == Keep.CUSTOMERS
    with isolated_triggers():  # a trigger that does not say what it reads (a plugin's) is given everything
        register(TriggerSpec("plugin_trigger", "OrderEvent", "a plugin's", lambda ctx: True))
        assert rule_keep(spec("plugin_trigger")) == Keep.CUSTOMERS


@pytest.mark.unit
def test_the_order_subscription_and_history_triggers_and_fields_need_what_they_read() -> None:
    # the order's status and marks (paid, refunds); a first sight only for new_order's variant
    for trigger in ("order_paid", "order_pending", "order_on_hold", "order_cancelled", "order_refunded",
                    "order_partially_refunded", "order_paid_each_line_item", "order_status_changed_each_line_item",
                    "subscription_renewal_payment_failed"):
        assert rule_keep(spec(trigger)) == Keep.ORDERS, trigger
    assert rule_keep(spec("new_order_each_line_item", conditions=leaf("item.quantity", "gt", 1))) == Keep.SEEN
    # the event alone: notes, and subscriptions (kept for every store whatever its rules)
    for trigger in ("order_note_added", "subscription_created", "subscription_status_changed"):
        assert rule_keep(spec(trigger)) == Keep.NOTHING, trigger
    assert rule_keep(spec("subscription_status_changed", conditions=leaf("subscription_status"))) == Keep.NOTHING
    assert rule_keep(spec("new_order", conditions=leaf("has_active_subscription", value="yes"))) == Keep.SEEN
    assert rule_keep(spec("new_order", conditions=leaf("order_created_via", value="checkout"))) == Keep.SEEN
    # the customer's state, and their counted orders (purchase history)
    for name, value in (("customer_role", "customer"), ("order_is_customers_first", "yes")):
        assert rule_keep(spec("new_order", conditions=leaf(name, value=value))) == Keep.CUSTOMERS, name
    for name, op, value in (("purchased_products_all_time", "in", "5"), ("purchased_categories_all_time", "in", "7"),
                            ("last_paid_order_date", "within_last_days", 30), ("order_count_last_365_days", "gt", 2),
                            ("total_spent_last_365_days", "gt", 100), ("first_paid_order_date", "before",
                                                                       "2025-01-01")):
        assert rule_keep(spec("order_paid", conditions=leaf(name, op, value))) == Keep.HISTORY, name
        assert rule_keep(spec("first_purchase", conditions=leaf(name, op, value))) == Keep.HISTORY, name


@pytest.mark.unit
def test_the_context_free_actions_are_the_built_in_ones_but_the_webhook() -> None:
    """A new built-in action must be classified: does it read the command context's
    customer state other than through a template?"""
    from wooflow.workers.registry import all_actions

    builtin = {name for name, h in all_actions().items() if type(h).__module__.startswith("wooflow.workers.actions")}
    assert builtin - {"webhook"} == CONTEXT_FREE_ACTIONS


def _rows(engine, store: str) -> tuple[list[Any], int, Any]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        orders = conn.execute(text("SELECT order_id, first_event_id, status, counted FROM order_state "
                                   "WHERE store_id = :s ORDER BY order_id"), {"s": store}).all()
        customers = conn.execute(text("SELECT count(*) FROM customer_state WHERE store_id = :s"),
                                 {"s": store}).scalar_one()
        level = conn.execute(text("SELECT keeps, since FROM state_levels WHERE store_id = :s"), {"s": store}).first()
    return [tuple(r) for r in orders], int(customers), level


def _fired(settings, rule_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted({c["idempotency_key"]: c["subject_id"] for c in commands(settings)
                   if c["rule_id"] == rule_id}.values())


@pytest.mark.integration
def test_a_new_order_store_keeps_first_sights_only_and_skips_later_events_undecoded(settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = make_store(engine).id
    rid = add_rule(engine, s, {"name": "big", "trigger": "new_order", "actions": NOTE,
                               "conditions": leaf("order_total", "gt", 100)})
    prod = EventProducer(settings)
    first = order_event(s, 1, customer_id=5, status="pending", total="150")
    prod.send("OrderEvent", first)
    prod.send("CustomerEvent", customer_event(s, 5, email="c5@x.pl"))
    with ConsumerThread(settings) as ct:
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS, topics.CUSTOMERS])
        # a later batch: the same order moves on (seen: skipped undecoded), a new order, and the
        # first event of order 1 again (a redelivery: decoded, the same first sight, the same key)
        prod.send("OrderEvent", order_event(s, 1, customer_id=5, status="processing", total="150",
                                            modified=later(5), action="updated"))
        prod.send("OrderEvent", order_event(s, 2, customer_id=5, status="processing", total="50", modified=later(6)))
        prod.send("OrderEvent", first)
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert ct.error is None
        skipped = ct.consumer.stats["skipped"]
    orders, customers, level = _rows(engine, s)
    # first sights only: no status kept (""), nothing counted, no customer row at all
    assert [(o[0], o[1], o[2], o[3]) for o in orders] == [(1, first["event_id"], "", False),
                                                          (2, orders[1][1], "", False)]
    assert customers == 0 and level is not None and level[0] == Keep.SEEN
    assert skipped >= 2  # the customer event (no state kept, nothing listens) and order 1's update
    assert _fired(settings, rid) == ["1"]  # the redelivered first event re-emitted the same key


@pytest.mark.integration
def test_a_store_with_loyalty_settings_keeps_customer_aggregates_whatever_its_rules(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from wooflow.stores import upsert_store

    store = dataclasses.replace(make_store(engine), settings={"loyalty": {"points_per_unit": 2}})
    upsert_store(engine, store)
    add_rule(engine, store.id, {"name": "new", "trigger": "new_order", "actions": NOTE})
    prod = EventProducer(settings)
    prod.send("OrderEvent", order_event(store.id, 1, customer_id=4, status="processing", total="30"))
    prod.flush()
    with ConsumerThread(settings) as ct:
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert ct.error is None
    with engine.connect() as conn:
        row = conn.execute(text("SELECT order_count, points FROM customer_state WHERE store_id = :s "
                                "AND customer_key = 'c4'"), {"s": store.id}).one()
    assert tuple(row) == (1, 60)


@pytest.mark.integration
def test_a_store_without_order_rules_keeps_no_order_state(settings, engine) -> None:  # type: ignore[no-untyped-def]
    s = make_store(engine).id
    add_rule(engine, s, {"name": "p", "trigger": "product_saved", "actions": NOTE})
    prod = EventProducer(settings)
    for oid in (1, 2):
        prod.send("OrderEvent", order_event(s, oid, customer_id=3))
    prod.flush()
    with ConsumerThread(settings) as ct:
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert ct.error is None and ct.consumer.stats["skipped"] == 2
    orders, customers, _ = _rows(engine, s)
    assert orders == [] and customers == 0


@pytest.mark.integration
def test_a_rule_added_later_reads_the_state_kept_from_then_on(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """`first_purchase` added to a store that kept order first sights only: the level is
    raised and recorded with its moment, the dry-run view says since when; purchases the
    consumer saw before are not counted, the first one after is the customer's first —
    once, even when its batch is consumed again."""
    s = make_store(engine).id
    add_rule(engine, s, {"name": "new", "trigger": "new_order", "actions": NOTE})
    prod = EventProducer(settings)
    prod.send("OrderEvent", order_event(s, 1, customer_id=9, status="processing", total="40"))  # paid, not counted
    prod.flush()
    with ConsumerThread(settings) as ct:
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        _, customers, level = _rows(engine, s)
        assert customers == 0 and level is not None and level[0] == Keep.SEEN
        with engine.connect() as conn:
            assert state_view(conn, s, Keep.CUSTOMERS)["kept_since"] is None  # not kept yet
        first = add_rule(engine, s, {"name": "first", "trigger": "first_purchase", "actions": NOTE})
        wait_for(lambda: ct.consumer.rules.get(first) is not None, 30, 0.05, "the consumer to load the rule")
        # order 1 moves on: its status was not kept (""), so no transition; it counts from now
        prod.send("OrderEvent", order_event(s, 1, customer_id=9, status="completed", total="40",
                                            modified=later(3), action="updated"))
        prod.send("OrderEvent", order_event(s, 2, customer_id=9, status="processing", total="70", modified=later(4)))
        prod.flush()
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert ct.error is None
    orders, customers, raised = _rows(engine, s)
    assert raised is not None and raised[0] == Keep.CUSTOMERS and raised[1] > level[1]
    assert customers >= 1 and [(o[0], o[2], o[3]) for o in orders] == [(1, "completed", True), (2, "processing", True)]
    # order 1 was paid before the rule existed: counted on its first event after, so it is the first purchase
    assert _fired(settings, first) == ["1"]
    with engine.connect() as conn:
        view = state_view(conn, s, Keep.CUSTOMERS)
        count = conn.execute(text("SELECT order_count FROM customer_state WHERE store_id = :s AND customer_key = 'c9'"),
                             {"s": s}).scalar_one()
    assert view["kept_since"] == raised[1].isoformat() and "since" in view["note"] and count == 2

    # the whole topic again from the start (a new group): the same state, the same keys
    settings2 = settings.model_copy(update={"rules_group": settings.rules_group + "-again"})
    before = _rows(engine, s)
    with ConsumerThread(settings2) as ct2:
        wait_until_consumed(settings2, settings2.rules_group, [topics.ORDERS])
        assert ct2.error is None
    assert _rows(engine, s)[:2] == before[:2]
    assert _fired(settings, first) == ["1"]


@pytest.mark.integration
def test_purchase_history_is_kept_for_a_store_whose_rules_read_it_and_only_then(settings, engine) -> None:  # type: ignore[no-untyped-def]
    """A repeat purchase of a customer who bought product 11 before: the history (kept from
    the rule's first batch on) says so, in the consumer and again after a restart (saved)."""
    reads, plain = make_store(engine).id, make_store(engine).id
    rid = add_rule(engine, reads, {"name": "again", "trigger": "repeat_purchase", "actions": NOTE,
                                   "conditions": leaf("purchased_products_all_time", "in", "11")})
    add_rule(engine, plain, {"name": "again", "trigger": "repeat_purchase", "actions": NOTE})
    prod = EventProducer(settings)
    for store in (reads, plain):
        prod.send("OrderEvent", order_event(store, 1, customer_id=8, items=[(11, 1)], paid=later(0)))
    prod.flush()
    with ConsumerThread(settings):
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
    for store in (reads, plain):  # the second order comes to a consumer that read the first from the database
        prod.send("OrderEvent", order_event(store, 2, customer_id=8, items=[(12, 1)], paid=later(9),
                                            modified=later(9)))
    prod.flush()
    with ConsumerThread(settings) as ct:
        wait_until_consumed(settings, settings.rules_group, [topics.ORDERS])
        assert ct.error is None
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT store_id, history FROM customer_state WHERE customer_key = 'c8' "
                                      "AND store_id IN (:a, :b)"), {"a": reads, "b": plain}).all())
        level = conn.execute(text("SELECT keeps FROM state_levels WHERE store_id = :s"), {"s": reads}).scalar_one()
    assert level == Keep.HISTORY and rows[plain] is None
    assert [(o[0], o[4]) for o in rows[reads]["o"]] == [(1, [11]), (2, [12])]
    assert _fired(settings, rid) == ["2"]
