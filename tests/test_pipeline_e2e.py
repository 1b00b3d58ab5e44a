"""The walking skeleton end to end: a simulated store's order reaches an executed action
through the real broker and the real database — and survives SIGKILLs on the way."""

from __future__ import annotations

import random
import threading
import time
from contextlib import ExitStack

import pytest
from sqlalchemy import text

from tests.pipeline import BIG_ORDER_RULE, Pipeline, add_rule
from tests.rules_kit import commands
from tests.support import read_topic, wait_for, wait_until_pipeline_idle
from wooflow.kafka import topics

pytestmark = pytest.mark.e2e


def place(sim_store, total: str, email: str) -> int:  # type: ignore[no-untyped-def]
    product = sim_store.create_product(f"Product {total} {random.random()}", total)
    order = sim_store.create_order(line_items=[{"product_id": product.id, "quantity": 1}],
                                   billing={"email": email, "first_name": "Ala", "country": "PL"},
                                   status="processing")
    return order.id


def test_order_webhook_becomes_an_order_note_and_an_execution_log(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=(BIG_ORDER_RULE,))
        rule_id = p.rule_ids[0]
        big = place(p.sim.store, "149.00", "big@example.com")
        small = place(p.sim.store, "20.00", "small@example.com")
        try:
            wait_for(lambda: p.wooflow_notes(big), 60, 0.2, "the note on the big order")
            rows = wait_for(lambda: [r for r in p.log_rows() if r["status"] == "succeeded"], 30, 0.2, "execution log")
        except AssertionError:
            print(p.role_logs())
            raise
        assert p.wooflow_notes(big) == [f"wooflow: big order {big}"]
        assert len(rows) == 1
        row = rows[0]
        assert row["rule_id"] == rule_id and row["action_type"] == "add_order_note"
        assert row["details"]["order_id"] == str(big)
        # the small order was delivered too, yet matched nothing: once its webhook was
        # acknowledged (the event is in Kafka) and the rules, then the workers, have processed
        # everything, no command names it and no note is on it
        wait_for(lambda: p.sim.store.deliveries() and all(d.success for d in p.sim.store.deliveries()), 10, 0.1,
                 "all deliveries acknowledged")
        assert small in {ev["order_id"] for _, ev in read_topic(settings, topics.ORDERS)}
        wait_until_pipeline_idle(settings)
        assert [c for c in commands(settings) if c["subject_id"] == str(small)] == []
        assert p.wooflow_notes(small) == []


def test_sigkill_of_rules_and_workers_mid_stream_loses_and_duplicates_nothing(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    n_orders = 60
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=(BIG_ORDER_RULE,))
        placed: list[int] = []
        done = threading.Event()

        def shop() -> None:
            for i in range(n_orders):
                placed.append(place(p.sim.store, "150.00", f"c{i}@example.com"))
                time.sleep(0.05)  # pacing: a shop placing orders over a few seconds, not a wait
            done.set()

        threading.Thread(target=shop, daemon=True).start()
        rng = random.Random(3)
        kills = 0
        while not done.is_set() or kills < 4:
            time.sleep(rng.uniform(0.3, 1.2))  # a random moment of the flow (chaos, not a wait for anything)
            victim = p.roles["rules" if kills % 2 == 0 else "workers"]
            victim.kill()
            kills += 1
            victim.start()
        try:
            wait_for(lambda: all(p.wooflow_notes(o) for o in placed), 120, 0.5, "a note on every order")
            # give a duplicate every chance to appear: wait until every event and every
            # command (re-deliveries after the kills included) has been processed
            wait_until_pipeline_idle(settings, timeout=120)
            wait_for(lambda: len([r for r in p.log_rows() if r["status"] == "succeeded"]) >= n_orders, 60, 0.5,
                     "execution logs")
        except AssertionError:
            print(p.role_logs())
            raise
        counts = {o: len(p.wooflow_notes(o)) for o in placed}
        assert len(placed) == n_orders
        assert {o: c for o, c in counts.items() if c != 1} == {}, "every order has exactly one note"
        keys = [r["idempotency_key"] for r in p.log_rows() if r["status"] == "succeeded"]
        assert len(keys) == len(set(keys)) == n_orders


