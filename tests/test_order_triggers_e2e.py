"""AutomateWoo's order triggers end to end: a simulated WooCommerce store delivers its
webhooks (order.created, order.updated, action.woocommerce_order_note_added) exactly as
WooCommerce does to the bridge; the rule consumer and the workers run as processes on the
real broker and database; each trigger's command takes effect as an order note in the
store — once, whatever the status path, the re-sends and a live replay of the topic.

One pipeline serves the module: every test places its own orders in the one store, and
each rule's notes say which rule wrote them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.pipeline import Pipeline
from tests.rules_kit import commands
from tests.support import env_of, isolated_settings, unique, wait_for, wait_until_pipeline_idle, wooflow_cli
from wooflow.kafka import topics
from wooflow.settings import Settings

pytestmark = pytest.mark.e2e


def note_rule(trigger: str, text: str, **rule: Any) -> dict[str, Any]:
    return {"name": trigger, "trigger": trigger,
            "actions": [{"type": "add_order_note", "params": {"note": f"wooflow: {text}"}}], **rule}


GIFTS = 16  # the first category a fresh simulated store creates (WordPress' next term id)
RULES = (
    note_rule("order_paid", "paid {{ order.number }}"),
    note_rule("order_on_hold", "on hold"),
    note_rule("order_partially_refunded", "refund: {{ refund.amount }} of {{ refund.total_refunded }}"),
    note_rule("order_refunded", "refund: in full"),
    note_rule("order_note_added", "tracking note seen", trigger_options={"contains": "tracking number"}),
    note_rule("order_paid_each_line_item", "gift item {{ item.name }}",
              conditions={"match": "all", "conditions": [{"field": "item.category", "operator": "in",
                                                           "value": str(GIFTS)}]}),
)
TOPICS = ("order.created", "order.updated", "action.woocommerce_order_note_added")


class Shop:
    def __init__(self, p: Pipeline, settings: Settings) -> None:
        self.p, self.settings = p, settings
        self.store = p.sim.store
        self.gifts = self.store.create_category("Gifts")
        assert self.gifts.id == GIFTS
        self.products = {name: self.store.create_product(name, "10.00", categories=cats)
                         for name, cats in (("Mug", [self.gifts.id]), ("Card", [self.gifts.id]), ("Pen", []))}
        self.rule = {r["trigger"]: rid for r, rid in zip(RULES, p.rule_ids, strict=True)}

    def checkout(self, payment_method: str, *items: str) -> int:
        email = f"{unique('buyer')}@example.com"
        return self.store.checkout(line_items=[{"product_id": self.products[i].id, "quantity": 1} for i in items],
                                   billing={"email": email, "first_name": "Ala", "country": "PL"},
                                   payment_method=payment_method).id

    def notes(self, order_id: int, prefix: str) -> list[str]:
        """The notes wooflow's rules wrote on the order whose text starts with `prefix`."""
        return sorted(n for n in self.p.notes(order_id) if n.startswith(f"wooflow: {prefix}"))

    def wait_notes(self, order_id: int, n: int, what: str, prefix: str) -> list[str]:
        try:
            return wait_for(lambda: (ns if len(ns := self.notes(order_id, prefix)) >= n else None), 90, 0.2, what)
        except AssertionError:
            print(self.p.role_logs())
            raise

    def settled(self) -> None:
        """Every delivery answered, then everything produced processed by the rules and the
        workers: a note that is not there now will not come."""
        wait_for(lambda: self.store.wait_idle(0.5) and all(d.success for d in self.store.deliveries()), 60, 0.2,
                 "every webhook delivered and acknowledged")
        wait_until_pipeline_idle(self.settings, timeout=120)

    def commands_of(self, trigger: str) -> list[dict[str, Any]]:
        return [c for c in commands(self.settings) if c["rule_id"] == self.rule[trigger]]


