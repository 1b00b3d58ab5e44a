"""The bridge's order notes and subscriptions: what each note webhook WooCommerce can send
becomes (a note named by its id alone, found among the recently modified orders; a payload
a store enriched with the order; a customer note named by its order and text), what one
that cannot be found is answered, and WooCommerce Subscriptions' webhooks on their topic."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from tests.support import make_sim_store, read_topic
from wooflow.kafka import topics
from wooflow.simulator.server import SimulatorServer

pytestmark = pytest.mark.integration


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=13) as server:
        yield server


def _notes(settings) -> list[dict]:  # type: ignore[no-untyped-def]
    return [ev for _, ev in read_topic(settings, topics.ORDERS) if ev["action"] == "note_added"]


def test_each_note_webhook_becomes_the_notes_event_once(settings, engine, bridge, sim) -> None:  # type: ignore[no-untyped-def]
    store = make_sim_store(engine, sim)
    st = sim.store
    pen = st.create_product("Pen", "3.00")
    orders = [st.create_order(line_items=[{"product_id": pen.id, "quantity": 1}],
                              billing={"email": f"b{i}@example.com", "country": "PL"}, status="processing").id
              for i in range(3)]
    for topic in ("action.woocommerce_order_note_added", "action.woocommerce_new_customer_note"):
        st.create_webhook(topic, bridge.hook_url(store.id), secret=store.webhook_secret)
    # a customer note on the oldest order: both hooks deliver it, as the same event (in Kafka once)
    note = st.add_order_note(orders[0], "Shipped: tracking number PL1", customer_note=True)
    assert st.wait_idle(30)
    answers = [json.loads(a.response_body) for a in st.deliveries()]
    assert all(a.success for a in st.deliveries()) and len(answers) == 2
    assert answers[0]["event_ids"] == answers[1]["event_ids"] and sorted(a["accepted"] for a in answers) == [0, 1]
    [ev] = _notes(settings)
    assert (ev["order_id"], ev["note"]["id"], ev["note"]["note"], ev["note"]["customer_note"]) == \
        (orders[0], note.id, "Shipped: tracking number PL1", True)
    assert ev["order"]["id"] == orders[0] and ev["topic"].startswith("action.")
    assert ev["occurred_at"].timestamp() == note.created_at
    # a payload a store enriched with the order (the documented woocommerce_webhook_payload filter)
    private = st.add_order_note(orders[1], "Packed", customer_note=False)
    assert st.wait_idle(30)
    r = bridge.webhook(store, "action.woocommerce_order_note_added",
                       {"action": "woocommerce_order_note_added", "arg": {"id": private.id, "order_id": orders[1]}})
    assert r.status_code == 200 and r.json()["duplicate"] is True  # the same note as the plain delivery's
    assert {e["note"]["id"]: (e["order_id"], e["note"]["customer_note"]) for e in _notes(settings)} == \
        {note.id: (orders[0], True), private.id: (orders[1], False)}
    # a note that cannot be found: answered 200 (WooCommerce must not count a failure), counted
    before = REGISTRY.get_sample_value("wooflow_webhooks_accepted_total", {"outcome": "note_not_found"}) or 0.0
    r = bridge.webhook(store, "action.woocommerce_order_note_added",
                       {"action": "woocommerce_order_note_added", "arg": 987654})
    assert r.status_code == 200 and r.json()["accepted"] == 0
    assert REGISTRY.get_sample_value("wooflow_webhooks_accepted_total", {"outcome": "note_not_found"}) == before + 1


def test_subscription_webhooks_reach_their_topic_keyed_by_the_subscriber(settings, engine, bridge, sim) -> None:  # type: ignore[no-untyped-def]
    store = make_sim_store(engine, sim)
    st = sim.store
    for topic in ("subscription.created", "subscription.updated", "subscription.deleted"):
        st.create_webhook(topic, bridge.hook_url(store.id), secret=store.webhook_secret)
    box = st.create_product("Box", "20.00")
    ala = st.create_customer("ala@example.com")
    sub = st.create_subscription(customer_id=ala.id, line_items=[{"product_id": box.id, "quantity": 2}],
                                 status="active", billing_period="week", billing_interval=2)
    assert st.wait_idle(30)
    st.update_subscription(sub.id, status="on-hold")
    assert st.wait_idle(30)
    st.delete_subscription(sub.id)
    assert st.wait_idle(30)
    assert all(a.success for a in st.deliveries())
    events = read_topic(settings, topics.SUBSCRIPTIONS)
    assert {name for name, _ in events} == {"SubscriptionEvent"}
    # one key, one partition: in order (a REST creation in an active status saves twice, as WooCommerce does)
    assert [(ev["action"], (ev["subscription"] or {}).get("status")) for _, ev in events] == \
        [("created", "active"), ("updated", "active"), ("updated", "on-hold"), ("deleted", None)]
    first = events[0][1]
    assert first["customer_key"] == f"c{ala.id}" and all(ev["customer_key"] == f"c{ala.id}" for _, ev in events)
    s = first["subscription"]
    assert (s["billing_period"], s["billing_interval"], str(s["total"])) == ("week", 2, "40.0000")
    assert s["next_payment_date"] is not None and s["next_payment_date"].timestamp() == sub.start_at + 14 * 86400
    assert [li["product_id"] for li in s["line_items"]] == [box.id]