def test_a_saved_product_runs_a_product_saved_rule_end_to_end(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    review = {"name": "Review new products", "trigger": "product_saved", "trigger_options": {"actions": ["created"]},
              "actions": [{"type": "create_admin_task", "params": {"title": "Review {{ product.name }}"}}]}
    restored = {"name": "Restored products", "trigger": "product_saved", "trigger_options": {"actions": ["restored"]},
                "actions": [{"type": "create_admin_task", "params": {"title": "Restored {{ product.name }}"}}]}
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack, rules=(review, restored),
                     webhook_topics=("product.created", "product.updated"))
        review_id, restored_id = p.rule_ids

        def tasks() -> list[tuple[int, str, str]]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
                    "SELECT rule_id, subject_id, title FROM tasks WHERE store_id = :s ORDER BY id"), {"s": p.store.id})]

        try:
            lamp = p.sim.store.create_product("Desk lamp", "120.00")
            wait_for(tasks, 60, 0.2, "the review task")
            p.sim.store.update_product(lamp.id, name="Desk lamp XL")
            wait_for(lambda: [ev for _, ev in read_topic(settings, topics.PRODUCTS) if ev["action"] == "updated"], 30,
                     0.2, "the product update in Kafka")
            wait_until_pipeline_idle(settings)
        except AssertionError:
            print(p.role_logs())
            raise
        # webhook → bridge → woo.products → rules → automation.commands → workers → the task
        assert tasks() == [(review_id, str(lamp.id), "Review Desk lamp")]
        cmds = [c for c in commands(settings) if c["rule_id"] in (review_id, restored_id)]
        assert [(c["rule_id"], c["subject_type"], c["subject_id"]) for c in cmds] == [
            (review_id, "product", str(lamp.id))]  # the update matched neither rule's actions
        wait_for(lambda: [r for r in p.log_rows() if r["status"] == "succeeded"], 30, 0.2, "the execution log")



def test_a_category_rule_matches_a_variation_through_the_product_catalog(settings, engine, logs_dir) -> None:  # type: ignore[no-untyped-def]
    """WooCommerce's line items carry no categories: the rule consumer knows a variation's
    parent's category from the store's product webhooks (through the bridge and woo.products)."""
    with ExitStack() as stack:
        p = Pipeline(settings, engine, logs_dir, stack,
                     webhook_topics=("order.created", "order.updated", "product.created", "product.updated"))
        sim = p.sim.store
        outdoor = sim.create_category("Outdoor").id
        add_rule(engine, p.store.id, {
            "name": "Outdoor note", "trigger": "new_order",
            "conditions": {"match": "all", "conditions": [{"field": "category", "operator": "in",
                                                           "value": str(outdoor)}]},
            "actions": [{"type": "add_order_note", "params": {"note": "wooflow: outdoor {{ order.number }}"}}]})
        jacket = sim.create_product("Jacket", "0", type="variable", categories=[outdoor])
        medium = sim.create_variation(jacket.id, "120.00", attributes={"Size": "M"})
        mug = sim.create_product("Mug", "15.00", categories=["Kitchen"])
        with engine.connect() as conn:
            def rows() -> dict[int, tuple[str, int]]:
                found = conn.execute(text("SELECT product_id, source, parent_id FROM product_catalog "
                                          "WHERE store_id = :s"), {"s": p.store.id}).all()
                conn.rollback()
                return {r.product_id: (r.source, r.parent_id) for r in found}

            wait_for(lambda: len(rows()) == 3, 60, 0.2, "the catalog from the product webhooks")
            assert rows() == {jacket.id: ("event", 0), medium.id: ("event", jacket.id), mug.id: ("event", 0)}
        coat = sim.create_order(line_items=[{"variation_id": medium.id, "quantity": 1}],
                                billing={"email": "o@example.com", "country": "PL"}, status="processing")
        cup = sim.create_order(line_items=[{"product_id": mug.id, "quantity": 2}],
                               billing={"email": "k@example.com", "country": "PL"}, status="processing")
        try:
            wait_for(lambda: p.wooflow_notes(coat.id), 60, 0.2, "the note on the outdoor order")
        except AssertionError:
            print(p.role_logs())
            raise
        assert p.wooflow_notes(coat.id) == [f"wooflow: outdoor {coat.id}"]
        wait_for(lambda: all(d.success for d in sim.deliveries()), 10, 0.1, "all deliveries acknowledged")
        wait_until_pipeline_idle(settings)
        assert p.wooflow_notes(cup.id) == []