@pytest.fixture(scope="module")
def shop(services: Any, migrated: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """Settings of this module's own (as the `settings` fixture makes them per test), one
    store, one pipeline."""
    from wooflow.db.engine import get_engine
    from wooflow.kafka.admin import create_topics, delete_topics_with_prefix

    settings = isolated_settings(services.kafka_bootstrap_servers, migrated)
    create_topics(settings)
    engine: Engine = get_engine(migrated)
    try:
        with ExitStack() as stack:
            p = Pipeline(settings, engine, tmp_path_factory.mktemp("logs"), stack, rules=RULES, webhook_topics=TOPICS)
            yield Shop(p, settings)
    finally:
        delete_topics_with_prefix(settings, settings.topic_prefix)


def test_order_paid_fires_once_whatever_the_status_path(shop: Shop) -> None:
    # pending → processing: PayPal leaves the order pending until the payment completes
    paypal = shop.checkout("paypal", "Pen")
    shop.store.payment_complete(paypal, "PAY-1")
    # on-hold → completed: a bank transfer waits on hold; the shop completes it when the money is in
    bacs = shop.checkout("bacs", "Pen")
    # (WooCommerce builds a delivery's payload when it runs: the on-hold state is seen only if it
    # is delivered before the order moves on, which the on-hold rule's note proves)
    shop.wait_notes(bacs, 1, "the on-hold note on the transfer", "on hold")
    shop.store.set_order_status(bacs, "completed")
    assert shop.wait_notes(paypal, 1, "the paid note on the PayPal order", "paid") == [f"wooflow: paid {paypal}"]
    assert shop.wait_notes(bacs, 1, "the paid note on the transfer", "paid") == [f"wooflow: paid {bacs}"]
    # later changes of paid orders, and a store owner re-saving one, pay nothing again
    shop.store.set_order_status(paypal, "completed")
    shop.store.update_order(bacs, customer_note="leave at the door")
    shop.settled()
    assert shop.notes(paypal, "paid") == [f"wooflow: paid {paypal}"]
    assert shop.notes(bacs, "paid") == [f"wooflow: paid {bacs}"]
    assert shop.notes(bacs, "on hold") == ["wooflow: on hold"] and shop.notes(paypal, "on hold") == []
    assert sorted(c["subject_id"] for c in shop.commands_of("order_paid")) == sorted([str(paypal), str(bacs)])


def test_a_partial_refund_fires_the_partial_trigger_and_a_full_one_the_refunded_trigger(shop: Shop) -> None:
    order = shop.checkout("cod", "Mug", "Pen")  # 20.00, processing
    shop.store.refund_order(order, "5.00", "scratched")
    shop.wait_notes(order, 1, "the partial refund note", "refund")
    shop.store.refund_order(order, "3.00")
    shop.wait_notes(order, 2, "the second partial refund note", "refund")
    shop.store.refund_order(order)  # the rest: the order becomes refunded
    shop.wait_notes(order, 3, "the full refund note", "refund")
    shop.settled()
    assert shop.notes(order, "refund") == ["wooflow: refund: 3 of 8", "wooflow: refund: 5 of 5",
                                           "wooflow: refund: in full"]


def test_an_order_note_added_in_the_store_fires_once(shop: Shop) -> None:
    order = shop.checkout("cod", "Pen")
    other = shop.checkout("cod", "Pen")  # a later order: the note's order is not the newest one
    shop.store.add_order_note(order, "Your tracking number is PL123", customer_note=True, added_by_user=True)
    shop.store.add_order_note(other, "Packed by Ola")  # a note the rule does not want
    assert shop.wait_notes(order, 1, "the note trigger's note", "tracking") == ["wooflow: tracking note seen"]
    shop.settled()
    assert shop.notes(order, "tracking") == ["wooflow: tracking note seen"] and shop.notes(other, "tracking") == []
    fired = shop.commands_of("order_note_added")
    assert [(c["subject_id"], c["trigger"]) for c in fired] == [(str(order), "order_note_added")]
    assert '"note":"Your tracking number is PL123"' in fired[0]["context_json"]


def test_each_line_item_fires_once_per_matching_item_across_a_replay(shop: Shop) -> None:
    started = datetime.now(timezone.utc)
    order = shop.checkout("cod", "Mug", "Pen", "Card")  # two of the three items are gifts
    notes = shop.wait_notes(order, 2, "one note per gift item", "gift")
    shop.settled()
    assert shop.notes(order, "gift") == notes == ["wooflow: gift item Card", "wooflow: gift item Mug"]
    keys = [c["idempotency_key"] for c in shop.commands_of("order_paid_each_line_item")
            if c["subject_id"] == str(order)]
    assert len(keys) == len(set(keys)) == 2
    # the whole topic again, live: every key has taken effect, nothing is emitted
    run = wooflow_cli("replay", "--topic", topics.ORDERS, "--from", started.isoformat(), "--store",
                      shop.p.store.id, "--live", env=env_of(shop.settings))
    assert run.returncode == 0, run.stdout + run.stderr
    shop.settled()
    assert shop.notes(order, "gift") == ["wooflow: gift item Card", "wooflow: gift item Mug"]
    assert sorted(c["idempotency_key"] for c in shop.commands_of("order_paid_each_line_item")
                  if c["subject_id"] == str(order)) == sorted(keys)
